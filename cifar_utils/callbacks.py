"""Keras callbacks of a training run: the best model, logging, time budgets, lookahead.

`training.default_callbacks` puts them together for `train`; notebooks use `TimeBudget`
directly. The backup that lets a killed run resume is `runs.EpochBackup`.

- `AtomicCheckpoint`: keeps the best model, saved atomically.
- `EpochLogger`: adds each epoch's wall time and learning rate to the logs.
- `TimeBudget`: stops `fit` after a number of seconds of training steps.
- `StopOnNaN`: stops a run whose loss became NaN, remembering where.
- `Lookahead`: airbench's lookahead, a slow copy of the weights that the fast
  ones are pulled back to every few steps.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar_utils import checks
from cifar_utils.storage import atomic_save_model


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
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        better = self.best is None or (
            value > self.best if self.mode == "max" else value < self.best
        )
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


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead: every `every` steps, average the weights into a slow copy and
    restart from it.

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
        total_steps = checks.whole_number(total_steps, "total_steps", minimum=1)
        every = checks.whole_number(every, "every", minimum=1)
        if not 0 <= peak_decay < 1:
            raise ValueError(f"peak_decay must be in [0, 1); received {peak_decay!r}.")
        self.total_steps, self.every, self.peak_decay = total_steps, every, float(peak_decay)
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
