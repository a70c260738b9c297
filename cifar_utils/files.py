"""Opening a file that may not be a file: a FIFO, a device or a folder in its place never
blocks or misleads.

`open(path)` on a FIFO waits forever for a writer; `/dev/zero` reads forever; a folder
fails with an unhelpful error. `open_regular` opens without blocking and then checks, on
the open descriptor, that it holds a regular file, so a file swapped for a FIFO between a
check and the open cannot hang the reader either:

    with files.open_regular("cat.jpg") as f:
        data = f.read()

The CIFAR-10 batch files and pictures are opened this way; model files, which TensorFlow
and Keras open by name, are checked with `check_regular` first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotRegularFileError(OSError):
    """The path names something other than a regular file (a FIFO, device, socket, folder)."""


def kind(mode: int) -> str:
    """What a `st_mode` names, in words: "a folder", "a FIFO (named pipe)", ..."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path):
    """Opens `path` for reading in binary, if it is a regular file, without ever blocking.

    Raises:
        FileNotFoundError: nothing at `path`.
        NotRegularFileError: a folder, FIFO, device or socket is there (its kind is said).
        OSError: it cannot be opened (no permission, a symlink loop, a name too long).
    """
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no FIFOs to wait on
    fd = os.open(Path(path), os.O_RDONLY | nonblocking | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{path} is {kind(mode)}, not a regular file")
        if nonblocking:
            os.set_blocking(fd, True)  # a regular file: plain reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path) -> None:
    """Raises `NotRegularFileError` unless `path` is a regular file (following symlinks).

    For files that another library opens by name (TFLite, SavedModel): this cannot close
    the gap between the check and that library's open, so prefer `open_regular` where the
    bytes can be handed over.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(f"{path} is {kind(mode)}, not a regular file")
