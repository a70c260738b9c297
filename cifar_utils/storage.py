"""Saving models and results so that an interrupted save never leaves a broken file,
and loading models safely.

Each `atomic_*` function writes to a temporary name in the same folder, then renames
it over the target with `os.replace`, which is atomic on POSIX and Windows: a reader
sees the old complete file or the new complete file, never half of one.

`load_model` reads a `.keras` file in Keras's safe mode with the package's custom
objects (`custom_objects.CUSTOM_OBJECTS`) passed explicitly, so no import is needed for
them to be found (`cifar_utils.load_model` is the same function). Loading a model imports
only Keras and that small module, not the training code. `refuse_legacy_hdf5` is the one
place that refuses `.h5` models.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import zipfile
from pathlib import Path

import keras

from cifar_utils.custom_objects import CUSTOM_OBJECTS
from cifar_utils.keras_archives import check_keras_archive

LEGACY_SUFFIXES = (".h5", ".hdf5")


def _temporary_path(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name in mkstemp's form, created with the permissions a plain open() gives
    # (0666 less the umask; mkstemp's are 0600) without reading or changing the process
    # umask, which other threads share. O_EXCL: never an existing file.
    for _ in range(100):
        name = path.parent / f".{path.stem}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"no free temporary name next to {path}")


def atomic_write_bytes(path, content: bytes) -> Path:
    """Writes `content` to `path` atomically.

    Args:
        path: the target file; its folder is created when missing.
        content: the bytes to write.

    Returns:
        The path written.
    """
    path = Path(path)
    tmp = _temporary_path(path, ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path, text: str) -> Path:
    """Writes `text` to `path` atomically, as UTF-8.

    Args:
        path: the target file; its folder is created when missing.
        text: the content.

    Returns:
        The path written.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    """Writes `obj` as indented JSON to `path` atomically.

    Args:
        path: the target file.
        obj: a JSON-serialisable object (numpy scalars are converted).

    Returns:
        The path written.
    """

    def default(value):
        if hasattr(value, "tolist"):  # numpy arrays and scalars
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    return atomic_write_text(path, json.dumps(obj, indent=2, default=default) + "\n")


def atomic_save_model(model, path) -> Path:
    """Saves a Keras model in the `.keras` format atomically.

    Args:
        model: the `keras.Model`.
        path: the target, ending in ".keras".

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in .keras; received {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    check_free_space(path.parent, model_bytes(model), f"the model {path.name}")
    tmp = _temporary_path(path, ".keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# Room kept free beyond a file's own size: a full disk breaks more than the file being saved.
FREE_SPACE_MARGIN_BYTES = 16 * 2**20


def model_bytes(model) -> int:
    """About the bytes a model's weights (and its optimiser's state) take in a file."""

    def size(variable):
        bits = re.search(r"\d+", str(variable.dtype))
        return math.prod(variable.shape) * (int(bits.group()) // 8 if bits else 4)

    optimizer = getattr(model, "optimizer", None)
    variables = list(model.variables) + list(getattr(optimizer, "variables", None) or [])
    return sum(size(v) for v in variables)


def check_free_space(folder, needed_bytes: int, what: str) -> None:
    """Refuses to start writing `what` into `folder` if the disk cannot hold it.

    A write that runs out of space half-way leaves partial files behind (and h5py, which
    writes Keras's weights, can crash the process on its way out); checking first turns
    the common case, a disk that is already nearly full, into one clear error.

    Raises:
        OSError: errno ENOSPC, saying how much is needed and how much is free.
    """
    free = shutil.disk_usage(folder).free
    if free < needed_bytes + FREE_SPACE_MARGIN_BYTES:
        raise OSError(
            errno.ENOSPC,
            f"not enough disk space in {folder} for {what}: about "
            f"{(needed_bytes + FREE_SPACE_MARGIN_BYTES) / 1e6:.0f} MB needed, {free / 1e6:.0f} MB "
            "free. Free some space and run again (a killed or failed run resumes from its backup)",
        )


def remove_stale_temporaries(folder, stems=("best", "final", "history")) -> list:
    """Deletes the temporary files an interrupted atomic write left in `folder`.

    A process killed between writing a temporary file and renaming it into place
    leaves `.best.k3j_x9a2.keras` or `.history.p0q8zz1m.tmp` behind (often 0 bytes).
    Only names of exactly that form, for the given stems, are removed.

    Args:
        folder: the folder to clean; a missing folder is fine.
        stems: the file stems whose temporaries to remove. Defaults to the
            training run's ("best", "final", "history").

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = "|".join(map(re.escape, stems))
    pattern = re.compile(rf"^\.({names})\.[a-z0-9_]{{8}}\.(tmp|keras)$")
    removed = []
    for path in folder.iterdir():
        if pattern.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def refuse_legacy_hdf5(path) -> None:
    """Refuses a legacy HDF5 model (`.h5`, `.hdf5`, any case) by its name.

    Keras's safe mode does not apply to HDF5 files, so an untrusted one can run code
    when loaded. `load_model` and `inference.detect_format` both call this.

    Args:
        path: a model path.

    Raises:
        ValueError: `path` ends in a legacy suffix; the message says how to convert it.
    """
    path = Path(path)
    if path.suffix.lower() in LEGACY_SUFFIXES:
        raise ValueError(
            f"refusing to load {path}: legacy HDF5 (.h5) models bypass Keras's safe mode and an "
            "untrusted one can run code. Re-save a trusted copy with model.save('model.keras')."
        )


def load_model(path, compile=True):
    """Loads a `.keras` model in Keras's safe mode, with this package's custom layers.

    The custom objects (`ScaledBias`, `ShiftFlip`, `PiecewiseLinear`) are passed explicitly, so
    nothing has to be imported first for Keras to find them:

        model = cifar_utils.load_model("models/fast_net.keras")

    Safe mode refuses Python code hidden in the file (Lambda layers). Legacy HDF5
    files are refused outright, as safe mode does not apply to them.

    Args:
        path: a `.keras` file.
        compile: also restore the optimiser and loss when the file has them.
            Defaults to True.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: the path is missing, is a legacy `.h5`/`.hdf5` file, is not a
            `.keras` zip archive, or is one of hostile size (`keras_archives`).
    """
    path = Path(path)
    refuse_legacy_hdf5(path)
    if not path.is_file():
        raise ValueError(f"no model file at {path}")
    if path.suffix.lower() != ".keras" or not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .keras file (a zip archive, as every .keras file is)")
    check_keras_archive(path)  # sizes and members, before Keras builds or extracts anything
    return keras.saving.load_model(
        path, custom_objects=CUSTOM_OBJECTS, compile=compile, safe_mode=True
    )
