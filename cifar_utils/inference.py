"""Classify new images with a trained model, in any of the exported formats.

    clf = inference.Classifier()                 # the shipped model
    clf.predict(["cat.jpg", "plane.png"], top_k=3)
    clf.predict_files(paths)                     # one result per file, errors included

`Classifier` loads a Keras `.keras` file (always in safe mode, through
`storage.load_model`), a TensorFlow SavedModel folder (`model.export`) or a
TFLite file, each run by one small backend class (`BACKENDS`), and takes file paths,
raw bytes, PIL images or numpy arrays of any size and colour mode. Every image
goes through `images.load_image`, which turns it into what training saw: 32 x 32
RGB raw pixels 0-255 (the models normalise inside, see `data.normalization_layer`).

Legacy `.h5` files are refused (`storage.refuse_legacy_hdf5`): Keras's safe mode does
not apply to them, so an untrusted one can run code when loaded. SavedModels and TFLite
files hold graphs, not Python code, but a SavedModel graph can still read and write
files: load only those you trust.

`main` is the `cifar-predict` console script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from cifar_utils import backend, checks, files, storage, timing
from cifar_utils.data import CLASS_NAMES
from cifar_utils.images import IMAGE_SIZE, ImageError, load_image, load_images
from cifar_utils.paths import find_trained_model


@dataclass(frozen=True)
class Prediction:
    """One class of a top-k answer."""

    label: str
    class_index: int
    confidence: float


@dataclass
class FileResult:
    """What `Classifier.predict_files` says about one file."""

    path: str
    predictions: list | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        out = {"path": self.path}
        if self.ok:
            out["predictions"] = [asdict(p) for p in self.predictions]
        else:
            out["error"] = self.error
        return out


# --------------------------------------------------------------------------- models


def detect_format(path) -> str:
    """Which of `FORMATS` a model path holds, or a ValueError saying why none.

    The files a model is read from must be regular files: a FIFO or device in their place
    would make TensorFlow's readers wait forever.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(
            f"no model at {path}: train one (notebook 04, `cifar-train`) or pass --model"
        )
    try:
        if path.is_dir():
            if not (path / "saved_model.pb").exists():
                raise ValueError(f"{path} is a folder without saved_model.pb: not a SavedModel")
            for file in [path / "saved_model.pb", *(path / "variables").glob("*")]:
                files.check_regular(file)
            return "saved_model"
        files.check_regular(path)
    except OSError as err:  # a FIFO, a device, a symlink loop...
        raise ValueError(f"cannot read the model: {err}") from None
    storage.refuse_legacy_hdf5(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return "keras"
    if suffix == ".tflite":
        return "tflite"
    raise ValueError(
        f"cannot tell the format of {path} (suffix {suffix!r}); expected a .keras file, a "
        ".tflite file or a SavedModel folder"
    )


def _softmax_if_logits(out: np.ndarray) -> np.ndarray:
    out = np.asarray(out, dtype=np.float32)
    sums = out.sum(axis=-1)
    # int8 models answer in steps of 1/256, so their rows sum to 1 only roughly.
    if out.min() >= 0 and out.max() <= 1 and np.all(np.abs(sums - 1) < 0.05):
        return out
    shifted = out - out.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


class _Backend:
    """One model format behind one call: prepared images in, model outputs out.

    A subclass loads its format in `__init__(path, num_threads=None)` and runs it in
    `forward`; `BACKENDS` maps each format name to its class. Errors while loading
    propagate: `Classifier` turns any of them into one ValueError. Backends are not
    thread-safe; `Classifier` calls them under a lock.
    """

    format = ""

    def __init__(self, path, num_threads=None):
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Runs the model.

        Args:
            x: float32 `(N, 32, 32, 3)` raw pixels 0-255.

        Returns:
            The model's outputs `(N, num_classes)`: probabilities or logits.
        """
        raise NotImplementedError


class _KerasBackend(_Backend):
    """A `.keras` file, loaded by `storage.load_model` (safe mode), or a `keras.Model`."""

    format = "keras"

    def __init__(self, path, num_threads=None):
        self.model = storage.load_model(path, compile=False)

    @classmethod
    def from_model(cls, model: keras.Model) -> _KerasBackend:
        """A backend for a model already in memory."""
        backend = cls.__new__(cls)
        backend.model = model
        return backend

    def forward(self, x):
        return np.asarray(self.model.predict_on_batch(x))


class _SavedModelBackend(_Backend):
    """A TensorFlow SavedModel folder (`model.export`): its `serve` endpoint or signature."""

    format = "saved_model"

    def __init__(self, path, num_threads=None):
        backend.require_tensorflow("Loading a SavedModel")
        import tensorflow as tf  # only SavedModels need TensorFlow itself, whatever Keras runs on

        loaded = tf.saved_model.load(str(path))
        if not hasattr(loaded, "serve") and "serving_default" not in loaded.signatures:
            raise ValueError(f"{path} has no 'serve' endpoint or serving_default signature")
        self._loaded = loaded  # keeps the variables the endpoint uses alive
        self._fn = getattr(loaded, "serve", None) or loaded.signatures["serving_default"]
        self._constant = tf.constant

    def forward(self, x):
        out = self._fn(self._constant(x))
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return np.asarray(out)


def _tflite_interpreter(path, num_threads):
    try:  # LiteRT is TFLite's runtime now; tf.lite.Interpreter is deprecated
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - fallback when ai-edge-litert is missing
        if not backend.tensorflow_installed():
            raise backend.NeedsTensorFlow(
                "Running a .tflite file needs LiteRT: pip install ai-edge-litert "
                '(or TensorFlow: pip install -e ".[tensorflow]").'
            ) from None
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path), num_threads=num_threads)


class _TFLiteBackend(_Backend):
    """A LiteRT (TFLite) file; the input is resized to each batch's length."""

    format = "tflite"

    def __init__(self, path, num_threads=None):
        self._interpreter = _tflite_interpreter(path, num_threads or os.cpu_count())
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._batch = None  # the batch length the tensors are allocated for

    def forward(self, x):
        it = self._interpreter
        if self._batch != len(x):
            it.resize_tensor_input(self._input["index"], list(x.shape))
            it.allocate_tensors()
            self._batch = len(x)
        it.set_tensor(self._input["index"], x.astype(self._input["dtype"]))
        it.invoke()
        return it.get_tensor(self._output["index"]).copy()


# Each format `detect_format` names, and the backend that runs it.
BACKENDS = {cls.format: cls for cls in (_KerasBackend, _SavedModelBackend, _TFLiteBackend)}
FORMATS = tuple(BACKENDS)


class Classifier:
    """A trained CIFAR-10 model ready to classify new images.

    Args:
        model: a path to a `.keras` file, a SavedModel folder or a `.tflite`
            file, or a `keras.Model`. Defaults to None: the model shipped in
            models/, else the one notebook 04 or `cifar-train` saved
            (`paths.find_trained_model`).
        class_names: the labels, in output order. Defaults to CIFAR-10's.
        num_threads: CPU threads for TFLite. Defaults to None: all cores.
        batch_size: images per forward pass. Defaults to 256.
        crop: centre-crop non-square images (see `images.load_image`). Defaults to True.

    Raises:
        ValueError: when the path is missing, is a legacy `.h5` file, or is no
            model format known here.
    """

    def __init__(
        self, model=None, class_names=CLASS_NAMES, num_threads=None, batch_size=256, crop=True
    ):
        self.class_names = list(class_names)
        self.batch_size = checks.whole_number(batch_size, "batch_size", minimum=1)
        self.crop = crop
        self._lock = (
            threading.Lock()
        )  # backends (TFLite interpreters above all) are not thread-safe
        if model is None:
            model, why = find_trained_model()
            if model is None:
                raise ValueError(f"no model to load: {why}")
        if isinstance(model, keras.Model):
            self.path, self.format = None, "keras"
            self._backend = _KerasBackend.from_model(model)
            return
        self.path = Path(model)
        self.format = detect_format(self.path)
        try:
            self._backend = BACKENDS[self.format](self.path, num_threads)
        except Exception as err:  # a bad zip, no config.json, code refused by safe mode...
            detail = " ".join(str(err).split())[:300] or type(err).__name__
            raise ValueError(
                f"cannot load the {self.format} model {self.path} ({type(err).__name__}: "
                f"{detail}). Is it a model file this course wrote, and complete?"
            ) from None

    def __repr__(self):
        where = self.path if self.path is not None else "in memory"
        return f"Classifier({self.format}, {where})"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def predict_proba(self, images, batch_size=None) -> np.ndarray:
        """Class probabilities for a batch of images.

        Args:
            images: anything `load_images` takes (paths, bytes, PIL images,
                arrays, or one `(N, H, W, C)` array).
            batch_size: images per forward pass, for this call only. Defaults
                to None: the classifier's `batch_size`.

        Returns:
            float32 array `(N, num_classes)`, rows summing to 1.
        """
        return self.predict_prepared(
            load_images(images, crop=self.crop).astype(np.float32), batch_size
        )

    def predict_prepared(self, x, batch_size=None) -> np.ndarray:
        """Class probabilities for images already prepared, without per-image checks.

        `predict_proba` is `load_images`, then this. Images prepared once (as
        `measure_speed` and the benchmarks do) skip the per-image conversions
        and checks of `load_image`; only the batch's shape is checked, so the
        pixels must already be what `load_images` returns: raw 0-255 values.

        Args:
            x: a `(N, 32, 32, 3)` array of raw pixels, preferably float32
                (`load_images(...).astype(np.float32)`); other dtypes are
                converted to float32.
            batch_size: images per forward pass, for this call only. Defaults
                to None: the classifier's `batch_size`.

        Returns:
            float32 array `(N, num_classes)`, rows summing to 1.

        Raises:
            ValueError: `x` is not `(N, 32, 32, 3)`, `batch_size` is not a whole number >= 1,
                or the model's outputs do not match `class_names`.
        """
        step = self.batch_size
        if batch_size is not None:
            step = checks.whole_number(batch_size, "batch_size", minimum=1)
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(
                f"prepared images must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3); "
                f"received {x.shape}. "
                "Use predict_proba for images of any other size or kind."
            )
        if len(x) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        with self._lock:
            outs = [
                self._backend.forward(x[start : start + step]) for start in range(0, len(x), step)
            ]
        probs = _softmax_if_logits(np.concatenate(outs))
        if probs.shape[-1] != self.num_classes:
            raise ValueError(
                f"the model gives {probs.shape[-1]} outputs but {self.num_classes} class names "
                "were given"
            )
        return probs

    def check_top_k(self, k) -> int:
        """`k`, if it is a number of classes to show: 1 to `num_classes`.

        The one check of `top_k` (`predict`, `predict_files`, the web demo all use it).

        Raises:
            ValueError: `k` is outside 1 to `num_classes`.
        """
        if not 1 <= k <= self.num_classes:
            raise ValueError(f"top_k must be between 1 and {self.num_classes}; received {k}")
        return k

    def top_k(self, probs: np.ndarray, k=3) -> list:
        """Top-k `Prediction`s for each row of a probability matrix."""
        return self._ranked(probs, self.check_top_k(k))

    def _ranked(self, probs: np.ndarray, k: int) -> list:
        """`top_k` for a `k` already checked."""
        order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        return [
            [Prediction(self.class_names[i], int(i), float(row[i])) for i in idx]
            for row, idx in zip(probs, order)
        ]

    def predict(self, images, top_k=3) -> list:
        """The top-k classes of each image, most likely first.

        Args:
            images: as for `predict_proba`.
            top_k: how many classes per image. Defaults to 3.

        Returns:
            One list of `Prediction(label, class_index, confidence)` per image.
        """
        return self.top_k(self.predict_proba(images), top_k)

    def predict_files(self, paths, top_k=3) -> list:
        """Classify files one batch at a time; a bad file is reported, not fatal.

        Args:
            paths: image file paths.
            top_k: how many classes per image. Defaults to 3.

        Returns:
            One `FileResult` per path, in order: `predictions` when it worked,
            `error` (what is wrong with that file) when it did not.
        """
        k = self.check_top_k(top_k)  # before any file is read
        results, good, images = [], [], []
        for path in paths:
            result = FileResult(str(path))
            try:
                images.append(load_image(path, crop=self.crop))
                good.append(result)
            except ImageError as err:
                result.error = str(err)
            results.append(result)
        if images:  # prepared by load_image already: straight to the model
            probs = self.predict_prepared(np.stack(images).astype(np.float32))
            for result, preds in zip(good, self._ranked(probs, k)):
                result.predictions = preds
        return results


def measure_speed(
    classifier: Classifier, images: np.ndarray, batch_size=256, single=100, repeats=3
) -> dict:
    """Batched throughput and single-image latency of a classifier's model.

    The images are prepared once (`load_images`), before any timing, then run
    through `Classifier.predict_prepared`: what is timed is the model in its
    format, not the per-image checks of `load_image`, which cost the same for
    every format and which a plain `model.predict` does not pay either. The
    classifier is not changed: `batch_size` is passed to each call, so one
    shared with the web demo keeps its own. Timing is `timing.best_time` and
    `timing.latencies_ms`, each after one untimed warm-up call.

    Args:
        classifier: a `Classifier`.
        images: uint8 `(N, 32, 32, 3)` images to push through (anything
            `load_images` takes).
        batch_size: images per call for the throughput. Defaults to 256.
        single: how many one-image calls time the latency. Defaults to 100.
        repeats: passes over `images` for the throughput; the best is kept
            (other work on the machine only ever slows a pass). Defaults to 3.

    Returns:
        `{"images_per_second", "latency_ms_median", "latency_ms_p90", "batch_size"}`.

    Raises:
        ValueError: no images, or `batch_size`, `single` or `repeats` below 1.
    """
    batch_size = checks.whole_number(batch_size, "batch_size", minimum=1)
    x = load_images(images, crop=classifier.crop).astype(np.float32)
    if len(x) == 0:
        raise ValueError("measure_speed needs at least one image; received 0")
    seconds = timing.best_time(
        lambda: classifier.predict_prepared(x, batch_size=batch_size), repeats=repeats
    )
    times = timing.latencies_ms(
        lambda i: classifier.predict_prepared(
            x[i % len(x) : i % len(x) + 1], batch_size=batch_size
        ),
        single,
    )
    return {
        "images_per_second": len(x) / seconds,
        "latency_ms_median": float(np.median(times)),
        "latency_ms_p90": float(np.percentile(times, 90)),
        "batch_size": batch_size,
    }


# --------------------------------------------------------------------------- command line


def _printable(name: str) -> str:
    """A file name on one line: newlines and other control characters escaped."""
    if name.isprintable():
        return name
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in name
    )


def _format_result(result: FileResult) -> str:
    if not result.ok:
        return f"{_printable(result.path)}: ERROR {_printable(result.error)}"
    answers = ", ".join(f"{p.label} {p.confidence:.1%}" for p in result.predictions)
    return f"{_printable(result.path)}: {answers}"


def main(argv=None) -> int:
    """`cifar-predict`: classify image files from the command line.

    Exit status: 0 when every file was classified, 1 when any failed (the
    others are still printed), 2 for bad arguments or an unloadable model.
    """
    parser = argparse.ArgumentParser(
        prog="cifar-predict",
        description="Classify images with a CIFAR-10 model (default: the one shipped in "
        "models/, else the one notebook 04 or cifar-train trained).",
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)"
    )
    parser.add_argument("--model", help="a .keras file, a SavedModel folder or a .tflite file")
    parser.add_argument("--top-k", type=int, default=3, help="classes per image (default 3)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of text"
    )
    args = parser.parse_args(argv)
    try:
        clf = Classifier(args.model)
        results = clf.predict_files(args.images, top_k=args.top_k)
    except ValueError as err:
        print(f"cifar-predict: {_printable(str(err))}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.ok]
    if args.json:
        doc = {
            "model": str(clf.path),
            "format": clf.format,
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(doc, indent=2))
    else:
        for result in results:
            print(_format_result(result), file=sys.stdout if result.ok else sys.stderr)
    if failed:
        print(
            f"cifar-predict: {len(failed)} of {len(results)} files could not be classified",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
