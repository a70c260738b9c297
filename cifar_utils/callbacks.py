"""Keras callbacks of a training run: saving, resuming, logging, time budgets.

`training.train` uses all of them; notebooks use `TimeBudget` directly.

- `AtomicCheckpoint`: keeps the best model, saved atomically.
- `EpochLogger`: adds each epoch's wall time and learning rate to the logs.
- `TimeBudget`: stops `fit` after a number of seconds of training steps.
- `AtomicBackupAndRestore` and `prepare_resume`: resume a killed run from its
  last completed epoch.
- `StopOnNaN`: stops a run whose loss became NaN, remembering where.
- `Lookahead`: airbench's lookahead, a slow copy of the weights that the fast
  ones are pulled back to every few steps.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

import tensorflow as tf

from cifar_utils import paths
from cifar_utils.storage import atomic_save_model, atomic_write_json, atomic_write_text


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
        pause_for_test("best")  # after CSVLogger wrote the epoch's row, before any save
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

        budget = callbacks.TimeBudget(60)
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


def pause_for_test(point):
    """Lets a test kill the process at a named save step.

    With `CIFAR_TEST_PAUSE_AT=point:n` the n-th arrival at `point` ("backup", "best",
    "final") writes `point.paused` into `$CIFAR_TEST_PAUSE_DIR` and sleeps. Used only by
    `tests/test_resume.py`, which kills the process there; unset, this does nothing.
    """
    wanted = paths.env(paths.PAUSE_AT_ENV_VAR) or ""
    if not wanted.startswith(point + ":"):
        return
    _PAUSES[point] = _PAUSES.get(point, 0) + 1
    if _PAUSES[point] == int(wanted.split(":")[1]):
        Path(paths.env(paths.PAUSE_DIR_ENV_VAR), f"{point}.paused").write_text("")
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
        pause_for_test("backup")
        atomic_write_json(self.folder / "state.json", {"epoch": self._current_epoch, "weights": weights.name})
        for old in self.folder.glob("epoch*.weights.h5"):
            if old != weights:
                old.unlink(missing_ok=True)


def prepare_resume(backup_dir, history_csv):
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




class StopOnNaN(keras.callbacks.Callback):
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




def read_history(path) -> dict:
    """Reads a `history.csv` written during training into per-epoch lists.

    Keras's `CSVLogger` adds `val_` columns even to a run without validation, filled
    with "NA": columns with no value in any epoch are left out (a run without
    validation has no "val_accuracy"); an occasional "NA" reads as NaN.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    history = {}
    for row in rows:
        for key, value in row.items():
            number = (int(value) if key == "epoch" else float(value)) if value not in ("NA", "") else float("nan")
            history.setdefault(key, []).append(number)
    return {key: values for key, values in history.items()
            if not all(isinstance(v, float) and np.isnan(v) for v in values)}


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead: every `every` steps, average the weights into a slow copy and restart from it.

    After step `t` of `total_steps` (when `t` is a multiple of `every`), every float
    variable `w` of the model (weights and batch-norm statistics) and its slow copy
    `s` become `s + (1 - d) * (w - s)`, where `d = peak_decay * (t / total_steps)**3`:
    no averaging early, when the weights move far, and strong averaging late, which
    acts like an average of the last weights (airbench: +0.2 to 0.3 points). At the
    end of training the model takes the slow weights.

    Args:
        total_steps: optimiser steps the run will take.
        every: steps between updates. Defaults to 5 (airbench).
        peak_decay: the decay reached at the last step. Defaults to 0.95**5 (airbench).
    """

    def __init__(self, total_steps, every=5, peak_decay=0.95**5):
        super().__init__()
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
            raise ValueError(f"total_steps must be a whole number >= 1; received {total_steps!r}.")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be a whole number >= 1; received {every!r}.")
        if not 0 <= peak_decay < 1:
            raise ValueError(f"peak_decay must be in [0, 1); received {peak_decay!r}.")
        self.total_steps, self.every, self.peak_decay = int(total_steps), int(every), float(peak_decay)
        self.step = 0
        self._slow = None

    def on_train_begin(self, logs=None):
        self._variables = [v for v in self.model.variables if "float" in str(v.dtype)]
        self._slow = [tf.Variable(v.value, trainable=False) for v in self._variables]

        @tf.function
        def update(decay):
            for slow, fast in zip(self._slow, self._variables):
                slow.assign(slow + (1.0 - decay) * (tf.cast(fast.value, slow.dtype) - slow))
                fast.assign(tf.cast(slow, fast.dtype))

        self._update = update

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            fraction = min(self.step / self.total_steps, 1.0)
            self._update(tf.constant(self.peak_decay * fraction**3, tf.float32))

    def on_train_end(self, logs=None):
        if self._slow is not None:
            self._update(tf.constant(1.0, tf.float32))  # the model takes the slow weights
