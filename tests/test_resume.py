"""A training run killed at any save step resumes and finishes with each epoch once (issue 13).

Each test starts a real training process that pauses at a named save step (the child
wraps the package's save functions: the production code has no hook for tests), kills it
with SIGKILL there, and runs it again: the rerun must finish without an error, train only
what was not yet backed up, and leave a history with every epoch exactly once, a final
model, and no backup or temporary files behind.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # each test trains in two processes, 10-15 s

EPOCHS = 3
SCRIPT = f"""
import sys, time
from pathlib import Path
import numpy as np
from cifar_utils import callbacks, recipes, storage, training

out, pause = sys.argv[1], sys.argv[2]  # pause: "", or "POINT:N" (pause at the N-th arrival)
point, _, nth = pause.partition(":")
arrivals = []

def pause_here(name):
    if name == point:
        arrivals.append(name)
        if len(arrivals) == int(nth):
            Path(sys.argv[3], f"{{name}}.paused").write_text("")
            time.sleep(3600)

save_json, save_model = storage.atomic_write_json, storage.atomic_save_model
def atomic_write_json(path, obj):
    if Path(path).name == "state.json":  # the backup's weights are written; its state is not
        pause_here("backup")
    return save_json(path, obj)
def atomic_save_model(model, path):
    if Path(path).name == "final.keras":
        pause_here("final")
    return save_model(model, path)
storage.atomic_write_json, storage.atomic_save_model = atomic_write_json, atomic_save_model
best_epoch_end = callbacks.AtomicCheckpoint.on_epoch_end
def on_epoch_end(self, epoch, logs=None):  # after CSVLogger wrote the epoch's row, before any save
    pause_here("best")
    return best_epoch_end(self, epoch, logs)
callbacks.AtomicCheckpoint.on_epoch_end = on_epoch_end

rng = np.random.default_rng(0)
x = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
y = (np.arange(96) % 10).astype(np.uint8)
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else {EPOCHS}
recipe = recipes.get_recipe("baseline_cnn", arch="baseline_cnn", epochs=epochs, batch_size=32,
                            model_kwargs={{"filters": [4, 8], "dense_units": 8}})
training.train(recipe, x[:64], y[:64], x[64:], y[64:], output_dir=out, verbose=0)
"""


def _run(out, pause="", pause_dir="", epochs=EPOCHS):
    env = {**os.environ, "CIFAR_TF_LOGS": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), pause, str(pause_dir), str(epochs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _pause_at(out, pause, tmp_path):
    """A training process stopped at `pause`, still running (and holding the folder)."""
    point = pause.split(":")[0]
    proc = _run(out, pause, tmp_path)
    marker = tmp_path / f"{point}.paused"
    deadline = time.time() + 300
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before reaching {pause}:\n{proc.stdout.read()[-2000:]}")
        assert time.time() < deadline, f"the run did not reach {pause} within 300 s"
        time.sleep(0.2)
    return proc


def _kill_at(out, pause, tmp_path):
    proc = _pause_at(out, pause, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _finish_and_check(out):
    proc = _run(out)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    history = json.loads((out / "history.json").read_text())["history"]
    assert [int(e) for e in history["epoch"]] == list(range(EPOCHS)), history["epoch"]
    assert (out / "final.keras").is_file() and (out / "best.keras").is_file()
    assert not (out / "backup").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".lock"]  # no temporaries
    return output


@pytest.mark.parametrize("pause", ["backup:2", "best:2", "final:1"])
def test_a_run_killed_at_a_save_step_resumes_and_finishes(tmp_path, pause):
    out = tmp_path / "run"
    _kill_at(out, pause, tmp_path)
    if pause.startswith("final"):  # the backup must still be there: final.keras was not written
        assert (out / "backup" / "state.json").is_file() and not (out / "final.keras").exists()
    _finish_and_check(out)


def test_a_backup_whose_weights_were_cut_short_resumes_from_the_previous_epoch(tmp_path):
    """Killed while writing epoch 2's weights: the file is left at 96 bytes. The state still
    names epoch 1's complete file, so the rerun resumes from there, not from scratch."""
    out = tmp_path / "run"
    _kill_at(out, "backup:2", tmp_path)
    newest = max((out / "backup").glob("epoch*.weights.h5"), key=lambda p: int(p.name[5:-11]))
    state = json.loads((out / "backup" / "state.json").read_text())
    assert newest.name != state["weights"]  # written, but not yet referenced
    with open(newest, "r+b") as f:
        f.truncate(96)
    _finish_and_check(out)


def test_a_damaged_backup_is_discarded_with_a_message_not_a_crash(tmp_path):
    out = tmp_path / "run"
    _kill_at(out, "best:2", tmp_path)
    (out / "backup" / "state.json").write_bytes(b"")  # damaged on disk
    output = _finish_and_check(out)
    assert "cannot resume" in output and "starting this run from its first epoch" in output


# --- issue 23: two runs in one folder, a damaged history, a changed recipe ---------------------


def test_a_second_run_in_a_busy_folder_is_refused_and_neither_is_harmed(tmp_path):
    out = tmp_path / "run"
    first = _pause_at(out, "best:2", tmp_path)  # mid-run, holding the folder
    second = _run(out)
    output, _ = second.communicate(timeout=300)
    assert second.returncode != 0 and "is in use by another training run (pid" in output
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    _finish_and_check(out)


def test_a_history_damaged_by_a_power_loss_never_blocks_the_rerun(tmp_path):
    out = tmp_path / "run"
    _kill_at(out, "backup:2", tmp_path)
    with open(out / "history.csv", "ab") as f:
        f.write(b"2,0.1\x00\x00\x00")  # a half-written row, then NUL bytes
    _finish_and_check(out)


def test_a_rerun_with_another_recipe_is_refused_with_how_to_start_afresh(tmp_path):
    out = tmp_path / "run"
    _kill_at(out, "backup:2", tmp_path)
    changed = _run(out, epochs=EPOCHS + 2)
    output, _ = changed.communicate(timeout=300)
    assert changed.returncode != 0 and "holds an unfinished run started with other recipe" in output
    assert (out / "backup" / "state.json").is_file()  # nothing lost: the same run resumes
    _finish_and_check(out)
