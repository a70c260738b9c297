"""The facts recorded next to every reported number, and the documents that show them.

Every number the project reports carries the hardware, library versions, seed and wall
time it came from: `run_info()` gathers them in one dict, `hardware_text` and
`versions_text` format them the one way that model cards, notebooks and the benchmarks
all print, and `write_model_card` writes the card shipped next to a model.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import keras
import numpy as np

from cifar_utils import backend, device
from cifar_utils.data import CLASS_NAMES
from cifar_utils.storage import atomic_write_text


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_info(seed=None, **extra) -> dict:
    """Collects the facts to record next to a measured number.

    Args:
        seed: the seed of the run. Defaults to None.
        **extra: further fields (epochs, wall time, data variant...).

    Returns:
        A JSON-serialisable dict: date, hardware (CPU model and cores, GPUs),
        Python, Keras backend, TensorFlow (or "not installed"), Keras and NumPy
        versions, seed, and `extra`.
    """
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "gpus": device.gpu_names(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "backend": backend.name(),
        "backend_version": backend.library_version(),
        "tensorflow": backend.library_version("tensorflow"),
        "keras": keras.__version__,
        "numpy": np.__version__,
        "seed": seed,
    }
    info.update(extra)
    return info


def hardware_text(run: dict) -> str:
    """The hardware of a `run_info()` dict as one phrase.

    Example: `"AMD EPYC (2 cores), GPUs: none"`.
    """
    return (
        f"{run.get('cpu')} ({run.get('cpu_cores')} cores), "
        f"GPUs: {', '.join(run.get('gpus') or []) or 'none'}"
    )


def versions_text(run: dict) -> str:
    """The library versions of a `run_info()` dict as one phrase.

    Example: `"Python 3.11.7, TensorFlow 2.21.0, Keras 3.15.1, NumPy 2.4.0"`; on another
    backend `"Python 3.11.7, JAX 0.10.2, Keras 3.15.1, NumPy 2.4.6"`.
    """
    label = {"jax": "JAX", "torch": "PyTorch"}.get(run.get("backend"))
    library = (
        f"{label} {run.get('backend_version')}" if label else f"TensorFlow {run.get('tensorflow')}"
    )
    keras_numpy = f"Keras {run.get('keras')}, NumPy {run.get('numpy')}"
    return f"Python {run.get('python')}, {library}, {keras_numpy}"


def write_model_card(
    run_dir,
    model_path,
    test_accuracy,
    test_accuracy_tta,
    data_variant,
    command,
    saved=None,
    lossless=None,
    calibration=None,
):
    """Writes MODEL_CARD.md next to a shipped model, from the run's history.json.

    Args:
        run_dir: the training output folder (holds history.json); None when
            `saved` is given.
        model_path: the shipped `.keras` file.
        test_accuracy: accuracy on the 10,000 test images, no TTA.
        test_accuracy_tta: the same with flip test-time augmentation.
        data_variant: "offline copy" or "official".
        command: the command that reproduces the model.
        saved: the contents of history.json ({"run": ..., "recipe": ...}).
            Defaults to None: read from `run_dir`. A run without validation
            (`run["val_images"]` 0) is described as trained on all images.
        lossless: (accuracy, accuracy with flip TTA) on the first 1,000
            official test images, lossless (`data.load_lossless_test_sample`).
            Defaults to None: no such row.
        calibration: the temperature shipped inside the model, as `shipping.ship_model`
            fits it: {"temperature", "val_images", "test_ece_before", "test_ece_after"}.
            Defaults to None: the card says the probabilities are as trained.

    Returns:
        The card's path.
    """
    if saved is None:
        saved = json.loads((Path(run_dir) / "history.json").read_text())
    run, recipe = saved["run"], saved["recipe"]
    model_path = Path(model_path)
    size_mb = model_path.stat().st_size / 1e6
    if run.get("val_images"):
        last = (saved.get("history") or {}).get("val_accuracy") or [run["best_val_accuracy"]]
        validation = (
            f"| validation accuracy | {last[-1]:.4f} at the last epoch, the one shipped (best "
            f"{run['best_val_accuracy']:.4f}), on {run['val_images']:,} images split from the "
            "training set |"
        )
        test_use = (
            "The test set was used once, after training, for the accuracies above; the\n"
            "validation images chose nothing" + (" but the temperature." if calibration else ".")
        )
    else:
        validation = (
            "| validation | none: trained on all the training images; the model is the last epoch |"
        )
        test_use = (
            "No test image chose anything: the model is the last epoch of a run of fixed\n"
            "length, and the test accuracies above were measured on it afterwards."
        )
    if calibration is None:
        why = "" if run.get("val_images") else " (no held-out images to fit one on)"
        temperature_row = f"| temperature | none: the probabilities are as trained{why} |"
    else:
        temperature_row = (
            f"| temperature | {calibration['temperature']:.3f}, fitted on the "
            f"{calibration['val_images']:,} validation images and applied inside the model: "
            f"test ECE {calibration['test_ece_before']:.4f} as trained, "
            f"{calibration['test_ece_after']:.4f} calibrated (no TTA) |"
        )
    lossless_row = (
        ""
        if lossless is None
        else f"| first 1,000 official test images, lossless | {lossless[0]:.4f} "
        f"(with flip TTA: {lossless[1]:.4f}) |\n"
    )
    card = (
        f"""# {model_path.name}

The best model of the "{recipe["name"]}" recipe ({recipe["arch"]}), shipped so that notebooks
05-07 and `cifar-predict` work without training first.

| | |
|---|---|
| input | RGB images, 32 x 32, raw pixels 0-255 (the model normalises inside) |
| output | probabilities over {", ".join(CLASS_NAMES)} |
| test accuracy ({data_variant}) | {test_accuracy:.4f} (with flip TTA: {test_accuracy_tta:.4f}) |
{lossless_row}{validation}
{temperature_row}
| training data | {run["train_images"]:,} CIFAR-10 training images ({data_variant}) |
| epochs, training time | {run["epochs"]}, {run["train_seconds"]:.0f} s |
| hardware | {hardware_text(run)}, precision {run["precision"]} |
| versions | {versions_text(run)} |
| seed | {run["seed"]} |
| file size | {size_mb:.1f} MB |
| date | {run["date"]} |

Reproduce: `{command}`

Use it (paths relative to this card's folder): """
        f"""`cifar-predict --model {model_path.name} IMAGE...`, or in Python
`cifar_utils.inference.Classifier("{model_path.name}")`, or as a Keras model (safe mode, the
package's custom layers passed to Keras for you):

```python
import cifar_utils
model = cifar_utils.load_model("{model_path.name}")
```

{test_use} The offline copy's pixels are
JPEG re-encoded, so accuracy on the official test set will differ slightly.

Recipe:

```json
{json.dumps(recipe, indent=2)}
```
"""
    )
    return atomic_write_text(model_path.parent / "MODEL_CARD.md", card)
