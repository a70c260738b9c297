"""Compile a model for training: the optimiser by name, the loss, the recipe's schedule.

`make_optimizer` and `compile_model` are the package's one way to compile a model it
trains (`training.train`, `fine_tune`, `lr_find`, `tuning` and `budget` use them);
`compile_recipe` and `build_recipe_model` turn a `Recipe` into a compiled model.
`training` re-exports all four.
"""

from __future__ import annotations

import keras
import numpy as np

from cifar_utils.models import BUILDERS, init_whitening
from cifar_utils.recipes import OPTIMIZERS, Recipe
from cifar_utils.schedules import make_schedule


def make_optimizer(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=0.0):
    """A Keras optimiser by name, with decoupled weight decay that skips biases and batch norm.

    Weight decay is Keras's decoupled `weight_decay`; it skips biases and batch-norm
    parameters, whose size carries no overfitting risk.

    Args:
        optimizer: "sgd" (with momentum), "adam" or "adamw". Defaults to "sgd".
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`
            (see `schedules`). Defaults to 0.1.
        momentum: SGD momentum. Defaults to 0.9.
        nesterov: Nesterov momentum for SGD. Defaults to True.
        weight_decay: decoupled weight decay per step, times the learning rate;
            0 turns it off. Defaults to 0.0.

    Returns:
        A `keras.optimizers.Optimizer`.
    """
    decay = weight_decay or None
    if optimizer == "sgd":
        result = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=decay)
    elif optimizer == "adam":
        result = keras.optimizers.Adam(learning_rate, weight_decay=decay)
    elif optimizer == "adamw":
        result = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; received {optimizer!r}.")
    if weight_decay:
        result.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return result


def compile_model(model, optimizer, label_smoothing=0.0, jit_compile="auto"):
    """Compiles a classifier for one-hot labels: the package's one compile call.

    `train` (through `compile_recipe`), `fine_tune`, `lr_find` and `tuning` compile
    through it. Labels are one-hot (so MixUp and CutMix can mix them, and label
    smoothing applies); the metric is reported as "accuracy".

    Args:
        model: a `keras.Model` ending in probabilities.
        optimizer: a Keras optimiser (see `make_optimizer`).
        label_smoothing: share of the target spread over the other classes.
            Defaults to 0.0.
        jit_compile: compile with XLA: True, False or "auto" (Keras's default:
            XLA on one GPU). Defaults to "auto".

    Returns:
        The model, compiled.

    Raises:
        ValueError: `optimizer` is a `Recipe` (use `compile_recipe`) or not an optimiser.
    """
    if isinstance(optimizer, Recipe):
        raise ValueError(
            "compile_model takes an optimiser; received the Recipe "
            f"{optimizer.name!r}. Use compile_recipe(model, recipe, steps_per_epoch)."
        )
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            f"optimizer must be a keras optimiser (see make_optimizer); received {type(optimizer).__name__}."
        )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model


def compile_recipe(model, recipe: Recipe, steps_per_epoch: int, jit_compile=False):
    """Compiles a model with a recipe's optimiser, schedule and label smoothing.

    Args:
        model: a `keras.Model` ending in probabilities.
        recipe: a `Recipe`.
        steps_per_epoch: optimiser steps per epoch, for the schedule.
        jit_compile: compile with XLA (on a GPU). Defaults to False.

    Returns:
        The model, compiled.
    """
    optimizer = make_optimizer(
        recipe.optimizer, make_schedule(recipe, steps_per_epoch), momentum=recipe.momentum,
        nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
    )
    return compile_model(model, optimizer, recipe.label_smoothing, jit_compile=jit_compile)


def build_recipe_model(recipe: Recipe, x_train, seed=0):
    """The recipe's model, its whitening layer set from the training images if it asks.

    Args:
        recipe: a `Recipe`.
        x_train: uint8 training images; with `recipe.whitening_images` > 0, that
            many (drawn with `seed`) set the whitening filters (`models.init_whitening`).
        seed: seed of that draw. Defaults to 0.

    Returns:
        The uncompiled `keras.Model`.
    """
    model = BUILDERS[recipe.arch](**recipe.model_kwargs)
    if recipe.whitening_images:
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(x_train), min(recipe.whitening_images, len(x_train)), replace=False)
        init_whitening(model, x_train[sample])
    return model
