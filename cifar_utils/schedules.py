"""Learning-rate schedules, in the form of Keras's own (`keras.optimizers.schedules`).

A schedule maps the optimiser's step number to a learning rate. `PiecewiseLinear` draws
straight lines between a few (step, rate) points: the one-cycle and triangular schedules
of fast CIFAR-10 training (airbench) are three points. `make_schedule` turns a recipe's
settings into a schedule over its steps; `train` and notebook 04 use it.

Models compiled with a `PiecewiseLinear` save it in their `.keras` file;
`cifar_utils.load_model` reads them back without any further import (the class lives
in `custom_objects`, with the package's other serializable objects).
"""

from __future__ import annotations

import keras

from cifar_utils.custom_objects import PiecewiseLinear

SCHEDULES = ("constant", "warmup_cosine", "one_cycle", "triangle")


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
            initial_learning_rate=0.0,
            decay_steps=max(total - warmup, 1),
            alpha=0.0,
            warmup_target=lr,
            warmup_steps=warmup,
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
