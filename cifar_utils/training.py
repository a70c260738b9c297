"""Train a recipe: build, compile, fit and save, on the CPU, one GPU or several.

    result = training.train("fast", x_train, y_train, x_val, y_val, output_dir="runs/fast")

`train` reads like a keras-io example: it builds the recipe's model and compiles it
(`compiling`), makes the datasets (`augment.training_dataset`, `data.make_dataset`), fits
with the callbacks of `default_callbacks`, and saves into a `runs.RunFolder` (`best.keras`,
`final.keras`, `history.csv`, `history.json`, and a `backup/` from which a killed run
resumes when `train` is called again with the same folder). Around that it adds what a
first-class run needs: the device setup (`device.setup_devices`: mixed precision, XLA,
several GPUs or machines), seeds and, on the CPU, deterministic ops (`repro.deterministic`),
and an optional wall-time budget (`budget.plan_budget`). When it returns, Keras's global
dtype policy and TensorFlow's op determinism are as they were before the call.

`fine_tune` continues training a trained model at a small rate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from cifar_utils import augment, data, device, distributed, reports, repro
from cifar_utils.budget import plan_budget
from cifar_utils.callbacks import (
    AtomicCheckpoint,
    EpochLogger,
    FreezeLayers,
    Lookahead,
    StopOnNaN,
    TimeBudget,
)
from cifar_utils.compiling import (
    build_recipe_model,
    check_recipe,
    compile_model,
    compile_recipe,
    make_optimizer,
)
from cifar_utils.recipes import Recipe
from cifar_utils.runs import RunFolder
from cifar_utils.schedules import linear_decay

# Kept from a budget for what `train` does after `fit`: saving final.keras (0.2 s for the
# fast net, measured) and history.json, with room for a slow disk.
FINISH_SECONDS = 2.0


def train(
    recipe,
    x_train,
    y_train,
    x_val,
    y_val,
    *,
    output_dir,
    seed=0,
    setup=None,
    verbose=2,
    tensorboard=False,
    early_stopping_patience=None,
    callbacks=(),
    budget_min=None,
    checkpoints=True,
):
    """Trains a recipe end to end and writes its model and history into `output_dir`.

    Calling it again with the same `output_dir` after an interruption resumes
    from the last completed epoch; after a finished run it starts afresh.

    Args:
        recipe: a recipe name (see `recipes.RECIPES`) or a `Recipe`.
        x_train: uint8 training images, shape `(N, 32, 32, 3)`.
        y_train: their labels, shape `(N,)` or `(N, 1)`.
        x_val: uint8 validation images, split from the training set, or None:
            no validation (and so no `best.keras`), as in a timed benchmark run.
        y_val: their labels, or None.
        output_dir: folder for the model files, history and backup. Across
            machines (a `TF_CONFIG` cluster) the chief (or worker 0) writes
            here and worker N into `output_dir/workerN`.
        seed: seed of weights, shuffling and augmentation. Defaults to 0.
        setup: a `device.DeviceSetup`. Defaults to None: `setup_devices()`.
        verbose: Keras's fit verbosity; 2 prints one line per epoch. Defaults to 2.
        tensorboard: also write TensorBoard logs. Defaults to False.
        early_stopping_patience: stop after this many epochs without a better
            validation accuracy. Defaults to None (never).
        callbacks: more Keras callbacks. Defaults to ().
        budget_min: a wall-time budget in minutes for the whole call: epochs (and the
            fast network's widths) are chosen to fit it by `budget.plan_budget`, and a
            wall-clock `TimeBudget` stops the run early enough that the call, saving
            included, ends within the budget if the estimate was short. The plan is in
            `result.run["budget"]` and history.json. A resumed run keeps the plan it
            started with (no new one is made or recorded) and stops when the budget of
            this call is spent. Defaults to None: the recipe's epochs.
        checkpoints: keep `best.keras` and the `backup/` to resume from after each
            epoch. Defaults to True; timed runs turn them off (each save takes time).

    Returns:
        A `TrainResult`.
    """
    start = time.perf_counter()
    recipe = check_recipe(recipe)
    _check_data(x_train, x_val, y_val, early_stopping_patience)
    # On the CPU bit-for-bit repeatable; on a GPU with XLA only seeded (deterministic
    # kernels would cost speed). Neither setting outlives this block.
    with (
        device.dtype_policy_scope(setup) as setup,
        repro.deterministic(seed, enabled=not setup.jit_compile),
        # One run at a time in a folder. Every worker of a cluster saves: the chief into
        # output_dir, the others into folders of their own.
        RunFolder(Path(output_dir) / device.worker_folder(setup.strategy)) as run,
    ):
        run.prepare(resume=checkpoints)
        asked = {"recipe": recipe.to_dict(), "budget_min": budget_min}
        plan = None
        if budget_min is not None and not run.resuming:  # a resumed run keeps its plan
            plan = _plan(recipe, x_train, y_train, x_val, budget_min, setup, seed)
            recipe = plan.recipe
            if verbose:
                print(plan.describe())
        recipe = run.settle(asked, recipe)  # saved for a resume, or the saved one resumed
        # On a GPU under JAX or PyTorch the fast recipe's augmentation runs in the model,
        # compiled with the step (setup.augment_in_model); elsewhere in the pipeline.
        in_model = setup.augment_in_model and augment.has_model_form(recipe.augmentation)
        train_ds, val_ds = make_datasets(recipe, x_train, y_train, x_val, y_val, seed, in_model)
        steps_per_epoch = max(len(x_train) // recipe.batch_size, 1)

        with setup.strategy.scope():
            layer = augment.build_augmentation(recipe.augmentation, seed) if in_model else None
            model = build_recipe_model(recipe, x_train, seed, augmentation=layer)
            compile_recipe(model, recipe, steps_per_epoch, jit_compile=setup.jit_compile)
            initial_epoch = run.resume(model)  # 0 unless a killed run left a backup

        all_callbacks = default_callbacks(
            recipe, run, steps_per_epoch, checkpoints, early_stopping_patience, tensorboard
        )
        # An endless dataset (the "airbench" augmentation) needs the length of an epoch.
        steps = steps_per_epoch if data.is_endless(train_ds) else None
        fit_args = dict(epochs=recipe.epochs, steps_per_epoch=steps, initial_epoch=initial_epoch)
        if budget_min is not None:  # what is left of the budget stops the run, resumed or not
            left = budget_min * 60 - (time.perf_counter() - start) - FINISH_SECONDS
            all_callbacks.insert(0, TimeBudget(max(left, 1.0), wall_clock=True))
        fit_args.update(callbacks=all_callbacks + list(callbacks), verbose=verbose)
        fit_start = time.perf_counter()
        if device.is_multi_worker(setup.strategy):  # Keras 3's fit cannot span machines yet
            history = distributed.fit_multi_worker(
                model, setup.strategy, train_ds, val_ds, **fit_args
            )
        else:  # shuffle=False: the dataset shuffles itself, with the seed
            history = model.fit(train_ds, validation_data=val_ds, shuffle=False, **fit_args)
        session_seconds = time.perf_counter() - fit_start
        _raise_if_diverged(all_callbacks, run, recipe)

        full_history = run.full_history(history.history, initial_epoch)
        record = _run_record(
            recipe, full_history, seed, setup, x_train, x_val, session_seconds, in_model
        )
        if plan is not None:
            record["budget"] = plan.record(call_seconds=time.perf_counter() - start)
        run.finish(model, {"recipe": recipe.to_dict(), "run": record, "history": full_history})
    return TrainResult(model, full_history, recipe, run.path, record)


def default_callbacks(
    recipe, run, steps_per_epoch, checkpoints=True, early_stopping_patience=None, tensorboard=False
) -> list:
    """The callbacks of a `train` run, in the order they must run at each epoch's end.

    Args:
        recipe: the `Recipe` (its lookahead and epochs).
        run: the `runs.RunFolder` to write into, after its `prepare()`.
        steps_per_epoch: optimiser steps per epoch (for lookahead's schedule).
        checkpoints: keep `best.keras` (when the run validates) and the backup to resume
            from. Defaults to True.
        early_stopping_patience: stop after this many epochs without a better validation
            accuracy, or None (never). Defaults to None.
        tensorboard: write TensorBoard logs into the run folder. Defaults to False.

    Returns:
        A list of Keras callbacks.
    """
    result = [
        StopOnNaN(),  # first: no epoch with a NaN loss is saved
        EpochLogger(),  # adds the epoch's seconds and learning rate to the logs of those below
        keras.callbacks.CSVLogger(str(run.history_csv), append=True),
    ]
    if checkpoints:  # best.keras is written only by a run with validation (val_accuracy)
        result.append(AtomicCheckpoint(run.best_model, best=run.best_so_far))
        result.append(run.backup_callback())
    if early_stopping_patience is not None:
        patience = early_stopping_patience
        result.append(keras.callbacks.EarlyStopping("val_accuracy", mode="max", patience=patience))
    if tensorboard:
        result.append(keras.callbacks.TensorBoard(str(run.tensorboard_dir)))
    # Freezing before lookahead: on JAX, FreezeLayers puts the frozen weights back after each
    # step, and lookahead's averaging must then see them as TensorFlow's frozen step leaves them.
    if recipe.whitening_bias_epochs:
        result.append(FreezeLayers(["whiten_bias"], recipe.whitening_bias_epochs))
    if recipe.lookahead_steps:
        result.append(Lookahead(recipe.epochs * steps_per_epoch, every=recipe.lookahead_steps))
    return result


def make_datasets(recipe, x_train, y_train, x_val, y_val, seed=0, augment_in_model=False):
    """The recipe's training dataset (augmented, endless for "airbench") and validation dataset.

    Training batches are all the same size (the last, smaller one is dropped) unless the
    data holds less than one batch. `val_ds` is None without validation images. With
    `augment_in_model` the training batches are only shuffled: the model augments.
    """
    train_ds = augment.training_dataset(
        x_train,
        y_train,
        "none" if augment_in_model else recipe.augmentation,
        recipe.batch_size,
        seed,
        drop_remainder=len(x_train) >= recipe.batch_size,
    )
    if x_val is None:
        return train_ds, None
    return train_ds, data.make_dataset(
        x_val, y_val, recipe.batch_size, num_classes=data.NUM_CLASSES
    )


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained model (weights of the last epoch).
        history: per-epoch lists ("epoch", "loss", "accuracy", "val_loss",
            "val_accuracy", "epoch_seconds", "learning_rate"), complete even
            when the run resumed from a backup.
        recipe: the `Recipe` that was run.
        output_dir: where the files went.
        run: hardware, versions, seed, epochs and wall time of the run.
    """

    model: keras.Model
    history: dict
    recipe: Recipe
    output_dir: Path
    run: dict = field(default_factory=dict)

    @property
    def best_model_path(self) -> Path:
        return self.output_dir / "best.keras"

    @property
    def final_model_path(self) -> Path:
        return self.output_dir / "final.keras"


def _check_data(x_train, x_val, y_val, early_stopping_patience):
    if (x_val is None) != (y_val is None):
        raise ValueError("pass both x_val and y_val, or neither (no validation).")
    if len(x_train) < 1 or (x_val is not None and len(x_val) < 1):
        raise ValueError(
            "need training images, and validation images unless x_val is None; received "
            f"{len(x_train)} and {None if x_val is None else len(x_val)}."
        )
    if early_stopping_patience is not None and x_val is None:
        raise ValueError("early_stopping_patience needs validation images; received x_val=None.")


def _plan(recipe, x_train, y_train, x_val, budget_min, setup, seed):
    """The budget's plan for this data (validation passes included)."""
    val_images = 0 if x_val is None else len(x_val)
    return plan_budget(recipe, x_train, y_train, budget_min, val_images, setup=setup, seed=seed)


def _raise_if_diverged(callbacks, run, recipe):
    stopped_at = next((c.stopped_at for c in callbacks if isinstance(c, StopOnNaN)), None)
    if stopped_at is None:
        return
    run.discard_backup()  # its weights may be NaN too
    kept = (
        "best.keras from an earlier epoch is kept"
        if run.best_model.exists()
        else "no model was saved"
    )
    raise TrainingDiverged(
        f"recipe {recipe.name!r}: the training loss became NaN or infinite in epoch "
        f"{stopped_at[0]}, batch {stopped_at[1]}; training stopped and final.keras was not "
        f"written ({kept}). "
        f"Lower the learning rate (now {recipe.learning_rate}) and run again."
    )


def _run_record(recipe, history, seed, setup, x_train, x_val, session_seconds, in_model) -> dict:
    return reports.run_info(
        seed=seed,
        recipe=recipe.name,
        epochs=len(history.get("epoch", [])),
        train_seconds=float(sum(history.get("epoch_seconds", []))),
        last_session_seconds=session_seconds,
        train_images=len(x_train),
        precision=setup.precision_policy,
        replicas=setup.num_replicas,
        augmentation_in_model=in_model,
        val_images=0 if x_val is None else len(x_val),
        best_val_accuracy=max(history.get("val_accuracy") or [float("nan")]),
    )


def fine_tune(
    model,
    x_train,
    y_train,
    x_val,
    y_val,
    learning_rate=1e-3,
    epochs=2,
    batch_size=256,
    label_smoothing=0.1,
    augmentation="standard",
    decay_to_zero=True,
    seed=0,
    verbose=2,
):
    """Continues training a trained model at a small learning rate.

    Recompiles the model with Nesterov SGD (momentum 0.9, no weight decay) so
    that the saved optimiser state of the first run plays no part. By default
    the rate falls in a straight line to zero over the fine-tuning steps, as
    the recipes' schedules end: a run stopped at a constant rate leaves the
    weights (and the batch-norm statistics) mid-jump, which measured worse.

    Args:
        model: a trained model ending in probabilities.
        x_train: uint8 training images.
        y_train: their labels.
        x_val: uint8 validation images.
        y_val: their labels.
        learning_rate: the step size, typically 10-100 times below the first
            run's peak. Defaults to 1e-3.
        epochs: passes over `x_train`. Defaults to 2.
        batch_size: images per step. Defaults to 256.
        label_smoothing: as in the recipes; use the first run's value.
            Defaults to 0.1.
        augmentation: a policy for the pipeline. Defaults to "standard".
        decay_to_zero: lower the rate linearly to zero by the last step;
            False keeps it constant. Defaults to True.
        seed: seed of shuffling and augmentation. Defaults to 0.
        verbose: Keras's fit verbosity. Defaults to 2.

    Returns:
        The Keras `History.history` dict of the fine-tuning epochs.
    """
    if not learning_rate > 0 or epochs < 1:
        raise ValueError(
            "learning_rate must be positive and epochs >= 1; "
            f"received {learning_rate} and {epochs}."
        )
    steps = epochs * math.ceil(len(x_train) / batch_size)
    rate = linear_decay(learning_rate, steps) if decay_to_zero else learning_rate
    compile_model(model, make_optimizer("sgd", rate, momentum=0.9, nesterov=True), label_smoothing)
    train_ds = augment.training_dataset(
        x_train, y_train, augmentation, batch_size=batch_size, seed=seed
    )
    val_ds = (
        None
        if x_val is None
        else data.make_dataset(x_val, y_val, batch_size=batch_size, num_classes=data.NUM_CLASSES)
    )
    return model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False
    ).history
