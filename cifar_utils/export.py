"""Export a trained model for deployment and compare the formats side by side.

    model_paths = export.export_all(model, "exports", representative_images=x_train[:2000])
    table = export.compare_formats(model_paths, x_test, y_test)

Formats (`EXPORTS`):

- `keras`: the `.keras` file, for Python and further training;
- `saved_model`: TensorFlow's SavedModel (`model.export`), for TF Serving and
  other TensorFlow runtimes;
- `tflite_float32`, `tflite_float16`, `tflite_int8`: LiteRT (TFLite) files for
  phones and small machines. float16 halves the size; int8 quantises weights
  and activations with ranges measured on a representative set of training
  images, for a quarter of the size and integer arithmetic.

Every export keeps the model's interface: raw pixels 0-255, float32
(N, 32, 32, 3) in, probabilities out; `inference.Classifier` loads any of them.
A model trained under mixed precision is exported with float32 arithmetic
(`models.float32_copy`): TFLite cannot convert 16-bit layers.

SavedModel and TFLite are TensorFlow's formats: exporting needs Keras on TensorFlow
(`pip install -e ".[tensorflow]"`, `KERAS_BACKEND=tensorflow`); on another backend these
functions say so in one sentence. The `.keras` file works on every backend, so a model
trained on JAX or PyTorch is exported by loading its `.keras` file on TensorFlow.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cifar_utils import backend
from cifar_utils.evaluation import accuracy_from_probs
from cifar_utils.inference import Classifier, measure_speed
from cifar_utils.models import computes_in_float32, float32_copy
from cifar_utils.storage import atomic_save_model, atomic_write_bytes

EXPORTS = ("keras", "saved_model", "tflite_float32", "tflite_float16", "tflite_int8")
QUANTIZATIONS = ("float32", "float16", "int8")
FILE_NAMES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "tflite_float32": "model_float32.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_int8": "model_int8.tflite",
}


def file_size(path) -> int:
    """Size in bytes of a file, or of everything in a folder (a SavedModel)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def export_saved_model(model, path) -> Path:
    """Writes a SavedModel folder with a `serve` endpoint (`model.export`).

    The folder is written under a temporary name and renamed into place, so
    an interrupted export never leaves half a SavedModel at `path`.

    Args:
        model: a `keras.Model`; exported with float32 arithmetic
            (`models.float32_copy`) whatever its dtype policy.
        path: the folder to create; an existing one is replaced.

    Returns:
        `path` as a `Path`.
    """
    backend.require_tensorflow("SavedModel export", as_backend=True)
    import tensorflow as tf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if not computes_in_float32(model):
            model = float32_copy(model)  # TFLite cannot convert 16-bit arithmetic
        logger = tf.get_logger()  # SavedModel logs "INFO: Assets written to <temporary path>"
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            model.export(str(tmp / "sm"), format="tf_saved_model", verbose=False)
        finally:
            logger.setLevel(level)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp / "sm", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def representative_dataset(images, num_images=500, batch_size=50, seed=0):
    """A generator factory of calibration batches for int8 quantisation.

    Args:
        images: uint8 `(N, 32, 32, 3)` training images (never test images:
            calibration is part of building the model).
        num_images: how many to draw at random. Defaults to 500 (more changed
            validation accuracy by 0.1 points on the shipped model).
        batch_size: images per calibration batch. Defaults to 50.
        seed: which images are drawn. Defaults to 0.

    Returns:
        A function with no arguments that yields `[float32 batch]` lists, as
        `TFLiteConverter.representative_dataset` wants.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            "representative images must be a non-empty (N, H, W, C) array; "
            f"received shape {images.shape}"
        )
    rng = np.random.default_rng(seed)
    chosen = images[rng.choice(len(images), min(num_images, len(images)), replace=False)]

    def batches():
        for start in range(0, len(chosen), batch_size):
            yield [chosen[start : start + batch_size].astype(np.float32)]

    return batches


def convert_tflite(
    saved_model_dir,
    path,
    quantization="float32",
    representative_images=None,
    num_calibration=500,
    seed=0,
) -> Path:
    """Converts a SavedModel to a LiteRT (TFLite) file.

    Args:
        saved_model_dir: a folder written by `export_saved_model`.
        path: the `.tflite` file to write (atomically).
        quantization: "float32" (no change), "float16" (weights stored as
            float16) or "int8" (weights and activations int8; float input and
            output so callers need not change). Defaults to "float32".
        representative_images: uint8 training images; required for "int8".
        num_calibration: calibration images drawn from them. Defaults to 500.
        seed: which calibration images. Defaults to 0.

    Returns:
        `path` as a `Path`.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}; received {quantization!r}")
    backend.require_tensorflow("TFLite conversion", as_backend=True)
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative_images is None:
            raise ValueError(
                "int8 quantisation needs representative_images (uint8 training images)"
            )
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(
            representative_images, num_images=num_calibration, seed=seed
        )
        # Integer kernels only: a layer that cannot be quantised fails loudly here
        # instead of silently running in float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return atomic_write_bytes(path, converter.convert())


def export_all(
    model, output_dir, representative_images=None, formats=EXPORTS, num_calibration=500, seed=0
) -> dict:
    """Exports a model to several formats in one folder.

    Args:
        model: a `keras.Model` taking raw pixels (all builders here do); a
            mixed-precision model is exported with float32 arithmetic.
        output_dir: the folder to write into (created).
        representative_images: uint8 training images for int8 calibration;
            needed only when "tflite_int8" is asked for. Defaults to None.
        formats: which of `EXPORTS`. Defaults to all of them.
        num_calibration: int8 calibration images. Defaults to 500.
        seed: which calibration images. Defaults to 0.

    Returns:
        `{format: path}` in the order asked for.
    """
    unknown = [f for f in formats if f not in EXPORTS]
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {EXPORTS}")
    if not computes_in_float32(model):
        model = float32_copy(model)  # every format, the .keras file included, computes in float32
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model_paths = {}
    tflite = [f for f in formats if f.startswith("tflite_")]
    saved_model = output_dir / FILE_NAMES["saved_model"]
    if "saved_model" in formats or tflite:
        export_saved_model(model, saved_model)
    for fmt in formats:
        target = output_dir / FILE_NAMES[fmt]
        if fmt == "keras":
            model_paths[fmt] = atomic_save_model(model, target)
        elif fmt == "saved_model":
            model_paths[fmt] = saved_model
        else:
            model_paths[fmt] = convert_tflite(
                saved_model,
                target,
                fmt.removeprefix("tflite_"),
                representative_images,
                num_calibration,
                seed,
            )
    if "saved_model" not in formats and saved_model.exists():
        shutil.rmtree(saved_model)  # only a stepping stone to TFLite here
    return model_paths


def compare_formats(
    model_paths: dict, x, y, reference="keras", speed=True, speed_images=1024, batch_size=256
):
    """Size, accuracy, agreement with the reference and speed of each export.

    Args:
        model_paths: `{format: path}`, as `export_all` returns.
        x: uint8 test images `(N, 32, 32, 3)`.
        y: their labels.
        reference: the format the others are checked against (parity).
            Defaults to "keras".
        speed: also measure throughput and latency (`inference.measure_speed`:
            the model in its format, on images prepared once). Defaults to True.
        speed_images: images for the throughput. Defaults to 1024.
        batch_size: images per call. Defaults to 256.

    Returns:
        A pandas DataFrame, one row per format: size_mb, accuracy,
        accuracy_change (points against the reference), agreement (share of
        images with the same top-1 class as the reference), max_prob_diff,
        and, with `speed`, images_per_second and latency_ms.
    """
    import pandas as pd

    if reference not in model_paths:
        raise ValueError(f"the reference format {reference!r} is not among {list(model_paths)}")
    rows = []
    ref = ref_accuracy = None
    for fmt in [reference] + [f for f in model_paths if f != reference]:
        clf = Classifier(model_paths[fmt], batch_size=batch_size)
        probs = clf.predict_proba(x)
        acc = accuracy_from_probs(probs, y)
        if ref is None:  # the reference comes first
            ref, ref_accuracy = probs, acc
        row = {
            "format": fmt,
            "size_mb": file_size(model_paths[fmt]) / 1e6,
            "accuracy": acc,
            "accuracy_change": 100 * (acc - ref_accuracy),
            "agreement": float(np.mean(probs.argmax(-1) == ref.argmax(-1))),
            "max_prob_diff": float(np.abs(probs - ref).max()),
        }
        if speed:
            timing = measure_speed(clf, x[:speed_images], batch_size=batch_size)
            row["images_per_second"] = timing["images_per_second"]
            row["latency_ms"] = timing["latency_ms_median"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("format").loc[list(model_paths)]
