"""Compile and train a recipe in one call, on the CPU, one GPU or several.

    result = training.train("fast", x_train, y_train, x_val, y_val, output_dir="runs/fast")

`train` seeds everything and, on the CPU, makes ops deterministic for its own
duration (`repro.deterministic`; on a GPU with XLA it only seeds), picks the device strategy (`device.setup_devices`),
builds and compiles the recipe's model inside the strategy's scope (mixed
precision and XLA on a GPU, `mixed_bfloat16` on CPUs with bfloat16 instructions, float32 on
other CPUs), streams the data through
`augment.training_dataset` with the recipe's augmentation, and fits with the
callbacks of `cifar_utils.callbacks`, writing into `output_dir`:

- `best.keras`: the model with the best validation accuracy so far, saved
  atomically (a temporary name, then a rename);
- `history.csv`: one row per epoch, appended as training goes;
- `backup/`: `BackupAndRestore` state, so a run killed mid-epoch resumes from
  its last completed epoch when `train` is called again with the same folder;
- `history.json` and `final.keras` at the end, both written atomically;
- `tensorboard/` when asked for.

When it returns, Keras's global dtype policy and TensorFlow's op determinism are as
they were before the call. The package compiles every model it trains through
`compile_model` (`compile_recipe` for a recipe), with an optimiser from `make_optimizer`;
notebooks also show Keras's own `model.compile`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar_utils import data as data_lib
from cifar_utils import device, evaluation, paths, repro, reports, storage
from cifar_utils.augment import training_dataset
from cifar_utils.callbacks import (
    AtomicBackupAndRestore,
    AtomicCheckpoint,
    EpochLogger,
    Lookahead,
    StopOnNaN,
    TimeBudget,
    pause_for_test,
    prepare_resume,
    read_history,
)
from cifar_utils.budget import plan_budget
from cifar_utils.compiling import build_recipe_model, compile_model, compile_recipe, make_optimizer
from cifar_utils.models import float32_copy
from cifar_utils.recipes import RECIPES, Recipe, get_recipe
from cifar_utils.schedules import linear_decay


def load_or_train(model_path=None, runs_dir=None, x_train=None, y_train=None, seed=0, num_images=2000):
    """A trained model for the later notebooks, which never fail for lack of one.

    Loads `model_path` when given, else `paths.find_trained_model(runs_dir)`, in
    Keras's safe mode. When there is none, trains a small fast_net (widths 16/32/32,
    2 epochs on `num_images` training images) so the notebook can go on.

    Args:
        model_path: a `.keras` file. Defaults to None: look for one.
        runs_dir: the runs folder. Defaults to None: `paths.runs_dir()`.
        x_train: training images for the fallback. Defaults to None: no fallback.
        y_train: their labels.
        seed: seed of the fallback's subset, split and weights. Defaults to 0.
        num_images: training images for the fallback. Defaults to 2,000.

    Returns:
        `(model, description of where it came from)`.
    """
    if model_path is not None:
        path, source = Path(model_path), f"given as {model_path}"
    else:
        path, source = paths.find_trained_model(runs_dir)
    if path is not None:
        return storage.load_model(path), source
    if x_train is None:
        raise ValueError(f"{source}, and no training images were given to train a small one")
    runs_dir = Path(runs_dir) if runs_dir is not None else paths.runs_dir()
    (x_tr, y_tr), (x_val, y_val) = data_lib.split_train_val(x_train, y_train, 0.1, seed=seed)
    x_tr, y_tr = data_lib.stratified_subset(x_tr, y_tr, num_images, seed=seed)
    recipe = get_recipe("fast", epochs=2, batch_size=128, learning_rate=0.2,
                        model_kwargs={"widths": [16, 32, 32]})
    result = train(recipe, x_tr, y_tr, x_val, y_val, output_dir=runs_dir / "fast", seed=seed)
    where = paths.display_path(runs_dir / "fast")
    return result.model, f"{source}: trained a small fast_net on {num_images:,} images instead ({where})"


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained model (weights of the last epoch).
        history: per-epoch lists ("loss", "accuracy", "val_loss",
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


def _fit_multi_worker(model, strategy, train_ds, val_ds, epochs, callbacks, verbose, steps_per_epoch=None):
    """`model.fit` across machines (`MultiWorkerMirroredStrategy`), which Keras 3's fit fails.

    Keras 3.15's fit averages per-replica values in ways that break across workers (it asks
    the strategy to reduce a whole (x, y) batch, and scalars along an axis they lack;
    keras-team/keras#20585, still open). This loop does what fit does with Keras's own
    `train_step` and `test_step` on every replica (gradients are all-reduced inside them),
    averages the logs and, after each epoch, the batch-norm statistics across workers, and
    drives the same callbacks, starting from the epoch `BackupAndRestore` restored as fit
    does. `get_next_as_optional` keeps the workers in step when their shares of the data
    differ by a batch. An endless `train_ds` (the "airbench" policy) is read by one iterator,
    `steps_per_epoch` batches per epoch; `val_ds` may be None (no validation).

    Returns:
        The last epoch's logs.
    """
    def make(step):
        @tf.function
        def run(batch):
            logs = strategy.run(step, args=(batch,))
            return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

        return run

    train_step, test_step = make(model.train_step), make(model.test_step)
    # Batch-norm statistics are updated from each worker's own batches; average them after
    # every epoch, so that validation, checkpoints and every worker see the same model.
    statistics = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

    @tf.function
    def average_statistics():
        local = strategy.run(lambda: [tf.identity(v.value) for v in statistics])
        return [strategy.reduce("MEAN", value, axis=None) for value in local]

    def passes(dataset, step, on_begin=None, on_end=None, iterator=None, limit=None):
        logs, index = {}, 0
        iterator = iterator or iter(strategy.experimental_distribute_dataset(dataset))
        while limit is None or index < limit:
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            if on_begin:
                on_begin(index)
            logs = step(batch.get_value())
            if on_end:
                on_end(index, logs)
            index += 1
        return {name: float(value) for name, value in logs.items()}

    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps_per_epoch or int(train_ds.cardinality()),
    )
    endless = iter(strategy.experimental_distribute_dataset(train_ds)) if steps_per_epoch else None
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    # BackupAndRestore sets this, as under fit, when it restored an interrupted run.
    start = getattr(model, "_initial_epoch", None) or 0
    for epoch in range(start, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = passes(train_ds, train_step, callback_list.on_train_batch_begin, callback_list.on_train_batch_end,
                      iterator=endless, limit=steps_per_epoch)
        for variable, value in zip(statistics, average_statistics()):
            variable.assign(value)
        model.reset_metrics()
        if val_ds is not None:
            logs.update({f"val_{name}": value for name, value in passes(val_ds, test_step).items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    # Callbacks may set the weights at the end (Lookahead restores its slow copy, whose batch-norm
    # statistics were copied from this worker's own batches): average the statistics once more.
    for variable, value in zip(statistics, average_statistics()):
        variable.assign(value)
    return logs


def train(
    recipe,
    x_train,
    y_train,
    x_val,
    y_val,
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
    """Trains a recipe end to end and writes its model and history.

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
        verbose: Keras's fit verbosity; 2 prints one line per epoch.
            Defaults to 2.
        tensorboard: also write TensorBoard logs. Defaults to False.
        early_stopping_patience: stop after this many epochs without a better
            validation accuracy. Defaults to None (never).
        callbacks: more Keras callbacks. Defaults to ().
        budget_min: a wall-time budget in minutes for the whole call: the run
            measures this machine's speed on its first steps and chooses the
            epochs (and the fast network's widths) to end inside it, with the
            learning-rate schedule fitted to those epochs (`budget.plan_budget`);
            a `TimeBudget` stops it if the estimate was short. The plan is in
            `result.run["budget"]`. Defaults to None: the recipe's epochs.
        checkpoints: keep `best.keras` and the `backup/` to resume from after each
            epoch. Defaults to True; timed runs turn them off (each save takes time).

    Returns:
        A `TrainResult`.
    """
    start = time.perf_counter()
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a name or a Recipe; received {type(recipe).__name__}.")
    if (x_val is None) != (y_val is None):
        raise ValueError("pass both x_val and y_val, or neither (no validation).")
    if len(x_train) < 1 or (x_val is not None and len(x_val) < 1):
        raise ValueError(
            f"need training images, and validation images unless x_val is None; received {len(x_train)} "
            f"and {len(x_val)}."
        )
    if early_stopping_patience is not None and x_val is None:
        raise ValueError("early_stopping_patience needs validation images; received x_val=None.")
    if budget_min is not None and (isinstance(budget_min, bool) or not isinstance(budget_min, (int, float))
                                   or not budget_min > 0):
        raise ValueError(f"budget_min must be a positive number of minutes; received {budget_min!r}.")
    with device.dtype_policy_scope(setup) as setup:
        # Bit-for-bit repeatable on the CPU; on a GPU, deterministic kernels would cost
        # speed. Inside this block only: train() leaves no global setting behind.
        with repro.deterministic(seed, enabled=not setup.jit_compile):
            plan = None
            if budget_min is not None:
                plan = plan_budget(recipe, x_train, y_train, budget_min * 60, setup=setup, seed=seed,
                                   val_images=0 if x_val is None else len(x_val))
                recipe = plan.recipe
                if verbose:
                    print(plan.describe())
                left = budget_min * 60 - (time.perf_counter() - start)
                callbacks = [TimeBudget(max(left, 1.0))] + list(callbacks)
            result = _train(recipe, x_train, y_train, x_val, y_val, Path(output_dir), seed, setup, verbose,
                            tensorboard, early_stopping_patience, callbacks, checkpoints)
            if plan is not None:
                result.run["budget"] = {"minutes": budget_min, "plan": plan.describe(),
                                        "seconds_per_step": {"x".join(map(str, k)) if k else "model": v
                                                             for k, v in plan.measured.items()},
                                        "call_seconds": time.perf_counter() - start}
            return result


def _train(recipe, x_train, y_train, x_val, y_val, output_dir, seed, setup, verbose, tensorboard,
           early_stopping_patience, callbacks, checkpoints=True):
    """`train` under its device setup, dtype policy and op determinism."""
    multi_worker = device.is_multi_worker(setup.strategy)
    # Every worker of a cluster holds the same weights and saves them: the chief into
    # output_dir, the others into a folder of their own (output_dir may be shared).
    output_dir = Path(output_dir) / device.worker_folder(setup.strategy)
    output_dir.mkdir(parents=True, exist_ok=True)
    storage.remove_stale_temporaries(output_dir)  # left by a run killed mid-save
    backup_dir = output_dir / "backup"
    history_csv = output_dir / "history.csv"
    # A fresh run starts a new log; a resumed one keeps only the epochs its backup holds.
    best_so_far = prepare_resume(backup_dir, history_csv)

    batch_size = recipe.batch_size
    drop = len(x_train) >= batch_size  # equal-sized steps, unless the data is tiny
    steps_per_epoch = len(x_train) // batch_size if drop else 1
    train_ds = training_dataset(x_train, y_train, recipe.augmentation, batch_size=batch_size, seed=seed,
                                drop_remainder=drop)
    val_ds = None if x_val is None else data_lib.make_dataset(
        x_val, y_val, batch_size=batch_size, num_classes=data_lib.NUM_CLASSES)

    with setup.strategy.scope():
        model = build_recipe_model(recipe, x_train, seed)
        compile_recipe(model, recipe, steps_per_epoch, jit_compile=setup.jit_compile)

    stop_on_nan = StopOnNaN()
    all_callbacks = [
        stop_on_nan,
        EpochLogger(),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
    ]
    if checkpoints and val_ds is not None:
        all_callbacks.append(AtomicCheckpoint(output_dir / "best.keras", best=best_so_far))
    if checkpoints:
        all_callbacks.append(AtomicBackupAndRestore(backup_dir))
    if early_stopping_patience is not None:
        all_callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=early_stopping_patience)
        )
    if tensorboard:
        all_callbacks.append(keras.callbacks.TensorBoard(str(output_dir / "tensorboard")))
    if recipe.lookahead_steps:
        all_callbacks.append(Lookahead(recipe.epochs * steps_per_epoch, every=recipe.lookahead_steps))
    all_callbacks.extend(callbacks)

    endless = train_ds.cardinality() == tf.data.INFINITE_CARDINALITY  # the "airbench" policy
    start = time.perf_counter()
    if multi_worker:
        _fit_multi_worker(model, setup.strategy, train_ds, val_ds, recipe.epochs, all_callbacks, verbose,
                          steps_per_epoch=steps_per_epoch if endless else None)
    else:
        model.fit(
            train_ds, validation_data=val_ds, epochs=recipe.epochs, callbacks=all_callbacks,
            verbose=verbose, shuffle=False,  # the dataset shuffles itself, with the seed
            steps_per_epoch=steps_per_epoch if endless else None,
        )
    session_seconds = time.perf_counter() - start
    if stop_on_nan.stopped_at is not None:
        epoch, batch = stop_on_nan.stopped_at
        shutil.rmtree(backup_dir, ignore_errors=True)  # its weights may be NaN too
        kept = "best.keras from an earlier epoch is kept" if (output_dir / "best.keras").exists() \
            else "no model was saved"
        raise TrainingDiverged(
            f"recipe {recipe.name!r}: the training loss became NaN or infinite in epoch {epoch}, "
            f"batch {batch}; training stopped and final.keras was not written ({kept}). "
            f"Lower the learning rate (now {recipe.learning_rate}) and run again."
        )
    history = read_history(history_csv)
    pause_for_test("final")
    storage.atomic_save_model(model, output_dir / "final.keras")
    run = reports.run_info(
        seed=seed,
        recipe=recipe.name,
        epochs=len(history.get("epoch", [])),
        train_seconds=float(sum(history.get("epoch_seconds", []))),
        last_session_seconds=session_seconds,
        train_images=len(x_train),
        precision=setup.precision_policy,
        replicas=setup.num_replicas,
        val_images=0 if x_val is None else len(x_val),
        best_val_accuracy=max(history.get("val_accuracy") or [float("nan")]),
    )
    storage.atomic_write_json(
        output_dir / "history.json", {"recipe": recipe.to_dict(), "run": run, "history": history}
    )
    shutil.rmtree(backup_dir, ignore_errors=True)  # last: a kill before this resumes, not restarts
    return TrainResult(model=model, history=history, recipe=recipe, output_dir=output_dir, run=run)


def fine_tune(model, x_train, y_train, x_val, y_val, learning_rate=1e-3, epochs=2, batch_size=256,
              label_smoothing=0.1, augmentation="standard", decay_to_zero=True, seed=0, verbose=2):
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
            f"learning_rate must be positive and epochs >= 1; received {learning_rate} and {epochs}."
        )
    steps = epochs * -(-len(x_train) // batch_size)
    rate = linear_decay(learning_rate, steps) if decay_to_zero else learning_rate
    compile_model(model, make_optimizer("sgd", rate, momentum=0.9, nesterov=True), label_smoothing)
    train_ds = training_dataset(x_train, y_train, augmentation, batch_size=batch_size, seed=seed)
    val_ds = None if x_val is None else data_lib.make_dataset(
        x_val, y_val, batch_size=batch_size, num_classes=data_lib.NUM_CLASSES)
    return model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False).history


@dataclass
class LRFindResult:
    """What `lr_find` measured.

    Attributes:
        learning_rates: the rate of each step, rising exponentially.
        losses: the training loss of each step's batch.
        smoothed: `losses` smoothed by an exponential moving average (bias-corrected).
        suggestion: the rate where the smoothed loss falls fastest against log(rate):
            a good peak rate to start from.
        min_loss_rate: the rate of the lowest smoothed loss; a tenth of it is the other
            usual pick (fastai's "minimum / 10").
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    min_loss_rate: float


def lr_find(model, x_train, y_train, start_lr=1e-5, end_lr=10.0, steps=200, batch_size=128,
            momentum=0.9, label_smoothing=0.0, smoothing=0.9, diverge=4.0, seed=0):
    """The learning-rate range test: raise the rate every step and watch the loss.

    Trains `model` with SGD for up to `steps` batches while the learning rate
    grows exponentially from `start_lr` to `end_lr` (Smith, 2015; fastai's
    `lr_find`). The loss first barely moves (rate too small), then falls,
    then explodes (rate too large); a good peak rate is where it falls
    fastest. The run stops early once a batch's loss, or the smoothed loss,
    exceeds `diverge` times the lowest smoothed loss. The model's weights are
    restored afterwards, but it is left compiled with this SGD: compile it
    again (`train` does) before training.

        result = training.lr_find(model, x_train, y_train)
        plots.plot_lr_find(result)

    Args:
        model: a Keras model ending in probabilities, taking raw pixels.
        x_train: uint8 training images (never test images).
        y_train: their labels.
        start_lr: the first step's rate. Defaults to 1e-5.
        end_lr: the last step's rate. Defaults to 10.0.
        steps: batches to try at most. Defaults to 200.
        batch_size: images per batch; use your training batch size, as the
            best rate depends on it. Defaults to 128.
        momentum: SGD momentum (Nesterov). Defaults to 0.9.
        label_smoothing: as in the recipe you will train. Defaults to 0.0.
        smoothing: weight of the past in the loss's moving average.
            Defaults to 0.9.
        diverge: stop once a loss exceeds this many times the lowest
            smoothed loss. Defaults to 4.0.
        seed: seed of the batches' order. Defaults to 0.

    Returns:
        An `LRFindResult`.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr; received start_lr={start_lr}, end_lr={end_lr}.")
    if steps < 10:
        raise ValueError(f"steps must be at least 10 to draw a curve; received {steps}.")
    if not 0 <= smoothing < 1 or not diverge > 1:
        raise ValueError(f"need 0 <= smoothing < 1 and diverge > 1; received {smoothing} and {diverge}.")
    rates = start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))
    weights = model.get_weights()
    compile_model(model, make_optimizer("sgd", start_lr, momentum=momentum, nesterov=True), label_smoothing)
    dataset = data_lib.make_dataset(
        x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed,
        num_classes=data_lib.NUM_CLASSES, drop_remainder=len(x_train) >= batch_size,
    ).repeat()
    losses, smoothed, average, best = [], [], 0.0, np.inf
    try:
        for step, (x, y) in zip(range(steps), dataset):
            model.optimizer.learning_rate = float(rates[step])
            loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
            if not np.isfinite(loss):
                break  # diverged all the way: keep the curve finite
            losses.append(loss)
            average = smoothing * average + (1 - smoothing) * loss
            smoothed.append(average / (1 - smoothing ** (step + 1)))
            best = min(best, smoothed[-1])
            if max(loss, smoothed[-1]) > diverge * best:
                break  # diverged: a larger rate only makes it worse
    finally:
        model.set_weights(weights)
    if not losses:
        raise ValueError(f"the loss was not finite at the first rate, start_lr={start_lr}: lower start_lr.")
    smoothed = np.asarray(smoothed)
    n, lowest = len(smoothed), int(np.argmin(smoothed))
    # The steepest fall of the smoothed loss against log(rate) before its minimum, measured
    # over a window of steps (single steps are noisy) and past the first tenth of the run,
    # where the moving average has not settled yet.
    skip, window = max(1, n // 10), max(2, n // 20)
    starts = np.arange(skip, lowest - window + 1)
    if len(starts):
        log_rates = np.log(rates)
        slopes = (smoothed[starts + window] - smoothed[starts]) / (log_rates[starts + window] - log_rates[starts])
        suggestion = float(rates[starts[int(np.argmin(slopes))] + window // 2])
    else:  # the loss never fell: the minimum's tenth is all there is to go on
        suggestion = float(rates[lowest] / 10)
    return LRFindResult(
        learning_rates=rates[:n], losses=np.asarray(losses), smoothed=smoothed,
        suggestion=suggestion, min_loss_rate=float(rates[lowest]),
    )


def ship_model(model, run_dir, output_dir, x_test, y_test, data_variant, command):
    """Copies a trained model into `output_dir` with a model card.

    The test set is used here once, after training, for the card's accuracy.

    Args:
        model: the trained model (its run's history.json is in `run_dir`).
        run_dir: the training run's folder (`train`'s `output_dir`).
        output_dir: where the model and MODEL_CARD.md go, e.g. "models".
        x_test: the test images.
        y_test: the test labels.
        data_variant: `DataSource.variant` of the data: "offline copy" or "official".
        command: the command that reproduces the model.

    Returns:
        The shipped model's path.
    """
    recipe = json.loads((Path(run_dir) / "history.json").read_text())["recipe"]
    target = Path(output_dir) / f"{recipe['arch']}.keras"
    # An uncompiled float32 copy: the optimiser's state (as large as the weights) is not
    # shipped, and a model trained under mixed precision on a GPU runs fast on a CPU too.
    shipped = float32_copy(model)
    storage.atomic_save_model(shipped, target)
    # The file's own accuracy, computed outside any distribution strategy (across machines,
    # only the first worker ships, and a prediction under the strategy would wait for the rest).
    acc = evaluation.accuracy(shipped, x_test, y_test)
    acc_tta = evaluation.accuracy(shipped, x_test, y_test, tta=True)
    reports.write_model_card(run_dir, target, acc, acc_tta, data_variant, command)
    return target


def main(argv=None):
    """`cifar-train`: train a recipe from the command line, optionally ship the model."""
    parser = argparse.ArgumentParser(prog="cifar-train", description="Train a CIFAR-10 recipe.")
    parser.add_argument("--recipe", default="fast", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--budget-min", type=float, default=None, metavar="N",
                        help="train for at most N minutes: measure this machine on the first steps, "
                             "then choose epochs (and the fast network's widths) to fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--data-dir", default=None, help="defaults to $CIFAR10_DIR, then Keras")
    parser.add_argument("--output-dir", default=None,
                        help="defaults to RUNS/RECIPE, RUNS being $CIFAR_OUTPUT_DIR or the repository's runs/")
    parser.add_argument("--ship", default=None, metavar="DIR",
                        help="copy the final model to DIR/ARCH.keras with a model card, "
                             "after one evaluation on the test set")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1; received {args.epochs}")
    if args.budget_min is not None and not args.budget_min > 0:
        parser.error(f"--budget-min must be a positive number of minutes; received {args.budget_min}")
    if args.budget_min is not None and args.epochs is not None:
        parser.error("--budget-min chooses the epochs itself; pass --epochs or --budget-min, not both")
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be between 0 and 1 (exclusive); received {args.val_fraction}")
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    try:
        recipe = get_recipe(args.recipe, **overrides)
    except ValueError as err:
        parser.error(str(err))
    # First, before any other TensorFlow work: a TF_CONFIG cluster's strategy must start first.
    setup = device.setup_devices()
    chief = not device.worker_folder(setup.strategy)
    output_dir = Path(args.output_dir) if args.output_dir else paths.runs_dir() / args.recipe
    try:
        (x, y), (x_test, y_test), source = data_lib.load_cifar10(args.data_dir, return_source=True)
    except data_lib.CIFAR10DataError as err:
        parser.exit(2, f"cifar-train: error: {err}\n")
    (x_train, y_train), (x_val, y_val) = data_lib.split_train_val(x, y, args.val_fraction, seed=args.seed)
    try:
        result = train(recipe, x_train, y_train, x_val, y_val, output_dir=output_dir, seed=args.seed,
                       setup=setup, budget_min=args.budget_min)
    except TrainingDiverged as err:
        print(f"cifar-train: {err}", file=sys.stderr)
        return 1
    print(f"trained {recipe.name}: best validation accuracy {result.run['best_val_accuracy']:.4f}, "
          f"{result.run['train_seconds']:.0f} s; files in {result.output_dir}")
    if args.ship and chief:  # across machines, the chief alone ships
        command = " ".join(["cifar-train"] + list(argv if argv is not None else sys.argv[1:]))
        target = ship_model(result.model, result.output_dir, args.ship, x_test, y_test, source.variant, command)
        print(f"shipped {target}; see {target.parent / 'MODEL_CARD.md'}")
    return 0
