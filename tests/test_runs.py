"""cifar_utils.runs: a run folder's backup state, its history, and what `prepare` keeps.

Killing a real training process at each save step and resuming it is tested in
test_resume.py and test_training.py.
"""

import keras
import numpy as np
import pytest

from cifar_utils import recipes, runs, storage

HEADER = "epoch,accuracy,loss,val_accuracy,val_loss\n"


def _history(path, val_accuracies):
    rows = [f"{i},0.5,1.0,{v},1.0\n" for i, v in enumerate(val_accuracies)]
    path.write_text(HEADER + "".join(rows))


ASKED = {"recipe": "baseline_cnn", "budget_min": None}


def _backup(folder, epoch):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"epoch{epoch}.weights.h5").write_bytes(b"w")
    storage.atomic_write_json(
        folder / "state.json", {"epoch": epoch, "weights": f"epoch{epoch}.weights.h5"}
    )
    recipe = recipes.get_recipe("baseline_cnn").to_dict()
    storage.atomic_write_json(folder / "settings.json", {"asked": ASKED, "recipe": recipe})


def test_read_history_reads_epochs_as_ints_and_the_rest_as_floats(tmp_path):
    _history(tmp_path / "history.csv", [0.25, 0.5])
    history = runs.read_history(tmp_path / "history.csv")
    assert history == {
        "epoch": [0, 1],
        "accuracy": [0.5, 0.5],
        "loss": [1.0, 1.0],
        "val_accuracy": [0.25, 0.5],
        "val_loss": [1.0, 1.0],
    }
    assert all(type(e) is int for e in history["epoch"])


def test_read_state(tmp_path):
    assert runs.read_backup_state(tmp_path / "none") is None
    _backup(tmp_path / "b", 2)
    assert runs.read_backup_state(tmp_path / "b") == {
        "epoch": 2,
        "weights": tmp_path / "b" / "epoch2.weights.h5",
    }
    (tmp_path / "b" / "epoch2.weights.h5").unlink()
    with pytest.raises(ValueError, match="names epoch2.weights.h5, which is missing"):
        runs.read_backup_state(tmp_path / "b")
    (tmp_path / "outside.h5").write_bytes(b"w")
    storage.atomic_write_json(
        tmp_path / "b" / "state.json", {"epoch": 1, "weights": "../outside.h5"}
    )
    with pytest.raises(ValueError, match="which is missing"):  # only files inside the backup folder
        runs.read_backup_state(tmp_path / "b")
    (tmp_path / "b" / "state.json").write_text('{"epoch": "two"}')
    with pytest.raises(ValueError, match="state.json is damaged"):
        runs.read_backup_state(tmp_path / "b")


def test_prepare_drops_epochs_the_backup_did_not_see(tmp_path):
    _backup(tmp_path / "backup", 2)  # epochs 0 and 1 are in the backup
    _history(
        tmp_path / "history.csv", [0.3, 0.6, 0.9]
    )  # epoch 2 was logged, then the run was killed
    run = runs.RunFolder(tmp_path)
    run.prepare()
    assert run.best_so_far == 0.6  # the best of the epochs kept, not 0.9
    assert run.kept_history["epoch"] == [0, 1] and run.kept_history["val_accuracy"] == [0.3, 0.6]
    assert runs.read_history(tmp_path / "history.csv")["epoch"] == [0, 1]
    assert (tmp_path / "backup" / "state.json").is_file()


def test_prepare_with_a_backup_but_no_history(tmp_path):
    _backup(tmp_path / "backup", 1)
    run = runs.RunFolder(tmp_path)
    run.prepare()
    assert run.best_so_far is None and run.kept_history == {}
    assert (tmp_path / "backup" / "state.json").is_file()


def test_prepare_without_a_backup_starts_over(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "epoch3.weights.h5").write_bytes(b"w")  # weights, but no state
    _history(tmp_path / "history.csv", [0.3])
    run = runs.RunFolder(tmp_path)
    run.prepare()
    assert run.best_so_far is None and run.kept_history == {}
    assert not (tmp_path / "backup").exists() and not (tmp_path / "history.csv").exists()


def test_prepare_discards_a_damaged_backup_and_says_so(tmp_path, capsys):
    _backup(tmp_path / "backup", 2)
    (tmp_path / "backup" / "state.json").write_bytes(b"")
    _history(tmp_path / "history.csv", [0.3, 0.6])
    run = runs.RunFolder(tmp_path)
    run.prepare()
    assert run.best_so_far is None and run.kept_history == {}
    assert "cannot resume" in capsys.readouterr().err
    assert not (tmp_path / "backup").exists() and not (tmp_path / "history.csv").exists()


def test_prepare_without_resume_starts_over_even_with_a_backup(tmp_path):
    _backup(tmp_path / "backup", 2)
    _history(tmp_path / "history.csv", [0.3, 0.6])
    run = runs.RunFolder(tmp_path)
    run.prepare(resume=False)
    assert not (tmp_path / "backup").exists() and not (tmp_path / "history.csv").exists()


def test_the_backup_callback_writes_state_after_weights_and_resume_restores_them(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 2)), np.zeros((8, 1))
    run = runs.RunFolder(tmp_path)
    run.prepare()
    run.settle(ASKED, recipes.get_recipe("baseline_cnn"))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[run.backup_callback()])
    state = runs.read_backup_state(run.backup_dir)
    assert state["epoch"] == 2 and [p.name for p in run.backup_dir.glob("*.h5")] == [
        "epoch2.weights.h5"
    ]
    fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    fresh.compile(optimizer="sgd", loss="mse")
    again = runs.RunFolder(tmp_path)
    again.prepare()
    assert again.resume(fresh) == 2
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations)  # optimiser state too


def test_full_history_puts_this_sessions_epochs_after_the_kept_ones(tmp_path):
    _backup(tmp_path / "backup", 2)
    _history(tmp_path / "history.csv", [0.3, 0.6, 0.9])
    run = runs.RunFolder(tmp_path)
    run.prepare()
    session = {"loss": [0.5], "accuracy": [0.7], "val_loss": [0.4], "val_accuracy": [0.8]}
    full = run.full_history(session, initial_epoch=2)
    assert full["epoch"] == [0, 1, 2] and full["val_accuracy"] == [0.3, 0.6, 0.8]
    with pytest.raises(ValueError, match="damaged"):
        (tmp_path / "backup" / "state.json").write_text("{")
        runs.read_backup_state(tmp_path / "backup")


# --- issue 23: two runs in one folder, a damaged history, a changed recipe ---------------------


def test_a_second_run_in_the_same_folder_is_refused_at_once_naming_the_holder(tmp_path):
    with runs.RunFolder(tmp_path) as first:
        assert first.lock_file.exists()
        with pytest.raises(runs.RunInUse, match=r"in use by another training run \(pid \d+ on "):
            with runs.RunFolder(tmp_path):
                pass
    assert (tmp_path / ".lock").read_text() == ""  # released: no holder named
    with runs.RunFolder(tmp_path):  # free again
        pass


@pytest.mark.parametrize(
    "tail, kept",
    [
        ("3,0.5,1.", [0, 1, 2]),  # a row cut short by a power loss
        ("\0\0\0\0\0\0\n", [0, 1, 2]),  # NUL bytes where the last row was
        (HEADER + "0,0.5,1.0,0.3,1.0\n", [0, 1, 2]),  # a second run started the file again
        ("3,0.5,x,0.7,1.0\n4,0.5,1.0,0.8,1.0\n", [0, 1, 2]),  # not a number: the rest goes too
    ],
)
def test_a_damaged_history_loses_its_tail_with_a_warning(tmp_path, capsys, tail, kept):
    _history(tmp_path / "history.csv", [0.3, 0.6, 0.9])
    with open(tmp_path / "history.csv", "a") as f:
        f.write(tail)
    assert runs.read_history(tmp_path / "history.csv")["epoch"] == kept
    assert "dropped" in capsys.readouterr().err


def test_a_damaged_history_never_blocks_a_resume(tmp_path, capsys):
    _backup(tmp_path / "backup", 2)
    _history(tmp_path / "history.csv", [0.3, 0.6])
    with open(tmp_path / "history.csv", "ab") as f:
        f.write(b"\x00\xff\xfe garbage\n")
    run = runs.RunFolder(tmp_path)
    run.prepare()
    assert run.resuming and run.kept_history["epoch"] == [0, 1]
    assert (
        tmp_path / "history.csv"
    ).read_text() == HEADER + "0,0.5,1.0,0.3,1.0\n1,0.5,1.0,0.6,1.0\n"
    assert "dropped 1 damaged row" in capsys.readouterr().err
    (tmp_path / "history.csv").write_bytes(b"\x00" * 64)  # nothing readable at all
    run = runs.RunFolder(tmp_path)
    run.prepare()
    assert run.resuming and run.kept_history == {} and not (tmp_path / "history.csv").exists()


def test_a_resumed_run_keeps_its_recipe_and_refuses_other_settings(tmp_path):
    planned = recipes.get_recipe("fast", epochs=5, model_kwargs={"widths": [32, 128, 128]})
    asked = {"recipe": recipes.get_recipe("fast").to_dict(), "budget_min": 4}
    run = runs.RunFolder(tmp_path)
    run.prepare()
    assert run.settle(asked, planned) == planned  # a fresh run: saved
    storage.atomic_write_json(run.backup_dir / "state.json", {"epoch": 1, "weights": "e.h5"})
    (run.backup_dir / "e.h5").write_bytes(b"w")
    again = runs.RunFolder(tmp_path)
    again.prepare()
    assert again.resuming
    other_plan = recipes.get_recipe("fast", epochs=4)
    assert again.settle(asked, other_plan) == planned  # the plan it started with, not a new one
    with pytest.raises(runs.RunSettingsChanged, match="started with other budget_min; rerun it as"):
        again.settle({**asked, "budget_min": 6}, other_plan)
    changed = {**asked, "recipe": recipes.get_recipe("fast", epochs=3).to_dict()}
    with pytest.raises(runs.RunSettingsChanged, match="other recipe;.*to start afresh"):
        again.settle(changed, other_plan)


def test_a_backup_without_its_settings_is_not_resumed(tmp_path, capsys):
    _backup(tmp_path / "backup", 2)
    (tmp_path / "backup" / "settings.json").unlink()
    run = runs.RunFolder(tmp_path)
    run.prepare()
    assert not run.resuming and "settings.json is missing or damaged" in capsys.readouterr().err


# --- issue 23, item 8: a full disk ---------------------------------------------------------------


def test_a_nearly_full_disk_is_one_clear_error_before_anything_is_written(tmp_path, monkeypatch):
    import collections
    import errno
    import shutil

    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(1000)])
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(OSError, match="not enough disk space .* for the model best.keras") as info:
        storage.atomic_save_model(model, tmp_path / "best.keras")
    assert info.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())
    run = runs.RunFolder(tmp_path / "run")
    run.prepare()
    callback = run.backup_callback()
    callback.set_model(model)
    with pytest.raises(OSError, match="for the backup"):
        callback.on_epoch_end(0)
    assert not list(run.backup_dir.glob("*"))


BACKUP_ON_A_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
import keras
from cifar_utils import runs
model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(1000)])
model.compile("sgd", "mse")
callback = runs.EpochBackup(sys.argv[1])
callback.set_model(model)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # the disk fills at 100 KB
try:
    callback.on_epoch_end(0)
except OSError as err:
    print("REFUSED", err)
print("LEFT", sorted(p.name for p in Path(sys.argv[1]).iterdir()))
"""


@pytest.mark.slow
def test_a_disk_that_fills_during_the_backup_is_one_error_and_no_partial_file(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", BACKUP_ON_A_FULL_DISK, str(tmp_path / "backup")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"status {proc.returncode}: {proc.stderr[-2000:]}"
    assert "REFUSED" in proc.stdout and "cannot write the backup" in proc.stdout
    assert "LEFT []" in proc.stdout  # neither the partial weights nor a state naming them
