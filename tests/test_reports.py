"""cifar_utils.reports: the run facts recorded with each result, their one-line texts, and the
model card shipped next to a model."""

import datetime
import json
import os
import platform
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_utils import device, recipes, reports

RUN = {
    "train_seconds": 1.0,
    "cpu": "Some CPU",
    "cpu_cores": 2,
    "gpus": [],
    "precision": "float32",
    "python": "3.11.7",
    "tensorflow": "2.21.0",
    "keras": "3.15.1",
    "numpy": "2.4.0",
    "seed": 0,
    "date": "2026-01-01T00:00:00+00:00",
    "train_images": 10,
    "val_images": 10,
    "best_val_accuracy": 0.1,
    "epochs": 1,
}


def test_run_info_records_this_machine_and_these_versions(monkeypatch):
    monkeypatch.setattr(device, "gpu_names", lambda with_capability=False: ["Fake GPU"])
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    info = reports.run_info(seed=3, epochs=2)
    after = datetime.datetime.now(datetime.timezone.utc)
    assert json.loads(json.dumps(info)) == info  # JSON as it is
    assert (info["tensorflow"], info["keras"], info["numpy"]) == (
        tf.__version__,
        keras.__version__,
        np.__version__,
    )
    assert info["python"] == platform.python_version()
    assert info["cpu_cores"] == os.cpu_count()
    assert isinstance(info["cpu"], str) and info["cpu"].strip()
    assert info["gpus"] == ["Fake GPU"]  # from device.gpu_names, the one place GPU names are read
    assert before <= datetime.datetime.fromisoformat(info["date"]) <= after
    assert info["seed"] == 3 and info["epochs"] == 2


def test_hardware_and_versions_texts():
    assert reports.hardware_text(RUN) == "Some CPU (2 cores), GPUs: none"
    assert (
        reports.hardware_text({**RUN, "gpus": ["NVIDIA A100", "NVIDIA A100"]})
        == "Some CPU (2 cores), GPUs: NVIDIA A100, NVIDIA A100"
    )
    assert (
        reports.versions_text(RUN) == "Python 3.11.7, TensorFlow 2.21.0, Keras 3.15.1, NumPy 2.4.0"
    )
    info = reports.run_info()
    assert f"TensorFlow {tf.__version__}," in reports.versions_text(info)
    assert reports.hardware_text(info).startswith(f"{info['cpu']} ({os.cpu_count()} cores), GPUs: ")


@pytest.fixture
def card_dir(tmp_path):
    (tmp_path / "history.json").write_text(
        json.dumps(
            {
                "recipe": recipes.get_recipe("fast").to_dict(),
                "history": {"val_accuracy": [0.1]},
                "run": RUN,
            }
        )
    )
    return tmp_path


def test_model_card_shows_the_run_facts(card_dir):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(card_dir / "net.keras")
    card_path = reports.write_model_card(
        card_dir,
        card_dir / "net.keras",
        0.91234,
        0.92345,
        "offline copy",
        "cifar-train --recipe fast",
    )
    assert card_path == card_dir / "MODEL_CARD.md"
    card = card_path.read_text()
    for needed in (
        "# net.keras",
        "| test accuracy (offline copy) | 0.9123 (with flip TTA: 0.9234) |",
        f"| hardware | {reports.hardware_text(RUN)}, precision float32 |",
        f"| versions | {reports.versions_text(RUN)} |",
        "Reproduce: `cifar-train --recipe fast`",
        'cifar_utils.load_model("net.keras")',
        '"whitening_images": 5000',
    ):
        assert needed in card, needed
    assert "lossless" not in card

    reports.write_model_card(
        card_dir,
        card_dir / "net.keras",
        0.91234,
        0.92345,
        "offline copy",
        "c",
        lossless=(0.93, 0.9456),
    )
    card = card_path.read_text()
    assert "| first 1,000 official test images, lossless | 0.9300 (with flip TTA: 0.9456) |" in card
    assert "| temperature | none: the probabilities are as trained" in card

    calibration = {
        "temperature": 1.23456,
        "val_images": 5000,
        "test_ece_before": 0.1912,
        "test_ece_after": 0.0123,
    }
    reports.write_model_card(
        card_dir, card_dir / "net.keras", 0.9, 0.9, "offline copy", "c", calibration=calibration
    )
    card = card_path.read_text()
    assert (
        "| temperature | 1.235, fitted on the 5,000 validation images and applied inside the "
        "model: test ECE 0.1912 as trained, 0.0123 calibrated (no TTA) |"
    ) in card


@pytest.mark.slow
def test_model_card_snippet_loads_a_scaled_bias_model_in_a_fresh_process(card_dir):
    from cifar_utils.models import build_fast_net
    from cifar_utils.storage import atomic_save_model

    model = build_fast_net(widths=(8, 16, 16), bias_scale=8)
    atomic_save_model(model, card_dir / "fast_net.keras")
    reports.write_model_card(card_dir, card_dir / "fast_net.keras", 0.1, 0.1, "offline copy", "cmd")
    card = (card_dir / "MODEL_CARD.md").read_text()
    snippet = card.split("```python\n")[1].split("```")[0]
    code = snippet + "print(sorted({type(l).__name__ for l in model.layers}))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=card_dir, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ScaledBias" in out.stdout
