"""How a recipe becomes a compiled model: its network, optimiser, schedule and loss.

    recipe = recipes.get_recipe("fast")
    model = compiling.build_recipe_model(recipe, x_train)
    compiling.compile_recipe(model, recipe, steps_per_epoch=len(x_train) // recipe.batch_size)

`make_optimizer` and `compile_model` are the package's one way to compile a model it
trains (`training.train`, `fine_tune`, `lr_finder.lr_find`, `tuning` and `budget` use
them). `check_recipe` checks the fields of a recipe that name code (network, schedule,
augmentation, test-time augmentation); `recipes` itself holds plain values only.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np

from cifar_utils.augment import parse_policy
from cifar_utils.evaluation import is_tta_mode
from cifar_utils.models import BUILDERS
from cifar_utils.recipes import OPTIMIZERS, Recipe, get_recipe
from cifar_utils.schedules import SCHEDULES, make_schedule


def check_recipe(recipe) -> Recipe:
    """The recipe (a name or a `Recipe`), after checking the fields that name code.

    `Recipe` checks its numbers itself; this checks that `arch` names a builder of
    `models.BUILDERS` that takes `model_kwargs`, and that `schedule`, `augmentation` and
    `tta` name what `schedules`, `augment` and `evaluation` provide.

    Raises:
        ValueError: naming the field, what it may be and what was received.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a name or a Recipe; received {type(recipe).__name__}.")

    def bad(what, expected):
        value = getattr(recipe, what)
        raise ValueError(f"recipe {recipe.name!r}: {what} must be {expected}; received {value!r}.")

    if recipe.arch not in BUILDERS:
        bad("arch", f"one of {', '.join(BUILDERS)}")
    if recipe.schedule not in SCHEDULES:
        bad("schedule", f"one of {', '.join(SCHEDULES)}")
    if not is_tta_mode(recipe.tta):
        bad("tta", "False, True (flip), 'flip' or 'multicrop'")
    parse_policy(recipe.augmentation)  # raises with the policy names
    parameters = inspect.signature(BUILDERS[recipe.arch]).parameters
    if recipe.whitening_bias_epochs and "whitening_bias" not in parameters:
        bad("whitening_bias_epochs", f"0: {recipe.arch} has no whitening layer")
    allowed = [n for n in parameters if n not in ("input_shape", "num_classes", "name")]
    unknown = sorted(set(recipe.model_kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"recipe {recipe.name!r}: model_kwargs {unknown} are not arguments of "
            f"{BUILDERS[recipe.arch].__name__}; it takes {', '.join(allowed)}."
        )
    return recipe


def make_optimizer(
    optimizer="sgd",
    learning_rate=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=0.0,
    decay_biases=False,
):
    """A Keras optimiser by name, with decoupled weight decay that skips biases and batch norm.

    Weight decay is Keras's decoupled `weight_decay`; by default it skips biases and
    batch-norm parameters, whose size carries no overfitting risk.

    Args:
        optimizer: "sgd" (with momentum), "adam" or "adamw". Defaults to "sgd".
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`
            (see `schedules`). Defaults to 0.1.
        momentum: SGD momentum. Defaults to 0.9.
        nesterov: Nesterov momentum for SGD. Defaults to True.
        weight_decay: decoupled weight decay per step, times the learning rate;
            0 turns it off. Defaults to 0.0.
        decay_biases: decay biases and batch-norm parameters too, by the same
            share per step as the weights (airbench does: it keeps the fast
            network's quickly-learning shifts small). Defaults to False.

    Returns:
        A `keras.optimizers.Optimizer`.
    """
    decay = weight_decay or None
    if optimizer == "sgd":
        result = keras.optimizers.SGD(
            learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=decay
        )
    elif optimizer == "adam":
        result = keras.optimizers.Adam(learning_rate, weight_decay=decay)
    elif optimizer == "adamw":
        result = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; received {optimizer!r}.")
    if weight_decay and not decay_biases:
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
        ValueError: `optimizer` is not a Keras optimiser.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "optimizer must be a keras optimiser (see make_optimizer); "
            f"received {type(optimizer).__name__}."
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
        recipe.optimizer,
        make_schedule(recipe, steps_per_epoch),
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
        decay_biases=recipe.decay_biases,
    )
    return compile_model(model, optimizer, recipe.label_smoothing, jit_compile=jit_compile)


def build_recipe_model(recipe: Recipe, x_train, seed=0, augmentation=None):
    """The recipe's model, its whitening layer set from the training images if it asks.

    Args:
        recipe: a `Recipe`.
        x_train: uint8 training images; with `recipe.whitening_images` > 0, that
            many (drawn with `seed`) are the builder's `whitening_sample`. With
            `recipe.whitening_bias_epochs` > 0 the whitening layer gets its bias.
        seed: seed of that draw. Defaults to 0.
        augmentation: an augmentation layer to put first in the model (see
            `augment.build_augmentation`), or None. Defaults to None.

    Returns:
        The uncompiled `keras.Model`.
    """
    kwargs = dict(recipe.model_kwargs)
    if recipe.whitening_bias_epochs:  # trained for that many epochs (callbacks.FreezeLayers)
        kwargs["whitening_bias"] = True
    if recipe.whitening_images:
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(x_train), min(recipe.whitening_images, len(x_train)), replace=False)
        kwargs["whitening_sample"] = x_train[sample]
    if augmentation is not None:
        kwargs["augmentation"] = augmentation
    return BUILDERS[recipe.arch](**kwargs)
