"""cifar_utils.callbacks: the best-model checkpoint, the time budget, the epoch logger, NaN
stops, and the helpers that make a resumed run's history agree with its backup.

Killing a real training process at each save step and resuming it is tested in
test_resume.py and test_training.py.
"""

import time

import keras
import numpy as np
import pytest

from cifar_utils import callbacks, paths, storage
from cifar_utils.callbacks import AtomicBackupAndRestore, AtomicCheckpoint, StopOnNaN, TimeBudget


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
    history = model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[callbacks.EpochLogger()]).history
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
    class Slow(keras.callbacks.Callback):  # each training step costs 50 ms, each validation batch 100 ms
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
    model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), validation_batch_size=8, verbose=0)
    budget = TimeBudget(0.5)

    class Clock(keras.callbacks.Callback):  # the budget's clock after each step, as it decided on it
        seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(budget._elapsed())

    start = time.perf_counter()
    history = model.fit(x, y, batch_size=8, epochs=100, validation_data=(x, y), validation_batch_size=8,
                        callbacks=[Slow(), budget, Clock()], verbose=0)
    wall = time.perf_counter() - start
    epochs_run = len(history.history["loss"])
    assert 1 <= epochs_run < 100  # stopped by the budget, not by the epoch count
    # The step that crosses 0.5 s finishes, then training stops: the first crossing, whatever one
    # slow step (a busy machine once stalled one for 1.3 s) adds. Every step that ran was counted.
    facts = (f"used {budget.used:.3f} s, steps {budget.steps}, epochs {epochs_run}, wall {wall:.3f} s, "
             f"clock after each step {[round(t, 3) for t in Clock.seen]}")
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


# --- resuming: the backup's state, the history, pauses for tests --------------------------

HEADER = "epoch,accuracy,loss,val_accuracy,val_loss\n"


def _history(path, val_accuracies):
    rows = [f"{i},0.5,1.0,{v},1.0\n" for i, v in enumerate(val_accuracies)]
    path.write_text(HEADER + "".join(rows))


def _backup(folder, epoch):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"epoch{epoch}.weights.h5").write_bytes(b"w")
    storage.atomic_write_json(folder / "state.json", {"epoch": epoch, "weights": f"epoch{epoch}.weights.h5"})


def test_read_history_reads_epochs_as_ints_and_the_rest_as_floats(tmp_path):
    _history(tmp_path / "history.csv", [0.25, 0.5])
    history = callbacks.read_history(tmp_path / "history.csv")
    assert history == {"epoch": [0, 1], "accuracy": [0.5, 0.5], "loss": [1.0, 1.0],
                       "val_accuracy": [0.25, 0.5], "val_loss": [1.0, 1.0]}
    assert all(type(e) is int for e in history["epoch"])


def test_read_state(tmp_path):
    assert AtomicBackupAndRestore.read_state(tmp_path / "none") is None
    _backup(tmp_path / "b", 2)
    assert AtomicBackupAndRestore.read_state(tmp_path / "b") == {"epoch": 2, "weights": tmp_path / "b" / "epoch2.weights.h5"}
    (tmp_path / "b" / "epoch2.weights.h5").unlink()
    with pytest.raises(ValueError, match="names epoch2.weights.h5, which is missing"):
        AtomicBackupAndRestore.read_state(tmp_path / "b")
    (tmp_path / "outside.h5").write_bytes(b"w")
    storage.atomic_write_json(tmp_path / "b" / "state.json", {"epoch": 1, "weights": "../outside.h5"})
    with pytest.raises(ValueError, match="which is missing"):  # only files inside the backup folder
        AtomicBackupAndRestore.read_state(tmp_path / "b")
    (tmp_path / "b" / "state.json").write_text('{"epoch": "two"}')
    with pytest.raises(ValueError, match="state.json is damaged"):
        AtomicBackupAndRestore.read_state(tmp_path / "b")


def test_prepare_resume_drops_epochs_the_backup_did_not_see(tmp_path):
    _backup(tmp_path / "backup", 2)  # epochs 0 and 1 are in the backup
    _history(tmp_path / "history.csv", [0.3, 0.6, 0.9])  # epoch 2 was logged, then the run was killed
    best = callbacks.prepare_resume(tmp_path / "backup", tmp_path / "history.csv")
    assert best == 0.6  # the best of the epochs kept, not 0.9
    assert callbacks.read_history(tmp_path / "history.csv")["epoch"] == [0, 1]
    assert (tmp_path / "backup" / "state.json").is_file()


def test_prepare_resume_with_a_backup_but_no_history(tmp_path):
    _backup(tmp_path / "backup", 1)
    assert callbacks.prepare_resume(tmp_path / "backup", tmp_path / "history.csv") is None
    assert (tmp_path / "backup" / "state.json").is_file()


def test_prepare_resume_without_a_backup_starts_over(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "epoch3.weights.h5").write_bytes(b"w")  # weights, but no state
    _history(tmp_path / "history.csv", [0.3])
    assert callbacks.prepare_resume(tmp_path / "backup", tmp_path / "history.csv") is None
    assert not (tmp_path / "backup").exists() and not (tmp_path / "history.csv").exists()


def test_prepare_resume_discards_a_damaged_backup_and_says_so(tmp_path, capsys):
    _backup(tmp_path / "backup", 2)
    (tmp_path / "backup" / "state.json").write_bytes(b"")
    _history(tmp_path / "history.csv", [0.3, 0.6])
    assert callbacks.prepare_resume(tmp_path / "backup", tmp_path / "history.csv") is None
    assert "cannot resume" in capsys.readouterr().err
    assert not (tmp_path / "backup").exists() and not (tmp_path / "history.csv").exists()


def test_pause_for_test_pauses_only_where_and_when_asked(tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(callbacks, "_PAUSES", {})
    monkeypatch.setattr(callbacks.time, "sleep", sleeps.append)
    monkeypatch.delenv(paths.PAUSE_AT_ENV_VAR, raising=False)
    callbacks.pause_for_test("best")  # unset: nothing
    monkeypatch.setenv(paths.PAUSE_AT_ENV_VAR, "best:2")
    monkeypatch.setenv(paths.PAUSE_DIR_ENV_VAR, str(tmp_path))
    callbacks.pause_for_test("backup")  # another point
    callbacks.pause_for_test("best")  # its first arrival
    assert sleeps == [] and not list(tmp_path.iterdir())
    callbacks.pause_for_test("best")  # the second: the marker, then the long sleep
    assert (tmp_path / "best.paused").is_file() and sleeps == [3600]


# --- Lookahead ------------------------------------------------------------------------------


def test_lookahead_pulls_the_weights_back_to_a_slow_average():
    model = _tiny_model()
    w0 = [np.full(v.shape, 1.0, "float32") for v in model.weights]
    model.set_weights(w0)
    look = callbacks.Lookahead(total_steps=10, every=5, peak_decay=0.5)
    look.set_model(model)
    look.on_train_begin()
    model.set_weights([np.full(v.shape, 3.0, "float32") for v in model.weights])  # "training" moved them
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
    model.fit(np.ones((12, 2)), np.ones((12, 1)), batch_size=2, epochs=1, verbose=0, callbacks=[look])
    slow = [s.numpy() for s in look._slow]
    assert all(np.allclose(w, s) for w, s in zip(model.get_weights(), slow))
    for kwargs, match in (({"total_steps": 0}, "total_steps"), ({"total_steps": 5, "every": 0}, "every"),
                          ({"total_steps": 5, "peak_decay": 1.0}, "peak_decay")):
        with pytest.raises(ValueError, match=match):
            callbacks.Lookahead(**kwargs)
