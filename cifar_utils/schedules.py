"""Learning-rate schedules, in the form of Keras's own (`keras.optimizers.schedules`).

A schedule maps the optimiser's step number to a learning rate. `PiecewiseLinear` draws
straight lines between a few (step, rate) points: the one-cycle and triangular schedules
of fast CIFAR-10 training (airbench) are three points. `make_schedule` turns a recipe's
settings into a schedule over its steps; `train` and notebook 04 use it.

Models compiled with a `PiecewiseLinear` save it in their `.keras` file;
`cifar_utils.load_model` reads them back without any further import.
"""

from __future__ import annotations

import keras
from keras import ops

SCHEDULES = ("constant", "warmup_cosine", "one_cycle", "triangle")


@keras.saving.register_keras_serializable(package="cifar_utils")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that moves in straight lines between (step, value) points.

    Before the first point it holds the first value, after the last the last.

    Example:

    >>> schedule = PiecewiseLinear([0, 100, 1000], [0.02, 0.2, 0.0])
    >>> [round(float(schedule(step)), 4) for step in (0, 50, 100, 550, 1000, 2000)]
    [0.02, 0.11, 0.2, 0.1, 0.0, 0.0]

    Pass it to an optimiser in place of a constant rate:
    `keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)`.

    Args:
        boundaries: increasing step numbers, at least two.
        values: the learning rate at each boundary, each >= 0.
        name: optional name. Defaults to None.

    Raises:
        ValueError: the lists differ in length or hold fewer than two points, the
            boundaries do not increase, or a value is negative.
    """

    def __init__(self, boundaries, values, name=None):
        boundaries = [float(b) for b in boundaries]
        values = [float(v) for v in values]
        if len(boundaries) < 2 or len(boundaries) != len(values):
            raise ValueError(
                f"boundaries and values need the same length, at least 2; received "
                f"{len(boundaries)} boundaries and {len(values)} values."
            )
        if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must increase; received {boundaries}.")
        if any(v < 0 for v in values):
            raise ValueError(f"values must be >= 0; received {values}.")
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        b = ops.convert_to_tensor(self.boundaries, dtype="float32")
        v = ops.convert_to_tensor(self.values, dtype="float32")
        step = ops.clip(ops.cast(step, "float32"), b[0], b[-1])
        # Segment i holds boundaries[i] <= step < boundaries[i + 1].
        i = ops.sum(ops.cast(step >= b[1:-1], "int32"))
        b0, b1 = ops.take(b, i), ops.take(b, i + 1)
        v0, v1 = ops.take(v, i), ops.take(v, i + 1)
        return v0 + (v1 - v0) * (step - b0) / (b1 - b0)

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def make_schedule(recipe, steps_per_epoch: int):
    """The recipe's learning-rate schedule over its steps.

    Args:
        recipe: a `recipes.Recipe` (its `schedule`, `learning_rate`, `epochs` and
            `warmup_fraction` are used).
        steps_per_epoch: optimiser steps per epoch, >= 1.

    Returns:
        A float (constant) or a `keras.optimizers.schedules.LearningRateSchedule`:
        "warmup_cosine": linear from 0 to `learning_rate` over the first
        `warmup_fraction` of the steps, then cosine to 0; "one_cycle": linear
        0.1x -> 1x, then linear to 0; "triangle": 0.2x -> 1x -> 0.07x (airbench).

    Raises:
        ValueError: `steps_per_epoch` < 1 or an unknown schedule name.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1; received {steps_per_epoch}.")
    if recipe.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; received {recipe.schedule!r}.")
    lr = recipe.learning_rate
    total = recipe.epochs * steps_per_epoch
    warmup = int(round(recipe.warmup_fraction * total))
    if recipe.schedule == "constant":
        return lr
    if recipe.schedule == "warmup_cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=max(total - warmup, 1), alpha=0.0,
            warmup_target=lr, warmup_steps=warmup,
        )
    warmup = min(max(warmup, 1), total - 1) if total > 1 else 1
    start, end = {"one_cycle": (0.1, 0.0), "triangle": (0.2, 0.07)}[recipe.schedule]
    return PiecewiseLinear([0, warmup, max(total, warmup + 1)], [start * lr, lr, end * lr])


def linear_decay(learning_rate: float, steps: int):
    """A rate that falls in a straight line from `learning_rate` to zero over `steps`.

    Args:
        learning_rate: the first step's rate, > 0.
        steps: the step at which the rate reaches zero, >= 1.

    Returns:
        A `PiecewiseLinear`.
    """
    return PiecewiseLinear([0, max(int(steps), 1)], [learning_rate, 0.0])
