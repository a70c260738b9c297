"""cifar_utils.callbacks: the best-model checkpoint, the time budget, the epoch logger, NaN
stops and lookahead.

The run folder and resuming are tested in test_runs.py; killing a real training process at
each save step and resuming it in test_resume.py and test_training.py.
"""

import time

import keras
import numpy as np
import pytest

from cifar_utils import callbacks
from cifar_utils.callbacks import AtomicCheckpoint, FreezeLayers, StopOnNaN, TimeBudget


def _tiny_model():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


# --- AtomicCheckpoint ---------------------------------------------------------------------


def test_atomic_checkpoint_keeps_the_best(tmp_path):
    model = _tiny_model()
    callback = AtomicCheckpoint(tmp_path / "best.keras")
    callback.set_model(model)
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    first = (tmp_path / "best.keras").stat().st_mtime_ns
    time.sleep(0.01)
    callback.on_epoch_end(1, {"val_accuracy": 0.4})  # worse: not saved
    assert (tmp_path / "best.keras").stat().st_mtime_ns == first and callback.best == 0.5
    callback.on_epoch_end(2, {"val_accuracy": 0.6})
    assert callback.best == 0.6 and (tmp_path / "best.keras").stat().st_mtime_ns != first
    callback.on_epoch_end(3, {"loss": 1.0})  # nothing to compare: nothing saved
    assert callback.best == 0.6


def test_atomic_checkpoint_minimises_and_resumes_from_an_earlier_best(tmp_path):
    callback = AtomicCheckpoint(tmp_path / "best.keras", monitor="val_loss", mode="min", best=0.3)
    callback.set_model(_tiny_model())
    callback.on_epoch_end(0, {"val_loss": 0.4})  # worse than the earlier run's best
    assert not (tmp_path / "best.keras").exists() and callback.best == 0.3
    callback.on_epoch_end(1, {"val_loss": 0.2})
    assert (tmp_path / "best.keras").is_file() and callback.best == 0.2
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'; received 'up'"):
        AtomicCheckpoint(tmp_path / "x.keras", mode="up")


# --- EpochLogger, StopOnNaN ---------------------------------------------------------------


def test_epoch_logger_adds_wall_time_and_learning_rate():
    model = _tiny_model()
    model.compile(keras.optimizers.SGD(0.125), "mse")
    x = np.zeros((8, 2), "float32")
    history = model.fit(
        x, x[:, :1], epochs=2, verbose=0, callbacks=[callbacks.EpochLogger()]
    ).history
    assert history["learning_rate"] == [0.125, 0.125]
    assert len(history["epoch_seconds"]) == 2 and all(0 < s < 60 for s in history["epoch_seconds"])


def test_stop_on_nan_stops_and_remembers_where():
    model = _tiny_model()
    callback = StopOnNaN()
    callback.set_model(model)
    model.stop_training = False
    callback.on_epoch_begin(2)
    callback.on_train_batch_end(0, {"loss": 0.5})
    callback.on_train_batch_end(1, {})
    assert callback.stopped_at is None and not model.stop_training
    callback.on_train_batch_end(4, {"loss": float("inf")})
    assert callback.stopped_at == (3, 5) and model.stop_training  # epoch and batch counted from 1


def test_stop_on_nan_stops_fit():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(1e30), "mse")
    x = np.full((64, 1), 1e10, "float32")
    callback = StopOnNaN()
    history = model.fit(x, -x, batch_size=8, epochs=3, verbose=0, callbacks=[callback]).history
    assert callback.stopped_at is not None and callback.stopped_at[0] == 1
    assert len(history["loss"]) == 1  # stopped in the first epoch


# --- TimeBudget ---------------------------------------------------------------------------


def test_time_budget_stops_fit_and_records_accuracy_against_time():
    class Slow(
        keras.callbacks.Callback
    ):  # each training step costs 50 ms, each validation batch 100 ms
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.05)

        def on_test_batch_end(self, batch, logs=None):
            time.sleep(0.1)

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    # Trace the train and test steps first: the first step of a fresh model also builds the
    # graph (1.5 s on a busy CI machine), which would overshoot any short budget.
    model.fit(
        x, y, batch_size=8, epochs=1, validation_data=(x, y), validation_batch_size=8, verbose=0
    )
    budget = TimeBudget(0.5)

    class Clock(
        keras.callbacks.Callback
    ):  # the budget's clock after each step, as it decided on it
        seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(budget._elapsed())

    start = time.perf_counter()
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=100,
        validation_data=(x, y),
        validation_batch_size=8,
        callbacks=[Slow(), budget, Clock()],
        verbose=0,
    )
    wall = time.perf_counter() - start
    epochs_run = len(history.history["loss"])
    assert 1 <= epochs_run < 100  # stopped by the budget, not by the epoch count
    # The step that crosses 0.5 s finishes, then training stops: the first crossing, whatever one
    # slow step (a busy machine once stalled one for 1.3 s) adds. Every step that ran was counted.
    facts = (
        f"used {budget.used:.3f} s, steps {budget.steps}, epochs {epochs_run}, wall {wall:.3f} s, "
        f"clock after each step {[round(t, 3) for t in Clock.seen]}"
    )
    assert len(Clock.seen) == budget.steps, facts
    assert all(t < 0.5 for t in Clock.seen[:-1]), facts
    # It crossed at the last step, or after an epoch's last step, in the few milliseconds
    # between that step and the epoch's validation (which the clock also counts).
    assert Clock.seen[-1] >= 0.5 or budget.steps % 8 == 0, facts
    assert 0.5 <= budget.used < Clock.seen[-1] + 0.1, facts
    assert 8 * (epochs_run - 1) < budget.steps <= 8 * epochs_run, facts
    # validation (8 batches x 100 ms per epoch) is not billed to the training budget
    assert wall - budget.used >= 0.75 * epochs_run, facts
    assert len(budget.seconds_at_epoch_end) == len(budget.val_accuracy) == epochs_run
    assert budget.seconds_at_epoch_end == sorted(budget.seconds_at_epoch_end)
    assert all(0.0 <= a <= 1.0 for a in budget.val_accuracy)
    with pytest.raises(ValueError, match="received 0"):
        TimeBudget(0)


def test_time_budget_on_the_wall_clock_ends_fit_before_the_deadline():
    """As `train(budget_min=...)` uses it: validation and callbacks count, and fit stops
    early enough that the step under way and the epoch's end fit in the budget."""

    class Slow(keras.callbacks.Callback):  # steps of 50 ms, epoch ends of 150 ms
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.05)

        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.15)

        def on_train_end(self, logs=None):
            self.clock_at_end = budget._elapsed()

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])

    def endless():  # an endless stream, as train() has: no iterator to start at each epoch
        while True:
            for i in range(0, 64, 8):
                yield x[i : i + 8], y[i : i + 8]

    data = endless()
    model.fit(data, steps_per_epoch=8, epochs=1, shuffle=False, verbose=0)  # trace first
    budget = TimeBudget(1.5, wall_clock=True)
    start = time.perf_counter()
    slow = Slow()
    history = model.fit(
        data, steps_per_epoch=8, epochs=100, shuffle=False, callbacks=[budget, slow], verbose=0
    )
    wall = time.perf_counter() - start
    epochs_run = len(history.history["loss"])
    facts = (
        f"wall {wall:.3f} s, clock at the end {slow.clock_at_end:.3f} s, epochs {epochs_run}, "
        f"steps {budget.steps}"
    )
    # Each epoch takes about 8 x 50 ms + 150 ms = 0.55 s: two whole ones and part of a third.
    assert 2 <= epochs_run < 100, facts
    # The deadline held on its clock (from fit's start of training to its end), epoch ends
    # included; fit's own set-up before that clock starts takes milliseconds.
    assert slow.clock_at_end < 1.5, facts
    assert wall < 1.5 + 0.25, facts
    assert wall > 1.5 - 2 * (0.05 + 0.15) - 0.2, facts  # and it did not stop far too early
    assert budget.seconds_at_epoch_end[-1] == pytest.approx(budget.used)


def test_time_budget_on_the_wall_clock_counts_the_callbacks_after_it():
    """A checkpoint after TimeBudget in the list runs its on_epoch_end after the budget's
    decision: the decision to start another epoch must leave room for it."""

    class Checkpoint(keras.callbacks.Callback):  # steps of 10 ms, 300 ms saving each epoch
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.01)

        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.3)

        def on_train_end(self, logs=None):
            self.clock_at_end = budget._elapsed()

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trace first
    budget = TimeBudget(1.0, wall_clock=True)
    checkpoint = Checkpoint()
    history = model.fit(x, y, batch_size=8, epochs=100, callbacks=[budget, checkpoint], verbose=0)
    # An epoch is about 8 x 10 ms + 300 ms: two fit, a third would end near 1.15 s.
    facts = f"clock at the end {checkpoint.clock_at_end:.3f} s, epochs {len(history.epoch)}"
    assert checkpoint.clock_at_end < 1.0, facts
    assert len(history.epoch) >= 2, facts


def test_freeze_layers_stops_training_a_layer_after_some_epochs():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2, name="first"), keras.layers.Dense(1, name="out")]
    )
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(keras.ops.convert_to_numpy(model.get_layer("first").kernel).copy())

    x = np.random.default_rng(0).normal(size=(32, 2)).astype("float32")
    y = x.sum(axis=1, keepdims=True) * 3
    out_before = keras.ops.convert_to_numpy(model.get_layer("out").kernel).copy()
    model.fit(x, y, epochs=4, verbose=0, callbacks=[FreezeLayers(["first"], epochs=2), Watch()])
    assert not np.allclose(seen[0], seen[1])  # trained in epochs 0 and 1
    # frozen from epoch 2 on: neither gradients nor momentum move it
    np.testing.assert_array_equal(seen[1], seen[2])
    np.testing.assert_array_equal(seen[2], seen[3])
    assert model.get_layer("first").trainable  # trainable again once fit is over
    assert not np.allclose(out_before, keras.ops.convert_to_numpy(model.get_layer("out").kernel))
    with pytest.raises(ValueError, match="layer_names must be a list of names; received 'first'"):
        FreezeLayers("first", 2)
    with pytest.raises(ValueError, match="epochs must be a whole number >= 0; received -1"):
        FreezeLayers(["first"], -1)


# --- Lookahead ------------------------------------------------------------------------------


def test_lookahead_pulls_the_weights_back_to_a_slow_average():
    model = _tiny_model()
    w0 = [np.full(v.shape, 1.0, "float32") for v in model.weights]
    model.set_weights(w0)
    look = callbacks.Lookahead(total_steps=10, every=5, peak_decay=0.5)
    look.set_model(model)
    look.on_train_begin()
    model.set_weights(
        [np.full(v.shape, 3.0, "float32") for v in model.weights]
    )  # "training" moved them
    for batch in range(4):
        look.on_train_batch_end(batch)
    assert all(np.allclose(w, 3.0) for w in model.get_weights())  # no update before step 5
    look.on_train_batch_end(4)
    decay = 0.5 * (5 / 10) ** 3  # 0.0625: the slow copy moves 93.75% of the way
    expected = 1.0 + (1 - decay) * (3.0 - 1.0)
    assert all(np.allclose(w, expected) for w in model.get_weights())
    model.set_weights([np.full(v.shape, 9.0, "float32") for v in model.weights])
    look.on_train_end()  # the model ends on the slow weights, not the last fast ones
    assert all(np.allclose(w, expected) for w in model.get_weights())


def test_lookahead_in_fit_and_bad_arguments():
    model = _tiny_model()
    model.compile("sgd", "mse")
    look = callbacks.Lookahead(total_steps=6, every=2)
    model.fit(
        np.ones((12, 2)), np.ones((12, 1)), batch_size=2, epochs=1, verbose=0, callbacks=[look]
    )
    slow = [keras.ops.convert_to_numpy(s) for s in look._slow]
    assert all(np.allclose(w, s) for w, s in zip(model.get_weights(), slow))
    for kwargs, match in (
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 5, "every": 0}, "every"),
        ({"total_steps": 5, "peak_decay": 1.0}, "peak_decay"),
    ):
        with pytest.raises(ValueError, match=match):
            callbacks.Lookahead(**kwargs)
