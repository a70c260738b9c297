"""Reading one CIFAR-10 batch file safely: `read_batch`.

The official python-version CIFAR-10 files (`data_batch_1` .. `data_batch_5` and
`test_batch`) are pickles. Each holds a dict: `data`, a uint8 array of N rows of 3,072
values (1,024 red, then 1,024 green, then 1,024 blue: one 32 x 32 image per row), and
`labels`, a list of N integers 0..9.

Why not just `pickle.load`: unpickling a file can call any function Python can import,
so a crafted "batch file" could run code (`os.system`, `eval`...) the moment it is read.
`read_batch` uses a restricted unpickler instead, which can only rebuild numpy arrays of
plain numbers and refuses every other global before looking it up. It then checks the
rest before converting anything: the keys, the array's shape and dtype, and that the
labels are N integers 0..9 (a nested list that would expand to billions of elements is
refused unexpanded). A missing file, or a FIFO or a folder in its place, is reported
without blocking. Every error is a `CIFAR10DataError` (`CIFAR10NotFoundError` for a
missing file) that names the file.

`data.load_cifar10` reads the six files of a folder through `read_batch`.
"""

from __future__ import annotations

import os
import pickle
import reprlib
from pathlib import Path

import numpy as np

from cifar_utils import files

try:
    from numpy._core.multiarray import _reconstruct  # NumPy 2
except ImportError:  # NumPy 1.26
    from numpy.core.multiarray import _reconstruct

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
IMAGES_PER_BATCH = 10_000
NUM_CLASSES = 10  # labels are 0..9; `data.CLASS_NAMES` names them

FIX_HINT = (
    "To fix it: point the environment variable CIFAR10_DIR (or `data_dir=`) at a complete "
    "`cifar-10-batches-py` folder (`bash scripts/setup.sh` rebuilds the offline copy into "
    ".cache/cifar10 when it finds one), or go online and let Keras download it."
)


class CIFAR10DataError(ValueError):
    """A CIFAR-10 file is corrupt, malicious, or has the wrong shape or labels."""


class CIFAR10NotFoundError(CIFAR10DataError, FileNotFoundError):
    """A CIFAR-10 folder or file is missing."""


def _plain_dtype(spec, align=False, copy=False):
    """`numpy.dtype` as the unpickler may call it: plain numbers only, always a new object."""
    try:
        dtype = np.dtype(spec)
    except Exception:
        raise pickle.UnpicklingError(f"refused the dtype {spec!r}: not a numpy type") from None
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(
            f"refused the dtype {spec!r}: a CIFAR-10 batch holds plain numbers only"
        )
    return np.dtype(spec, False, True)  # a copy: a state set on it cannot touch numpy's own


class _NumpyOnlyUnpickler(pickle._Unpickler):
    """Unpickler that can only rebuild numpy arrays of plain numbers.

    The CIFAR-10 batch files are pickles of a dict of bytes, ints, lists and one
    numpy array. Rebuilding the array needs exactly these globals; anything else
    (`os.system`, `builtins.eval`, ...) is refused before it is looked up, so
    nothing in a crafted file can run. `numpy.dtype` is replaced by `_plain_dtype`
    (no object, structured or sub-array dtypes), and a file may set the state
    (the BUILD opcode) only of an array, or of a dtype to exactly the state numpy
    itself writes for it: a crafted dtype state (an object dtype whose flags say it
    holds no objects) would make numpy read raw bytes as pointers and crash.
    Every array must also receive its contents: `_reconstruct` (and a direct call of
    `numpy.ndarray`) allocates memory without clearing it, so an array whose state is
    never set would hand back whatever bytes the process's heap held as pixels. Direct
    calls of `numpy.ndarray` are refused, and arrays left without a state after loading.
    This is the pure-Python unpickler, whose opcodes can be overridden; a batch
    file still loads in milliseconds (one large bytes object, a list of ints).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.arrays_without_contents = []  # made by _reconstruct, not yet given a state

    def _reconstruct(self, *args):
        array = _reconstruct(*args)
        self.arrays_without_contents.append(array)
        return array

    def _refuse_ndarray(self, klass):
        if klass is np.ndarray:
            raise pickle.UnpicklingError(
                "refused to build an array from nothing (numpy.ndarray called directly): its "
                "pixels would be whatever memory held"
            )

    def load_reduce(self):
        self._refuse_ndarray(self.stack[-2])
        super().load_reduce()

    def load_newobj(self):
        self._refuse_ndarray(self.stack[-2])
        super().load_newobj()

    def load_newobj_ex(self):
        self._refuse_ndarray(self.stack[-3])
        super().load_newobj_ex()

    def _instantiate(self, klass, args):  # the INST and OBJ opcodes of protocols 0 and 1
        self._refuse_ndarray(klass)
        super()._instantiate(klass, args)

    def load(self):
        result = super().load()
        if self.arrays_without_contents:
            shapes = ", ".join(str(a.shape) for a in self.arrays_without_contents[:3])
            raise pickle.UnpicklingError(
                f"refused an array that never received its contents (shape {shapes}): its "
                "pixels would be whatever memory held"
            )
        return result

    ALLOWED = {
        ("numpy", "ndarray"): None,
        ("numpy", "dtype"): _plain_dtype,
        ("numpy.core.multiarray", "_reconstruct"): None,
        ("numpy._core.multiarray", "_reconstruct"): None,
    }

    def find_class(self, module, name):
        if name == "_reconstruct" and (module, name) in self.ALLOWED:
            return self._reconstruct  # the same, remembering the arrays it made
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)] or super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load global `{module}.{name}`: a CIFAR-10 batch holds only "
            "numpy arrays, lists and strings"
        )

    def load_build(self):
        state, target = self.stack[-1], self.stack[-2]
        if isinstance(target, np.dtype):
            expected = np.dtype(target.str).__reduce__()[2]
            if not (
                isinstance(state, tuple)
                and len(state) >= 8
                and state[1] in "<>|="
                and state[2:5] == (None, None, None)
                and state[7] == expected[7]
            ):
                raise pickle.UnpicklingError(
                    f"refused a crafted state for dtype {target.str!r}: {state!r:.80}"
                )
        elif not isinstance(target, np.ndarray):
            raise pickle.UnpicklingError(
                f"refused to set the state of a {type(target).__name__}: only arrays have one"
            )
        super().load_build()
        if isinstance(target, np.ndarray):  # its contents arrived (numpy checks their size)
            self.arrays_without_contents = [
                a for a in self.arrays_without_contents if a is not target
            ]

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex


def _parse_batch(stream, path: Path, images_per_batch: int | None):
    """Parses one open batch file into `(images uint8 (N, 32, 32, 3), labels uint8 (N,))`."""
    try:
        batch = _NumpyOnlyUnpickler(stream, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        if str(err).startswith("refused"):
            raise CIFAR10DataError(
                f"{path} was not loaded: {err}. The file is corrupt or was crafted to run "
                f"code; delete it. {FIX_HINT}"
            ) from None
        raise CIFAR10DataError(f"{path} is truncated or corrupt ({err}). {FIX_HINT}") from None
    except Exception as err:  # EOFError, ValueError, TypeError... from a damaged stream
        raise CIFAR10DataError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}). {FIX_HINT}"
        ) from None
    if not isinstance(batch, dict):
        raise CIFAR10DataError(
            f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch dict. {FIX_HINT}"
        )
    try:
        batch = {k.decode("utf-8") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    except UnicodeDecodeError:
        raise CIFAR10DataError(f"{path}: its keys are not UTF-8 text. {FIX_HINT}") from None
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise CIFAR10DataError(
            f"{path} lacks the 'data' array or the 'labels' list "
            f"(keys found: {sorted(map(repr, batch))[:10]}). {FIX_HINT}"
        )
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CIFAR10DataError(
            f"{path}: 'data' has shape {data.shape} and dtype {data.dtype}; expected "
            f"(N, 3072) uint8 rows of 1024 red, 1024 green and 1024 blue values. {FIX_HINT}"
        )
    if images_per_batch is not None and data.shape[0] != images_per_batch:
        raise CIFAR10DataError(
            f"{path}: holds {data.shape[0]} images; an official batch holds "
            f"{images_per_batch}. The file is incomplete. {FIX_HINT}"
        )
    labels = _checked_labels(labels, data.shape[0], path)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def _checked_labels(labels, n, path):
    """The labels as uint8, after checking their structure before converting anything.

    A flat list of `n` Python ints, or a 1-D integer array of length `n`, all in 0..9.
    Anything else (floats, NaN, booleans, strings, None, nested lists that expand to
    billions of elements) is refused without being expanded.
    """
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise CIFAR10DataError(
                f"{path}: 'labels' is a {labels.ndim}-D {labels.dtype} array; expected a 1-D "
                f"integer array or a list of integers 0..9. {FIX_HINT}"
            )
        count = len(labels)
    elif isinstance(labels, list):
        count = len(labels)
    else:
        raise CIFAR10DataError(
            f"{path}: 'labels' is a {type(labels).__name__}; expected a list of integers "
            f"0..9. {FIX_HINT}"
        )
    if count != n:
        raise CIFAR10DataError(f"{path}: {count} labels for {n} images. {FIX_HINT}")
    if isinstance(labels, list):
        odd = next((i for i, v in enumerate(labels) if type(v) is not int), None)  # bool too
        if odd is not None:
            raise CIFAR10DataError(
                f"{path}: 'labels' holds a {type(labels[odd]).__name__} "
                f"({reprlib.repr(labels[odd])}); expected integers 0..9. {FIX_HINT}"
            )
    if n and (min(labels) < 0 or max(labels) >= NUM_CLASSES):
        raise CIFAR10DataError(
            f"{path}: labels range from {min(labels)} to {max(labels)}; expected 0..9. {FIX_HINT}"
        )
    return np.asarray(labels, dtype=np.int64).astype(np.uint8)


def _open(path: Path):
    """Opens a batch file for reading: a regular file only, never blocking on a FIFO."""
    try:
        return files.open_regular(path)
    except FileNotFoundError:
        raise CIFAR10NotFoundError(
            f"{path} is missing: a complete copy has {', '.join(TRAIN_FILES)} and "
            f"{TEST_FILE} in {path.parent}. {FIX_HINT}"
        ) from None
    except files.NotRegularFileError as err:
        raise CIFAR10DataError(f"{err} (a complete copy holds files). {FIX_HINT}") from None
    except OSError as err:  # a symlink loop, no permission, a name too long...
        raise CIFAR10DataError(f"{path} cannot be opened ({err.strerror}). {FIX_HINT}") from None


def read_batch(path: str | os.PathLike, images_per_batch: int | None = IMAGES_PER_BATCH):
    """Reads one official python-version batch file safely.

    Args:
        path: the batch file (`data_batch_N` or `test_batch`).
        images_per_batch: the number of images the file must hold. Defaults to
            10,000, as in every official file; None accepts any number.

    Returns:
        `(images, labels)`: uint8 arrays of shapes `(N, 32, 32, 3)` and `(N,)`.

    Raises:
        CIFAR10NotFoundError: the file is missing.
        CIFAR10DataError: the file is truncated, corrupt, tries to unpickle
            anything but numpy arrays, or has the wrong shape or labels.
    """
    path = Path(path)
    with _open(path) as stream:
        try:
            return _parse_batch(stream, path, images_per_batch)
        except CIFAR10DataError:
            raise
        except Exception as err:  # anything unforeseen still names the file
            raise CIFAR10DataError(
                f"{path} could not be read ({type(err).__name__}: {err}). {FIX_HINT}"
            ) from None
