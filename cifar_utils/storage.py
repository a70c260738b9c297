"""Writing results so that an interrupted save never leaves a broken file.

Each function writes to a temporary name in the same folder, then renames it
over the target with `os.replace`, which is atomic on POSIX and Windows: a
reader sees the old complete file or the new complete file, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _temporary_path(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


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
    tmp = _temporary_path(path, ".keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
    import re

    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(r"^\.(%s)\.[a-z0-9_]{8}\.(tmp|keras)$" % "|".join(map(re.escape, stems)))
    removed = []
    for path in folder.iterdir():
        if pattern.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
