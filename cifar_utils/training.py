"""Compile and train a recipe in one call, on the CPU, one GPU or several.

    result = training.train("fast", x_train, y_train, x_val, y_val, output_dir="runs/fast")

`train` sets the seed, picks the device strategy (`device.setup_devices`),
builds and compiles the recipe's model inside the strategy's scope (mixed
precision and XLA on a GPU, float32 on the CPU), streams the data through
`data.make_dataset` with the recipe's augmentation, and fits with these
callbacks, writing into `output_dir`:

- `best.keras`: the model with the best validation accuracy so far, saved
  atomically (a temporary name, then a rename);
- `history.csv`: one row per epoch, appended as training goes;
- `backup/`: `BackupAndRestore` state, so a run killed mid-epoch resumes from
  its last completed epoch when `train` is called again with the same folder;
- `history.json` and `final.keras` at the end, both written atomically;
- `tensorboard/` when asked for.
"""

from __future__ import annotations

import csv
import json
import inspect
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import ops

from cifar_utils import data as data_lib
from cifar_utils import device, repro, storage
from cifar_utils.augment import pipeline_augment
from cifar_utils.models import BUILDERS, float32_copy
from cifar_utils.recipes import Recipe, get_recipe
from cifar_utils.storage import atomic_save_model, atomic_write_json, atomic_write_text

OUTPUT_ENV_VAR = "CIFAR_OUTPUT_DIR"
# The fast-recipe model committed to the repository (see models/MODEL_CARD.md).
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "fast_net.keras"


def runs_dir(default="../runs") -> Path:
    """Where notebooks write models and histories: `$CIFAR_OUTPUT_DIR` or `default`.

    Args:
        default: used when the variable is unset. Defaults to "../runs"
            (the repository's runs/ folder, seen from notebooks/).
    """
    return Path(os.environ.get(OUTPUT_ENV_VAR) or default)


def find_trained_model(runs=None):
    """The model later notebooks and tools should use, and where it came from.

    Looks for the fast model that notebook 04 or `cifar-train` saved
    (`runs/fast/best.keras`), then the baseline's, then the model shipped in
    the repository's models/.

    Args:
        runs: the runs folder. Defaults to None: `runs_dir()` (notebooks, or
            `$CIFAR_OUTPUT_DIR`), and, when that variable is unset, also
            `runs/` below the working directory, where `cifar-train` writes
            when started from the repository root (as `cifar-predict` and
            `cifar-demo` usually are).

    Returns:
        `(path, description)`, or `(None, reason)` when there is none (for
        example a package installed without the repository); the caller then
        trains a small model.
    """
    if runs is not None:
        folders = [Path(runs)]
    else:
        folders = [runs_dir()]
        if not os.environ.get(OUTPUT_ENV_VAR) and Path("runs").resolve() != folders[0].resolve():
            folders.append(Path("runs"))
    for folder, who in zip(folders, ("notebook 04", "cifar-train")):
        for name in ("fast", "baseline_cnn"):
            candidate = folder / name / "best.keras"
            if candidate.exists():
                return candidate, f"trained by {who} ({candidate})"
    if SHIPPED_MODEL.exists():
        return SHIPPED_MODEL, f"shipped with the repository ({SHIPPED_MODEL})"
    where = " or ".join(str(f) for f in folders)
    return None, f"no trained model in {where} and none shipped at {SHIPPED_MODEL}"


def load_or_train(model_path=None, runs=None, x_train=None, y_train=None, seed=0, images=2000):
    """A trained model for the later notebooks, which never fail for lack of one.

    Loads `model_path` when given, else `find_trained_model(runs)`, in Keras's
    safe mode. When there is none, trains a small fast_net (widths 16/32/32,
    2 epochs on `images` training images) so the notebook can go on.

    Args:
        model_path: a `.keras` file. Defaults to None: look for one.
        runs: the runs folder. Defaults to None: `runs_dir()`.
        x_train: training images for the fallback. Defaults to None: no fallback.
        y_train: their labels.
        seed: seed of the fallback's subset, split and weights. Defaults to 0.
        images: training images for the fallback. Defaults to 2,000.

    Returns:
        `(model, description of where it came from)`.
    """
    if model_path is not None:
        path, source = Path(model_path), f"given as {model_path}"
    else:
        path, source = find_trained_model(runs)
    if path is not None:
        return keras.saving.load_model(path, safe_mode=True), source
    if x_train is None:
        raise ValueError(f"{source}, and no training images were given to train a small one")
    runs = Path(runs) if runs is not None else runs_dir()
    (x_tr, y_tr), (x_val, y_val) = data_lib.split_train_val(x_train, y_train, 0.1, seed=seed)
    x_tr, y_tr = data_lib.stratified_subset(x_tr, y_tr, images, seed=seed)
    recipe = get_recipe("fast", epochs=2, batch_size=128, learning_rate=0.2,
                        model_kwargs={"widths": [16, 32, 32]})
    result = train(recipe, x_tr, y_tr, x_val, y_val, output_dir=runs / "fast", seed=seed)
    return result.model, f"{source}: trained a small fast_net on {images:,} images instead ({runs / 'fast'})"


@keras.saving.register_keras_serializable(package="cifar_utils")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that moves in straight lines between (step, value) points.

    Before the first point it holds the first value, after the last the last.
    One-cycle and triangular schedules are three points.

    Args:
        boundaries: increasing step numbers, at least two.
        values: the learning rate at each boundary.
        name: optional name. Defaults to None.
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


def make_schedule(recipe: Recipe, steps_per_epoch: int):
    """The recipe's learning-rate schedule over its steps.

    Args:
        recipe: a `Recipe`.
        steps_per_epoch: optimiser steps per epoch.

    Returns:
        A float (constant) or a `keras.optimizers.schedules.LearningRateSchedule`:
        "warmup_cosine": linear from 0 to `learning_rate` over the first
        `warmup_fraction` of the steps, then cosine to 0; "one_cycle": linear
        0.1x -> 1x, then linear to 0; "triangle": 0.2x -> 1x -> 0.07x (airbench).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1; received {steps_per_epoch}.")
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


def make_optimizer(recipe: Recipe, steps_per_epoch: int):
    """The recipe's Keras optimiser, with its schedule and weight decay.

    Weight decay is decoupled (Keras's `weight_decay`) and skips biases and
    batch-norm parameters, whose size carries no overfitting risk.

    Args:
        recipe: a `Recipe`.
        steps_per_epoch: optimiser steps per epoch.

    Returns:
        A `keras.optimizers.Optimizer`.
    """
    schedule = make_schedule(recipe, steps_per_epoch)
    decay = recipe.weight_decay or None
    if recipe.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=decay
        )
    elif recipe.optimizer == "adam":
        optimizer = keras.optimizers.Adam(schedule, weight_decay=decay)
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)
    if recipe.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_model(model, recipe: Recipe, steps_per_epoch: int, jit_compile=False):
    """Compiles a model with the recipe's optimiser and a label-smoothed loss.

    Labels are one-hot (so MixUp and CutMix can mix them); the metric is
    reported as "accuracy".

    Args:
        model: a `keras.Model` ending in probabilities.
        recipe: a `Recipe`.
        steps_per_epoch: optimiser steps per epoch.
        jit_compile: compile with XLA (on a GPU). Defaults to False.

    Returns:
        The model, compiled.
    """
    model.compile(
        optimizer=make_optimizer(recipe, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever the monitored value improves, atomically.

    Unlike `keras.callbacks.ModelCheckpoint`, which writes in place, a kill
    during the save leaves the previous best file intact.

    Args:
        path: the `.keras` file to keep the best model in.
        monitor: the log entry to watch. Defaults to "val_accuracy".
        mode: "max" or "min". Defaults to "max".
        best: the best value seen before this run (when resuming). Defaults to None.
    """

    def __init__(self, path, monitor="val_accuracy", mode="max", best=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'; received {mode!r}.")
        self.path = Path(path)
        self.monitor = monitor
        self.mode = mode
        self.best = best  # a resumed run passes the best value of its earlier epochs

    def on_epoch_end(self, epoch, logs=None):
        _pause_for_test("best")  # after CSVLogger wrote the epoch's row, before any save
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best = value
            atomic_save_model(self.model, self.path)


class EpochLogger(keras.callbacks.Callback):
    """Adds the epoch's wall time (s) and learning rate to the logs.

    Put it before `CSVLogger` so both columns reach the CSV file.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["epoch_seconds"] = time.perf_counter() - self._start
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(np.asarray(lr))


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` once its training steps have used `seconds` of wall time.

    Only training steps count; the validation passes at the ends of epochs do not, so
    models that are slow to evaluate are not penalised twice. The step that crosses the
    budget finishes, then the epoch's validation runs and training stops. After `fit`,
    `seconds_at_epoch_end` and `val_accuracy` hold one point per epoch: accuracy against
    training time, for comparing models at equal cost. `steps` counts the batches seen by
    callbacks (with `steps_per_execution > 1`, one per execution). On a GPU the clock does
    not wait for queued work, so a step's time may be billed to the next validation.

        budget = training.TimeBudget(60)
        model.fit(train_ds.repeat(), steps_per_epoch=20, epochs=1000,
                  validation_data=val_ds, callbacks=[budget])

    Args:
        seconds: the training-time budget in seconds, > 0.
    """

    def __init__(self, seconds):
        super().__init__()
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0; received {seconds!r}.")
        self.seconds = float(seconds)
        self.used = 0.0
        self.seconds_at_epoch_end, self.val_accuracy, self.steps = [], [], 0
        self._start = None

    def on_train_begin(self, logs=None):
        self.used, self.steps = 0.0, 0
        self.seconds_at_epoch_end, self.val_accuracy = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def _elapsed(self):
        return self.used + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self._elapsed() >= self.seconds:
            self.model.stop_training = True

    def on_test_begin(self, logs=None):  # validation inside fit: stop the training clock
        if self._start is not None:
            self.used, self._start = self._elapsed(), None

    def on_epoch_end(self, epoch, logs=None):
        self.used, self._start = self._elapsed(), None
        self.seconds_at_epoch_end.append(self.used)
        self.val_accuracy.append(float((logs or {}).get("val_accuracy", np.nan)))
        if self.used >= self.seconds:
            self.model.stop_training = True


_PAUSES = {}


def _pause_for_test(point):
    """Lets a test kill the process at a named save step.

    With `CIFAR_TEST_PAUSE_AT=point:n` the n-th arrival at `point` ("backup", "best",
    "final") writes `point.paused` into `$CIFAR_TEST_PAUSE_DIR` and sleeps. Used only by
    `tests/test_resume.py`, which kills the process there; unset, this does nothing.
    """
    wanted = os.environ.get("CIFAR_TEST_PAUSE_AT", "")
    if not wanted.startswith(point + ":"):
        return
    _PAUSES[point] = _PAUSES.get(point, 0) + 1
    if _PAUSES[point] == int(wanted.split(":")[1]):
        Path(os.environ["CIFAR_TEST_PAUSE_DIR"], f"{point}.paused").write_text("")
        time.sleep(3600)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup survives a kill at any moment.

    Each epoch's weights go to a new file (`epoch3.weights.h5`); only then does
    `state.json`, written atomically, point at it, and only then are older weights
    files deleted. A kill while writing the weights leaves an unreferenced partial file
    and the previous state intact. A backup that still cannot be read (damaged on disk)
    is reported and discarded, and the run starts over instead of crashing.

    Args:
        backup_dir: the folder of the backup; `train` deletes it once the final model
            and history are written.
    """

    def __init__(self, backup_dir):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.folder = Path(backup_dir)

    @staticmethod
    def read_state(backup_dir):
        """The saved `{"epoch", "weights"}` of a backup folder, or None if there is none.

        Raises:
            ValueError: the state or the weights file it names is unreadable.
        """
        state_path = Path(backup_dir) / "state.json"
        if not state_path.exists():
            return None
        try:
            state = json.loads(state_path.read_text())
            epoch, weights = int(state["epoch"]), Path(backup_dir) / str(state["weights"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{state_path} is damaged ({type(err).__name__}: {err})") from None
        if weights.parent != Path(backup_dir) or not weights.is_file():
            raise ValueError(f"{state_path} names {weights.name}, which is missing")
        return {"epoch": epoch, "weights": weights}

    def _load_model(self):
        state = self.read_state(self.folder)
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(state["weights"]))
        self.model._initial_epoch = state["epoch"]

    def on_train_begin(self, logs=None):
        self._load_model()  # train() checked the backup before fit; a failure here is real

    def _save_model(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = self.folder / f"epoch{self._current_epoch}.weights.h5"
        self.model.save_weights(str(weights), overwrite=True)
        _pause_for_test("backup")
        atomic_write_json(self.folder / "state.json", {"epoch": self._current_epoch, "weights": weights.name})
        for old in self.folder.glob("epoch*.weights.h5"):
            if old != weights:
                old.unlink(missing_ok=True)


def _prepare_resume(backup_dir, history_csv):
    """Makes the history agree with the backup before a run; returns the best kept value.

    Rows of `history_csv` at or after the backup's epoch (written before a kill that the
    backup did not see) are dropped. With no usable backup (none, or unreadable: reported)
    the backup and the history are removed and the run starts over.

    Returns:
        The best validation accuracy of the epochs kept, or None.
    """
    try:
        state = AtomicBackupAndRestore.read_state(backup_dir)
    except ValueError as err:
        print(f"cannot resume: {err}; starting this run from its first epoch", file=sys.stderr)
        state = None
    if state is None:
        shutil.rmtree(backup_dir, ignore_errors=True)  # weights without a state: nothing to resume
        history_csv.unlink(missing_ok=True)
        return None
    if not history_csv.exists():
        return None
    history = read_history(history_csv)
    keep = [i for i, e in enumerate(history.get("epoch", [])) if int(e) < state["epoch"]]
    lines = history_csv.read_text().splitlines(keepends=True)
    atomic_write_text(history_csv, "".join(lines[:1] + [lines[1 + i] for i in keep]))
    values = [history["val_accuracy"][i] for i in keep if "val_accuracy" in history]
    return max(values) if values else None


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


class _StopOnNaN(keras.callbacks.Callback):
    """Keras's `TerminateOnNaN`, remembering where it stopped the run."""

    def __init__(self):
        super().__init__()
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.stopped_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


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


def read_history(path) -> dict:
    """Reads a `history.csv` written during training into per-epoch lists."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    history = {}
    for row in rows:
        for key, value in row.items():
            history.setdefault(key, []).append(float(value) if key != "epoch" else int(value))
    return history


def _build(recipe: Recipe, x_train, seed):
    builder = BUILDERS[recipe.arch]
    kwargs = dict(recipe.model_kwargs)
    if "whitening_sample" in inspect.signature(builder).parameters:
        rng = np.random.default_rng(seed)
        kwargs["whitening_sample"] = x_train[rng.choice(len(x_train), min(5000, len(x_train)), replace=False)]
    return builder(**kwargs)


def _fit_multi_worker(model, strategy, train_ds, val_ds, epochs, callbacks, verbose):
    """`model.fit` across machines (`MultiWorkerMirroredStrategy`), which Keras 3's fit fails.

    Keras 3.15's fit averages per-replica values in ways that break across workers (it asks
    the strategy to reduce a whole (x, y) batch, and scalars along an axis they lack;
    keras-team/keras#20585, still open). This loop does what fit does with Keras's own
    `train_step` and `test_step` on every replica (gradients are all-reduced inside them),
    averages the logs and, after each epoch, the batch-norm statistics across workers, and
    drives the same callbacks, starting from the epoch `BackupAndRestore` restored as fit
    does. `get_next_as_optional` keeps the workers in step when their shares of the data
    differ by a batch.

    Returns:
        The last epoch's logs.
    """
    import tensorflow as tf

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

    def passes(dataset, step, on_begin=None, on_end=None):
        logs, iterator, index = {}, iter(strategy.experimental_distribute_dataset(dataset)), 0
        while True:
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                return {name: float(value) for name, value in logs.items()}
            if on_begin:
                on_begin(index)
            logs = step(batch.get_value())
            if on_end:
                on_end(index, logs)
            index += 1

    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=int(train_ds.cardinality()),
    )
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    # BackupAndRestore sets this, as under fit, when it restored an interrupted run.
    start = getattr(model, "_initial_epoch", None) or 0
    for epoch in range(start, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = passes(train_ds, train_step, callback_list.on_train_batch_begin, callback_list.on_train_batch_end)
        for variable, value in zip(statistics, average_statistics()):
            variable.assign(value)
        model.reset_metrics()
        logs.update({f"val_{name}": value for name, value in passes(val_ds, test_step).items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
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
):
    """Trains a recipe end to end and writes its model and history.

    Calling it again with the same `output_dir` after an interruption resumes
    from the last completed epoch; after a finished run it starts afresh.

    Args:
        recipe: a recipe name (see `recipes.RECIPES`) or a `Recipe`.
        x_train: uint8 training images, shape `(N, 32, 32, 3)`.
        y_train: their labels, shape `(N,)` or `(N, 1)`.
        x_val: uint8 validation images, split from the training set.
        y_val: their labels.
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

    Returns:
        A `TrainResult`.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a name or a Recipe; received {type(recipe).__name__}.")
    if len(x_train) < 1 or len(x_val) < 1:
        raise ValueError(
            f"need training and validation images; received {len(x_train)} and {len(x_val)}."
        )
    setup = setup or device.setup_devices(verbose=False)
    multi_worker = device.is_multi_worker(setup.strategy)
    # Every worker of a cluster holds the same weights and saves them: the chief into
    # output_dir, the others into a folder of their own (output_dir may be shared).
    output_dir = Path(output_dir) / device.worker_folder(setup.strategy)
    output_dir.mkdir(parents=True, exist_ok=True)
    storage.remove_stale_temporaries(output_dir)  # left by a run killed mid-save
    backup_dir = output_dir / "backup"
    history_csv = output_dir / "history.csv"
    # A fresh run starts a new log; a resumed one keeps only the epochs its backup holds.
    best_so_far = _prepare_resume(backup_dir, history_csv)

    # Bit-for-bit repeatable on the CPU; on a GPU, deterministic kernels would cost speed.
    repro.set_seed(seed, deterministic=not setup.jit_compile)
    batch_size = recipe.batch_size
    drop = len(x_train) >= batch_size  # equal-sized steps, unless the data is tiny
    steps_per_epoch = len(x_train) // batch_size if drop else 1
    train_ds = data_lib.make_dataset(
        x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed,
        augment=pipeline_augment(recipe.augmentation, seed=seed) if recipe.augmentation != "none" else None,
        num_classes=data_lib.NUM_CLASSES, drop_remainder=drop,
    )
    val_ds = data_lib.make_dataset(x_val, y_val, batch_size=batch_size, num_classes=data_lib.NUM_CLASSES)

    with setup.strategy.scope():
        model = _build(recipe, x_train, seed)
        compile_model(model, recipe, steps_per_epoch, jit_compile=setup.jit_compile)

    stop_on_nan = _StopOnNaN()
    all_callbacks = [
        stop_on_nan,
        EpochLogger(),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        AtomicCheckpoint(output_dir / "best.keras", best=best_so_far),
        AtomicBackupAndRestore(backup_dir),
    ]
    if early_stopping_patience is not None:
        all_callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=early_stopping_patience)
        )
    if tensorboard:
        all_callbacks.append(keras.callbacks.TensorBoard(str(output_dir / "tensorboard")))
    all_callbacks.extend(callbacks)

    start = time.perf_counter()
    if multi_worker:
        _fit_multi_worker(model, setup.strategy, train_ds, val_ds, recipe.epochs, all_callbacks, verbose)
    else:
        model.fit(
            train_ds, validation_data=val_ds, epochs=recipe.epochs, callbacks=all_callbacks,
            verbose=verbose, shuffle=False,  # the dataset shuffles itself, with the seed
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
    _pause_for_test("final")
    atomic_save_model(model, output_dir / "final.keras")
    run = repro.run_info(
        seed=seed,
        recipe=recipe.name,
        epochs=len(history.get("epoch", [])),
        train_seconds=float(sum(history.get("epoch_seconds", []))),
        last_session_seconds=session_seconds,
        train_images=len(x_train),
        val_images=len(x_val),
        precision=setup.precision_policy,
        replicas=setup.num_replicas,
        best_val_accuracy=max(history.get("val_accuracy", [float("nan")])),
    )
    atomic_write_json(output_dir / "history.json", {"recipe": recipe.to_dict(), "run": run, "history": history})
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
    rate = PiecewiseLinear([0, steps], [learning_rate, 0.0]) if decay_to_zero else learning_rate
    model.compile(
        optimizer=keras.optimizers.SGD(rate, momentum=0.9, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    train_ds = data_lib.make_dataset(
        x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed,
        augment=pipeline_augment(augmentation, seed=seed) if augmentation != "none" else None,
        num_classes=data_lib.NUM_CLASSES,
    )
    val_ds = data_lib.make_dataset(x_val, y_val, batch_size=batch_size, num_classes=data_lib.NUM_CLASSES)
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
    model.compile(
        optimizer=keras.optimizers.SGD(start_lr, momentum=momentum, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
    )
    dataset = data_lib.make_dataset(
        x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed,
        num_classes=data_lib.NUM_CLASSES, drop_remainder=len(x_train) >= batch_size,
    ).repeat()
    losses, smoothed, average, best = [], [], 0.0, np.inf
    try:
        for step, (x, y) in zip(range(steps), dataset):
            model.optimizer.learning_rate = float(rates[step])
            loss = float(np.asarray(model.train_on_batch(x, y)).reshape(-1)[0])
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


def write_model_card(run_dir, model_path, test_accuracy, test_accuracy_tta, data_variant, command):
    """Writes MODEL_CARD.md next to a shipped model, from the run's history.json.

    Args:
        run_dir: the training output folder (holds history.json).
        model_path: the shipped `.keras` file.
        test_accuracy: accuracy on the 10,000 test images, no TTA.
        test_accuracy_tta: the same with flip test-time augmentation.
        data_variant: "offline copy" or "official".
        command: the command that reproduces the model.

    Returns:
        The card's path.
    """
    from cifar_utils.storage import atomic_write_text

    saved = json.loads((Path(run_dir) / "history.json").read_text())
    run, recipe = saved["run"], saved["recipe"]
    model_path = Path(model_path)
    size_mb = model_path.stat().st_size / 1e6
    card = f"""# {model_path.name}

The best model of the "{recipe['name']}" recipe ({recipe['arch']}), shipped so that notebooks
05-07 and `cifar-predict` work without training first.

| | |
|---|---|
| input | RGB images, 32 x 32, raw pixels 0-255 (the model normalises inside) |
| output | probabilities over {', '.join(data_lib.CLASS_NAMES)} |
| test accuracy ({data_variant}) | {test_accuracy:.4f} (with flip TTA: {test_accuracy_tta:.4f}) |
| best validation accuracy | {run['best_val_accuracy']:.4f} on {run['val_images']:,} images split from the training set |
| training data | {run['train_images']:,} CIFAR-10 training images ({data_variant}) |
| epochs, training time | {run['epochs']}, {run['train_seconds']:.0f} s |
| hardware | {run['cpu']} ({run['cpu_cores']} cores), GPUs: {', '.join(run['gpus']) or 'none'}, precision {run['precision']} |
| versions | Python {run['python']}, TensorFlow {run['tensorflow']}, Keras {run['keras']}, NumPy {run['numpy']} |
| seed | {run['seed']} |
| file size | {size_mb:.1f} MB |
| date | {run['date']} |

Reproduce: `{command}`

Use it (paths relative to this card's folder): `cifar-predict --model {model_path.name} IMAGE...`, or in Python
`cifar_utils.inference.Classifier("{model_path.name}")`, or with Keras alone after
importing the package's layers (they register custom layers such as `ScaledBias`):

```python
import keras
import cifar_utils.layers  # noqa: F401  registers the custom layers
model = keras.saving.load_model("{model_path.name}", safe_mode=True)
```

The test set was used once, after training, for the accuracies above; the
validation images chose nothing but the saved epoch. The offline copy's pixels are
JPEG re-encoded, so accuracy on the official test set will differ slightly.

Recipe:

```json
{json.dumps(recipe, indent=2)}
```
"""
    return atomic_write_text(model_path.parent / "MODEL_CARD.md", card)


def ship_model(model, run_dir, ship_dir, x_test, y_test, data_variant, command):
    """Copies a trained model into `ship_dir` with a model card.

    The test set is used here once, after training, for the card's accuracy.

    Args:
        model: the trained model (its run's history.json is in `run_dir`).
        run_dir: the training output folder.
        ship_dir: where the model and MODEL_CARD.md go, e.g. "models".
        x_test: the test images.
        y_test: the test labels.
        data_variant: "offline copy" or "official".
        command: the command that reproduces the model.

    Returns:
        The shipped model's path.
    """
    from cifar_utils import evaluation

    recipe = json.loads((Path(run_dir) / "history.json").read_text())["recipe"]
    target = Path(ship_dir) / f"{recipe['arch']}.keras"
    # An uncompiled float32 copy: the optimiser's state (as large as the weights) is not
    # shipped, and a model trained under mixed precision on a GPU runs fast on a CPU too.
    shipped = float32_copy(model)
    atomic_save_model(shipped, target)
    # The file's own accuracy, computed outside any distribution strategy (across machines,
    # only the first worker ships, and a prediction under the strategy would wait for the rest).
    acc = evaluation.accuracy(shipped, x_test, y_test)
    acc_tta = evaluation.accuracy(shipped, x_test, y_test, tta=True)
    write_model_card(run_dir, target, acc, acc_tta, data_variant, command)
    return target


def main(argv=None):
    """`cifar-train`: train a recipe from the command line, optionally ship the model."""
    import argparse
    import sys

    from cifar_utils.recipes import RECIPES

    parser = argparse.ArgumentParser(prog="cifar-train", description="Train a CIFAR-10 recipe.")
    parser.add_argument("--recipe", default="fast", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--data-dir", default=None, help="defaults to $CIFAR10_DIR, then Keras")
    parser.add_argument("--output-dir", default=None, help="defaults to runs/RECIPE")
    parser.add_argument("--ship", default=None, metavar="DIR",
                        help="copy the final model to DIR/ARCH.keras with a model card, "
                             "after one evaluation on the test set")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1; received {args.epochs}")
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
    output_dir = Path(args.output_dir or Path("runs") / args.recipe)
    try:
        (x, y), (x_test, y_test) = data_lib.load_cifar10(args.data_dir)
    except data_lib.CIFAR10DataError as err:
        parser.exit(2, f"cifar-train: error: {err}\n")
    (x_train, y_train), (x_val, y_val) = data_lib.split_train_val(x, y, args.val_fraction, seed=args.seed)
    try:
        result = train(recipe, x_train, y_train, x_val, y_val, output_dir=output_dir, seed=args.seed,
                       setup=setup)
    except TrainingDiverged as err:
        print(f"cifar-train: {err}", file=sys.stderr)
        return 1
    print(f"trained {recipe.name}: best validation accuracy {result.run['best_val_accuracy']:.4f}, "
          f"{result.run['train_seconds']:.0f} s; files in {result.output_dir}")
    if args.ship and chief:  # across machines, the chief alone ships
        source = data_lib.locate_cifar10(args.data_dir)
        variant = "offline copy" if source.path and data_lib.is_offline_copy(source.path) else "official"
        command = " ".join(["cifar-train"] + list(argv if argv is not None else sys.argv[1:]))
        target = ship_model(result.model, output_dir, args.ship, x_test, y_test, variant, command)
        print(f"shipped {target}; see {target.parent / 'MODEL_CARD.md'}")
    return 0
