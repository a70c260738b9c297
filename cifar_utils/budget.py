"""Fit a training run into a wall-time budget: measure this machine, then choose width and epochs.

    plan = budget.plan_budget("fast", x_train, y_train, budget_min=10)
    print(plan.describe())
    training.train(plan.recipe, ...)            # or training.train("fast", ..., budget_min=10)

`plan_budget` times a few real training steps of the recipe's model on this
machine (with the device setup that will train it), then picks the widest
network that still gets the epochs its airbench recipe trains (timing it too),
and as many epochs as fit. Setting `epochs` before the run fits the learning-rate schedule
to the steps that will really run: the schedule warms up, peaks and anneals
inside the budget instead of being cut off mid-way. The measuring counts
against the budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from cifar_utils import checks, device
from cifar_utils.augment import training_dataset
from cifar_utils.compiling import check_recipe, compile_recipe
from cifar_utils.models import BUILDERS, count_flops
from cifar_utils.recipes import Recipe, get_recipe

# What the planner may train for the "fast" recipe, biggest first: (recipe, widths, the fewest
# epochs it is worth training). airbench's own recipes come with their own epochs (airbench96:
# 40 at 128/512/512 with three convolutions a group; airbench95: 15 at 128/384/384;
# airbench94: 9.9 at 64/256/256, 8 taken here); narrower airbench94 networks level off
# sooner. The last is taken whatever the budget allows. A recipe's own changes to "fast"
# (say label_smoothing=0.1) are kept whichever is taken.
FAST_FAMILY = (
    ("fast96", (128, 512, 512), 40),
    ("fast95", (128, 384, 384), 15),
    ("fast", (64, 256, 256), 8),
    ("fast", (48, 192, 192), 6),
    ("fast", (32, 128, 128), 4),
    ("fast", (16, 64, 64), 1),
)
# The fast recipe's own network: build_fast_net's default widths (airbench94's).
REFERENCE_WIDTHS = (64, 256, 256)
MAX_EPOCHS = 100  # beyond this a longer run stops paying on CIFAR-10 at these widths
# Share of the time left after measuring that is planned for training steps. The rest covers
# what the estimate leaves out: building the model, the first step's tracing, the whitening
# filters, saving final.keras, and steps slower than the measured ones.
PLANNED_SHARE = 0.9
# An inference step (validation) costs about a third of a training step: no backward pass.
EVAL_COST = 1 / 3


@dataclass(frozen=True)
class BudgetPlan:
    """What `plan_budget` chose, and from what.

    Attributes:
        recipe: the recipe to run: epochs (and, for the fast recipe, widths) chosen.
        budget_seconds: the whole budget, measuring included.
        measured: seconds per training step, by the network measured ("64x256x256"
            for the fast recipe's widths, "fast96 128x512x512" for a member of its
            family with a recipe of its own, "model" for networks without widths).
        measure_seconds: the time the measuring took.
        planned_seconds: the estimated time of the chosen run's steps and validation.
    """

    recipe: Recipe
    budget_seconds: float
    measured: dict = field(default_factory=dict)
    measure_seconds: float = 0.0
    planned_seconds: float = 0.0

    def describe(self) -> str:
        """One line: the budget, the choice and the measured step times."""
        widths = self.recipe.model_kwargs.get("widths")
        rates = ", ".join(f"{key}: {s * 1000:.0f} ms" for key, s in self.measured.items())
        return (
            f"budget {self.budget_seconds / 60:.1f} min: {self.recipe.name}, "
            f"{self.recipe.epochs} epoch(s)"
            + (f" at widths {list(widths)}" if widths else "")
            + f", about {self.planned_seconds / 60:.1f} min of steps planned "
            f"(measured per step: {rates}; measuring took {self.measure_seconds:.0f} s)"
        )

    def record(self, call_seconds=None) -> dict:
        """The plan as JSON-ready facts, for a run's record (`train`'s `result.run["budget"]`)."""
        return {
            "minutes": self.budget_seconds / 60,
            "plan": self.describe(),
            "seconds_per_step": dict(self.measured),
            "call_seconds": call_seconds,
        }


def measure_step_seconds(recipe, x_train, y_train, setup=None, steps=4, warmup=2, seed=0) -> float:
    """Seconds one training step of a recipe takes here, after `warmup` untimed steps.

    Args:
        recipe: a `Recipe`; its model, batch size, optimiser and augmentation are used.
        x_train: uint8 training images (a few batches are enough).
        y_train: their labels.
        setup: the `device.DeviceSetup` that will train. Defaults to None: `setup_devices()`.
        steps: steps timed. Defaults to 4.
        warmup: steps run first and not timed (the first one traces the graph). Defaults to 2.
        seed: seed of the data order. Defaults to 0.

    Returns:
        The median seconds per step.
    """
    needed = recipe.batch_size * (steps + warmup)
    reps = math.ceil(needed / len(x_train))
    x = np.concatenate([x_train] * reps)[:needed]
    y = np.concatenate([np.ravel(y_train)] * reps)[:needed]
    with device.dtype_policy_scope(setup) as setup:  # the global policy is put back after
        with setup.strategy.scope():
            model = BUILDERS[recipe.arch](**recipe.model_kwargs)
            compile_recipe(
                model, recipe, steps_per_epoch=steps + warmup, jit_compile=setup.jit_compile
            )
        batches = iter(
            training_dataset(
                x,
                y,
                recipe.augmentation,
                batch_size=recipe.batch_size,
                seed=seed,
                drop_remainder=True,
            )
        )
        times = []
        for i in range(steps + warmup):
            images, labels = next(batches)
            start = time.perf_counter()
            model.train_on_batch(images, labels)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return float(np.median(times))


def check_budget_min(budget_min) -> float:
    """`budget_min` as a float, if it is a positive finite number of minutes (else ValueError)."""
    return checks.number(budget_min, "budget_min (minutes)", positive=True)


def plan_budget(
    recipe, x_train, y_train, budget_min, val_images=0, setup=None, seed=0, max_epochs=MAX_EPOCHS
) -> BudgetPlan:
    """Chooses epochs (and the fast network's widths) so that a run ends within `budget_min`.

    For the fast recipe without explicit `widths`, its own network is measured,
    the others of `FAST_FAMILY` (airbench96's and airbench95's recipes, narrower
    airbench94 networks) estimated from their FLOPs, and the biggest that gets
    its minimum epochs is measured and taken (or the next smaller, if it measured
    slower than estimated); other recipes keep their network and get epochs.

    Args:
        recipe: a recipe name or `Recipe`.
        x_train: uint8 training images (all of them: an epoch is `len(x_train)`
            images).
        y_train: their labels.
        budget_min: minutes of wall time for measuring and training, > 0.
        val_images: validation images evaluated after every epoch. Defaults to 0.
        setup: the `device.DeviceSetup` that will train. Defaults to None.
        seed: seed of the measuring steps. Defaults to 0.
        max_epochs: upper limit on the epochs. Defaults to 100.

    Returns:
        A `BudgetPlan`.
    """
    recipe = check_recipe(recipe)
    budget_seconds = 60 * check_budget_min(budget_min)
    planner = _Planner(recipe, x_train, y_train, budget_seconds, val_images, setup, seed)
    if recipe.name == "fast" and "widths" not in recipe.model_kwargs:
        chosen, epochs, epoch_seconds = planner.choose_member()
    else:
        chosen = recipe
        epochs, epoch_seconds = planner.epochs_for(planner.measure(recipe))
    epochs = min(max(epochs, 1), max_epochs)
    return BudgetPlan(
        recipe=replace(chosen, epochs=epochs),
        budget_seconds=float(budget_seconds),
        measured=planner.measured,
        measure_seconds=time.perf_counter() - planner.start,
        planned_seconds=epochs * epoch_seconds,
    )


class _Planner:
    """The measurements and arithmetic of one `plan_budget` call."""

    def __init__(self, recipe, x_train, y_train, budget_seconds, val_images, setup, seed):
        self.recipe, self.setup, self.seed = recipe, setup, seed
        self.x, self.y = x_train[:4096], y_train[:4096]  # enough batches to time a step
        self.budget_seconds = budget_seconds
        self.steps_per_epoch = max(1, len(x_train) // recipe.batch_size)
        self.eval_steps = EVAL_COST * math.ceil(val_images / recipe.batch_size)
        self.start = time.perf_counter()
        self.measured, self.flops = {}, {}

    def member(self, name, widths) -> Recipe:
        """The asked recipe as `FAST_FAMILY`'s member `name` at `widths`: that recipe, with the
        asked recipe's own changes to "fast" kept."""
        base, asked = get_recipe("fast").to_dict(), self.recipe.to_dict()
        changes = {k: v for k, v in asked.items() if k not in ("name", "epochs") and v != base[k]}
        member = get_recipe(name, **changes)
        return replace(member, model_kwargs={**member.model_kwargs, "widths": list(widths)})

    @staticmethod
    def key(recipe) -> str:
        widths = recipe.model_kwargs.get("widths")
        if widths is None:
            return "model"
        size = "x".join(map(str, widths))
        return size if recipe.name == "fast" else f"{recipe.name} {size}"

    def measure(self, recipe) -> float:
        key = self.key(recipe)
        if key not in self.measured:
            self.measured[key] = measure_step_seconds(
                recipe, self.x, self.y, setup=self.setup, seed=self.seed
            )
        return self.measured[key]

    def flops_of(self, recipe) -> int:  # counted when asked: building a network takes a while
        key = self.key(recipe)
        if key not in self.flops:
            self.flops[key] = count_flops(BUILDERS[recipe.arch](**recipe.model_kwargs))
        return self.flops[key]

    def epochs_for(self, step_seconds):
        """(whole epochs that fit in the time left, seconds per epoch) at this step time."""
        left = max(self.budget_seconds - (time.perf_counter() - self.start), 0.0)
        epoch_seconds = step_seconds * (self.steps_per_epoch + self.eval_steps)
        return int(left * PLANNED_SHARE // epoch_seconds), epoch_seconds

    def choose_member(self):
        """(recipe, epochs, seconds per epoch) of the biggest member of `FAST_FAMILY` that gets
        its minimum epochs.

        Measures the recipe's own network, estimates the others from their arithmetic (narrow
        nets use the CPU less well, so the estimate is optimistic), then measures the one
        chosen: two measurements, not six.
        """
        reference = self.member("fast", REFERENCE_WIDTHS)
        reference_step = self.measure(reference)
        candidates = [(self.member(name, widths), least) for name, widths, least in FAST_FAMILY]
        while True:
            recipe, min_epochs = candidates[0]
            estimate = reference_step * self.flops_of(recipe) / self.flops_of(reference)
            if len(candidates) > 1 and self.epochs_for(estimate)[0] < min_epochs:
                candidates.pop(0)
                continue
            epochs, epoch_seconds = self.epochs_for(self.measure(recipe))
            if epochs >= min_epochs or len(candidates) == 1:
                return recipe, epochs, epoch_seconds
            candidates.pop(0)  # slower than its arithmetic said: the next smaller one
