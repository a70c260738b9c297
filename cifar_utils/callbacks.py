"""Keras callbacks of a training run: the best model, logging, time budgets, lookahead.

`training.default_callbacks` puts them together for `train`; notebooks use `TimeBudget`
directly. The backup that lets a killed run resume is `runs.EpochBackup`.

- `AtomicCheckpoint`: keeps the best model, saved atomically.
- `EpochLogger`: adds each epoch's wall time and learning rate to the logs.
- `TimeBudget`: stops `fit` after a number of seconds of training steps (or of
  wall time, as a deadline).
- `StopOnNaN`: stops a run whose loss became NaN, remembering where.
- `Lookahead`: airbench's lookahead, a slow copy of the weights that the fast
  ones are pulled back to every few steps.
- `FreezeLayers`: stops training some layers after a number of epochs (airbench's
  whitening bias learns for 3).
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

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

    With `wall_clock=True` it is a deadline instead: every second from the start of
    `fit` counts (validation and the other callbacks too), and training stops early
    enough that the step under way and the epoch's end (its validation and callbacks,
    timed at the epoch before) finish within `seconds`. `train(budget_min=...)` uses it.

        budget = callbacks.TimeBudget(60)
        model.fit(train_ds, epochs=1000, validation_data=val_ds, callbacks=[budget])

    Args:
        seconds: the training-time budget in seconds, > 0.
        wall_clock: count all of `fit`'s time and stop before the budget would be
            crossed. Defaults to False: training steps only, stop after crossing.
    """

    def __init__(self, seconds, wall_clock=False):
        super().__init__()
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0; received {seconds!r}.")
        self.seconds = float(seconds)
        self.wall_clock = bool(wall_clock)
        self.used = 0.0
        self.seconds_at_epoch_end, self.val_accuracy, self.steps = [], [], 0
        self._start = None

    def on_train_begin(self, logs=None):
        self.used, self.steps = 0.0, 0
        self.seconds_at_epoch_end, self.val_accuracy = [], []
        self._train_start = self._last_step_end = time.perf_counter()
        # The longest step, end of epoch (last step to next epoch) and tail of an end of
        # epoch (this callback's on_epoch_end to the next epoch: the callbacks after it) seen.
        self._step, self._epoch_end, self._tail = 0.0, 0.0, 0.0
        self._epoch_end_seen = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = now = time.perf_counter()
        if self.steps:  # the previous epoch's end: from its last step to now
            self._epoch_end = max(self._epoch_end, now - self._last_step_end)
        if self._epoch_end_seen is not None:
            self._tail = max(self._tail, now - self._epoch_end_seen)
        self._last_step_end = now

    def _elapsed(self):
        if self.wall_clock:
            return time.perf_counter() - self._train_start
        return self.used + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def _would_overrun(self):
        """Wall clock: whether one more step and an epoch's end would cross the budget."""
        return self._elapsed() + self._step + self._epoch_end >= self.seconds

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        now = time.perf_counter()
        if self.wall_clock:
            if self.steps > 1:  # the first step also builds the graph: not a step's time
                self._step = max(self._step, now - self._last_step_end)
            self._last_step_end = now
            if self._would_overrun():
                self.model.stop_training = True
        elif self._elapsed() >= self.seconds:
            self.model.stop_training = True

    def on_test_begin(self, logs=None):  # validation inside fit: stop the training clock
        if self._start is not None and not self.wall_clock:
            self.used, self._start = self._elapsed(), None

    def on_epoch_end(self, epoch, logs=None):
        self.used, self._start = self._elapsed(), None
        self.seconds_at_epoch_end.append(self.used)
        self.val_accuracy.append(float((logs or {}).get("val_accuracy", np.nan)))
        if self.used >= self.seconds:
            self.model.stop_training = True
        elif self.wall_clock:
            # Another epoch must fit after the rest of this one's end (the callbacks that
            # run after this one, such as checkpoints); the end of epoch is at least as
            # long as this one has been so far.
            self._epoch_end_seen = now = time.perf_counter()
            epoch_end = max(self._epoch_end, now - self._last_step_end)
            if now - self._train_start + self._tail + self._step + epoch_end >= self.seconds:
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
        self._slow = [ops.copy(v.value) for v in self._variables]

    def _update(self, decay):
        # On JAX, fit keeps the weights out of the model's variables between its steps: bring
        # them back, so that they can be read, and what is assigned is what the next step takes.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        keep = ops.convert_to_tensor(np.float32(1.0) - decay)  # float32, as airbench computes it
        for i, fast in enumerate(self._variables):
            share = ops.cast(keep, self._slow[i].dtype)
            slow = self._slow[i] + share * (fast.value - self._slow[i])
            self._slow[i] = slow
            fast.assign(ops.copy(slow))  # a copy: JAX's next step may donate (free) it

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            fraction = min(self.step / self.total_steps, 1.0)
            self._update(np.float32(self.peak_decay * fraction**3))

    def on_train_end(self, logs=None):
        if self._slow is not None:
            self._update(np.float32(1.0))  # the model takes the slow weights


class FreezeLayers(keras.callbacks.Callback):
    """Stops training the named layers from epoch `epochs` on (counting from 0).

    airbench lets its whitening layer's bias learn for the first 3 epochs, then
    freezes it: early on it recentres the whitened inputs, later it would only chase
    noise. Setting `layer.trainable = False` mid-`fit` needs a new training step,
    so the callback asks Keras for one (`make_train_function(force=True)`); from
    then on neither gradients, momentum nor weight decay touch those layers. A run
    resumed after epoch `epochs` freezes them before its first step. When `fit` ends
    they are trainable again, as they were built: the model saves and loads (with its
    optimiser's state) like any other, and a later `fit` trains them.

    On JAX, Keras's optimiser cannot change its variables mid-`fit`, so the layers stay
    trainable and their weights are put back after every step to what they were before it:
    what the optimiser did to them is undone, and callbacks after this one (`Lookahead`)
    see them as on TensorFlow. Batch-norm layers are the exception: their moving statistics
    still change there (the course freezes only the whitening bias this way).

        model.fit(train_ds, epochs=10, callbacks=[FreezeLayers(["whiten_bias"], epochs=3)])

    Args:
        layer_names: names of the layers to freeze.
        epochs: epochs they train before being frozen, >= 0.
    """

    def __init__(self, layer_names, epochs):
        super().__init__()
        if isinstance(layer_names, str) or not layer_names:
            raise ValueError(f"layer_names must be a list of names; received {layer_names!r}.")
        self.layer_names = list(layer_names)
        self.epochs = checks.whole_number(epochs, "epochs")
        self._frozen = None  # JAX: the frozen layers' weights
        self._before = None  # JAX: their values before the step under way

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.epochs:
            return
        layers = [self.model.get_layer(name) for name in self.layer_names]
        if keras.backend.backend() == "jax":
            self._frozen = [v for layer in layers for v in layer.trainable_weights]
            return
        if any(layer.trainable for layer in layers):
            for layer in layers:
                layer.trainable = False
            self.model.make_train_function(force=True)

    def on_train_batch_begin(self, batch, logs=None):
        if self._frozen:
            self.model.jax_state_sync()  # the weights back in the variables (see Lookahead)
            self._before = [ops.copy(v.value) for v in self._frozen]

    def on_train_batch_end(self, batch, logs=None):
        if self._frozen:
            self.model.jax_state_sync()
            for variable, value in zip(self._frozen, self._before):
                variable.assign(value)

    def on_train_end(self, logs=None):
        self._frozen = None
        for name in self.layer_names:
            self.model.get_layer(name).trainable = True
