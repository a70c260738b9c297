"""A training run killed at any save step resumes and finishes with each epoch once (issue 13).

Each test starts a real training process, lets it reach a named save step
(`CIFAR_TEST_PAUSE_AT`, see `callbacks.pause_for_test`), kills it with SIGKILL there,
and runs it again: the rerun must finish without an error, train only what was not
yet backed up, and leave a history with every epoch exactly once, a final model, and
no backup or temporary files behind.
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
import sys
import numpy as np
from cifar_utils import recipes, training
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
y = (np.arange(96) % 10).astype(np.uint8)
recipe = recipes.get_recipe("baseline_cnn", arch="baseline_cnn", epochs={EPOCHS}, batch_size=32,
                            model_kwargs={{"filters": [4, 8], "dense_units": 8}})
training.train(recipe, x[:64], y[:64], x[64:], y[64:], output_dir=sys.argv[1], verbose=0)
"""


def _run(out, pause=None, pause_dir=None):
    env = {**os.environ, "CIFAR_TF_LOGS": "0"}
    env.pop("CIFAR_TEST_PAUSE_AT", None)
    if pause:
        env.update(CIFAR_TEST_PAUSE_AT=pause, CIFAR_TEST_PAUSE_DIR=str(pause_dir))
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_at(out, pause, tmp_path):
    point = pause.split(":")[0]
    proc = _run(out, pause, tmp_path)
    marker = tmp_path / f"{point}.paused"
    deadline = time.time() + 300
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before reaching {pause}:\n{proc.stdout.read()[-2000:]}")
        assert time.time() < deadline, f"the run did not reach {pause} within 300 s"
        time.sleep(0.2)
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
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
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
