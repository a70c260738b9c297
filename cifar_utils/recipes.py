"""Training recipes: every hyperparameter of a run in one dictionary, with units and why.

`get_recipe(name, **overrides)` returns a checked `Recipe`; `training.train`
runs it. This module holds values only: `compiling` turns a recipe into a model.
Learning rates are per step for the batch size given; when you change
`batch_size`, scale `learning_rate` in proportion (the linear scaling rule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import partial

from cifar_utils import checks

RECIPES = {
    # The classic CNN of notebook 03: Adam needs little tuning, which suits a first model.
    "baseline_cnn": dict(
        arch="baseline_cnn",
        model_kwargs={},
        epochs=30,  # passes over the training split; accuracy levels off by about 25
        batch_size=128,  # images per step
        optimizer="adamw",  # Adam with decoupled weight decay
        learning_rate=2e-3,  # peak step size
        momentum=0.9,  # unused by Adam(W); kept for a switch to SGD
        nesterov=False,
        weight_decay=5e-4,  # decoupled, per step, times the learning rate
        schedule="warmup_cosine",  # linear warm-up, then cosine decay to 0
        warmup_fraction=0.05,  # share of the steps spent warming up (1.5 of 30 epochs)
        label_smoothing=0.1,  # target 0.91 for the true class, 0.01 for the others
        augmentation="standard",  # flip + pad-and-crop
        tta=False,  # average with the mirrored image at test time
    ),
    # VGG with batch norm and dropout: SGD with momentum, the classic recipe of the papers.
    "vgg": dict(
        arch="vgg",
        model_kwargs={},
        epochs=40,
        batch_size=128,
        optimizer="sgd",
        learning_rate=0.05,  # peak step size for batches of 128
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="one_cycle",  # linear up to the peak, then down to 0
        warmup_fraction=0.25,  # the peak comes after a quarter of the steps
        label_smoothing=0.1,
        augmentation="standard",
        tta=True,
    ),
    # ResNet-20 of He et al.: their recipe, shortened with a one-cycle schedule.
    "resnet": dict(
        arch="resnet",
        model_kwargs={"depth": 20},
        epochs=60,
        batch_size=128,
        optimizer="sgd",
        learning_rate=0.1,  # He et al. use 0.1 for batches of 128
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="one_cycle",
        warmup_fraction=0.25,
        label_smoothing=0.1,
        augmentation="standard",
        tta=True,
    ),
    # Built for time-to-accuracy, after airbench94 (Jordan, 2024) and "How to train your
    # ResNet" (Page, 2018): a frozen whitening layer, three wide conv groups, big batches,
    # Nesterov SGD with a short triangular schedule, heavy label smoothing, airbench's
    # augmentation and lookahead, flip test-time augmentation. What each airbench piece is
    # worth here: benchmarks/results/recipe_ablation.md and recipe_ablation_airbench94.md
    # (half width, 4 epochs, validation; one seed, so +-0.5 points is noise).
    "fast": dict(
        arch="fast_net",
        model_kwargs={
            # Batch-norm shifts learn 8**2 = 64 times faster than the weights under SGD
            # (airbench). With the decay below: +0.5 points (flip TTA +0.7) at half width
            # after 4 epochs.
            "bias_scale": 8,
            # airbench's start: PyTorch's smaller default kernels, and every 3x3 convolution's
            # first filters as identities. Measured: validation -0.04 points, +0.4 with flip TTA
            # (within noise); kept to match the anchor.
            "init": "pytorch",
            "dirac": True,
            # airbench's activation. Measured: +0.5 points (flip TTA +0.8) at equal epochs, but
            # each step takes 29% longer on this CPU (732 ms against 567 at full width): at
            # equal time in short runs ReLU's extra epochs are worth as much or more.
            "activation": "gelu",
        },
        # airbench94's 9.9 epochs. `cifar-train --budget-min N` and `train(budget_min=N)`
        # choose epochs (and widths) for a time budget instead.
        epochs=10,
        batch_size=256,  # a quarter of airbench's: four times its steps per epoch, better on a CPU
        optimizer="sgd",
        # airbench's 11.5 per 1,024 images on a summed loss, with momentum 0.85, is a step
        # of 1.5 on a mean loss for 1,024 images: 0.375 for 256 (linear scaling).
        learning_rate=0.375,
        momentum=0.85,  # short runs want short memory
        nesterov=True,
        # Keras's decay is decoupled: each step shrinks the weights by learning_rate x this.
        # airbench's (0.0153 per 1,024 images, coupled, scaled by 1,024 / 7,850 and amplified
        # 1 / (1 - 0.85) times by momentum) shrinks them by 1.3% per 1,024-image step at the
        # peak, 0.33% per 256 images: 0.375 x 0.0089.
        weight_decay=0.01,
        # ... and, as in airbench, the batch-norm shifts and the whitening bias by the same
        # share. Measured: +0.2 points (flip TTA +0.4).
        decay_biases=True,
        schedule="triangle",  # 0.2x -> 1x -> 0.07x at the end
        warmup_fraction=0.23,  # the peak comes after 23% of the steps (airbench)
        label_smoothing=0.2,  # heavy smoothing: short runs overfit the noisy labels fast
        # Shifts of up to 2 pixels and alternating flip (augment.alternating_dataset).
        # Measured: +0.7 points (flip TTA +0.4), and 15% faster than "standard".
        augmentation="airbench",
        # Every 5 steps the weights are pulled back to a slow average (callbacks.Lookahead).
        # Measured: +0.7 points (flip TTA +0.2).
        lookahead_steps=5,
        # Flip TTA: airbench's six-view "multicrop" measured no better (0.8400 both) at three
        # times the prediction time; evaluation.accuracy(..., tta="multicrop") has it.
        tta=True,
        # The frozen first layer's filters are computed from this many training images'
        # 2x2 patches (airbench: 5,000), by train() before the first step.
        whitening_images=5000,
        # Their bias learns for the first 3 epochs, then freezes (airbench). Measured
        # (for 1 of 4 epochs): +0.5 points (flip TTA +0.0).
        whitening_bias_epochs=3,
        # Not taken from airbench: batch norm's epsilon of 1e-12 (measured -0.5 points, flip
        # TTA -0.1: noise, so build_fast_net's 1e-5 stays) and its batches of 1,024
        # (-1.1 points after 4 epochs with the learning rate scaled: a quarter of the steps).
    ),
}

# airbench95 and airbench96 (Jordan, 2024): the fast recipe wider and longer, for bigger
# budgets (`cifar-train --recipe fast --budget-min N` picks among the three by measured step
# times: budget.FAST_FAMILY). What changes, from airbench's own hyperparameters:
RECIPES["fast95"] = {
    **RECIPES["fast"],
    "model_kwargs": {**RECIPES["fast"]["model_kwargs"], "widths": [128, 384, 384]},
    "epochs": 15,
    # airbench95 steps at 10 per 1,024 images where airbench94 steps at 11.5.
    "learning_rate": RECIPES["fast"]["learning_rate"] * 10 / 11.5,
}
RECIPES["fast96"] = {
    **RECIPES["fast"],
    # A third convolution in every group, with a residual connection around the last two.
    "model_kwargs": {**RECIPES["fast"]["model_kwargs"], "widths": [128, 512, 512], "convs": 3},
    "epochs": 40,
    "learning_rate": RECIPES["fast"]["learning_rate"] * 9 / 11.5,  # airbench96: 9 per 1,024
    # Shifts of up to 4 pixels and a 12 x 12 cut-out square: a longer run needs more variety.
    "augmentation": "airbench96",
}

OPTIMIZERS = ("sgd", "adam", "adamw")


# What each field may hold, checked when a `Recipe` is made. The fields that name code
# (arch, model_kwargs, schedule, augmentation, tta) are checked where that code is known:
# `compiling.check_recipe`. Each rule raises ValueError naming the field.
FIELD_RULES = {
    "arch": partial(checks.instance, kind=str, expected="a builder name (see models.BUILDERS)"),
    "model_kwargs": partial(checks.instance, kind=dict, expected="a dict of builder arguments"),
    "epochs": partial(checks.whole_number, minimum=1),
    "batch_size": partial(checks.whole_number, minimum=1),
    "optimizer": partial(checks.one_of, choices=OPTIMIZERS),
    "learning_rate": partial(checks.number, positive=True),
    "momentum": partial(checks.number, minimum=0, below=1),
    "nesterov": partial(checks.instance, kind=bool, expected="True or False"),
    "weight_decay": partial(checks.number, minimum=0),
    "schedule": partial(checks.instance, kind=str, expected="a schedule name (see schedules)"),
    "warmup_fraction": partial(checks.number, minimum=0, below=1),
    "label_smoothing": partial(checks.number, minimum=0, below=1),
    "augmentation": partial(checks.instance, kind=str, expected="a policy (see augment.POLICIES)"),
    "tta": partial(
        checks.instance, kind=(bool, str), expected="False, True (flip), 'flip' or 'multicrop'"
    ),
    "whitening_images": partial(checks.whole_number, minimum=0),
    "lookahead_steps": partial(checks.whole_number, minimum=0),  # 0: no lookahead
    "whitening_bias_epochs": partial(checks.whole_number, minimum=0),  # 0: no whitening bias
    "decay_biases": partial(checks.instance, kind=bool, expected="True or False"),
}


@dataclass(frozen=True)
class Recipe:
    """A training recipe whose values are checked (`FIELD_RULES`). See `RECIPES` for their
    meaning."""

    name: str
    arch: str
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "one_cycle"
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.0
    augmentation: str = "standard"
    tta: bool | str = False
    whitening_images: int = 0
    lookahead_steps: int = 0
    whitening_bias_epochs: int = 0
    decay_biases: bool = False

    def __post_init__(self):
        for name, rule in FIELD_RULES.items():
            try:
                rule(getattr(self, name), name)
            except ValueError as err:
                raise ValueError(f"recipe {self.name!r}: {err}") from None

    def to_dict(self) -> dict:
        """The recipe as a plain dict (for JSON and model cards)."""
        return asdict(self)


def get_recipe(name, **overrides) -> Recipe:
    """Returns a recipe by name, with fields overridden.

    Args:
        name: a key of `RECIPES`.
        **overrides: fields to change, e.g. `epochs=5`. A `model_kwargs` dict is
            merged into the recipe's: `model_kwargs={"widths": [32, 128, 128]}` keeps
            the recipe's other builder arguments (pass a key to change it).

    Returns:
        A validated `Recipe`.
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; known: {', '.join(RECIPES)}.")
    recipe = Recipe(name=name, **RECIPES[name])
    unknown = set(overrides) - set(recipe.to_dict())
    if unknown:
        raise ValueError(
            f"Unknown recipe field(s) {sorted(unknown)}; fields: {', '.join(recipe.to_dict())}."
        )
    if isinstance(overrides.get("model_kwargs"), dict):
        # Merge, so that changing the widths keeps the recipe's other architecture settings.
        overrides["model_kwargs"] = {**recipe.model_kwargs, **overrides["model_kwargs"]}
    return replace(recipe, **overrides)
