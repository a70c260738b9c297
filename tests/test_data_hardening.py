"""Crafted and odd batch files (issue 13): every one is refused with a CIFAR10DataError that
names the file, quickly, with bounded memory, and nothing in a file can crash the process."""

import os
import pickle
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest
from conftest import write_batch

from cifar_utils import batch_files

N = 10  # images per crafted batch


def _images(n=N):
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _flat(images):
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def _write(path, batch, protocol=4):
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return path


def _refused(path, match=None):
    with pytest.raises(batch_files.CIFAR10DataError) as info:
        batch_files.read_batch(path, images_per_batch=None)
    message = str(info.value)
    assert str(path) in message or path.name in message, message  # names the file
    if match:
        assert match in message, message
    return message


def test_a_crafted_object_dtype_cannot_crash_the_process(tmp_path):
    """A file may not set a dtype's state: flags 0 on an object dtype would make numpy read
    the array's raw bytes as object pointers (SIGSEGV on labels.min())."""
    labels = np.full(N, 0x4141414141414141, dtype=np.int64)  # the "pointers"
    raw = pickle.dumps({b"data": _flat(_images()), b"labels": labels}, protocol=4)
    crafted = raw.replace(b"\x8c\x02i8", b"\x8c\x02O8")  # dtype('i8') -> dtype('O8'), same length
    assert crafted != raw
    path = tmp_path / "data_batch_1"
    path.write_bytes(crafted)
    code = (
        "from cifar_utils import batch_files\n"
        "try:\n"
        f"    batch_files.read_batch({str(path)!r}, images_per_batch=None)\n"
        "except batch_files.CIFAR10DataError as err:\n"
        "    print('REFUSED', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        f"the process died (status {done.returncode}): {done.stderr[-500:]}"
    )
    assert "REFUSED" in done.stdout and "data_batch_1" in done.stdout, done.stdout


def test_a_structured_dtype_is_refused(tmp_path):
    labels = np.zeros(N, dtype=[("a", "i4"), ("b", "i4")])
    path = _write(tmp_path / "test_batch", {b"data": _flat(_images()), b"labels": labels})
    _refused(path, "dtype")


def test_billion_laughs_labels_are_refused_before_any_expansion(tmp_path):
    nested = [0] * 10
    for _ in range(7):  # 10 ** 8 elements once expanded; a few hundred bytes in the file
        nested = [nested] * 10
    assert len(nested) == N
    path = _write(tmp_path / "data_batch_2", {b"data": _flat(_images()), b"labels": nested})
    assert path.stat().st_size < 40_000
    tracemalloc.start()
    try:
        _refused(path, "labels")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The file's own arrays are 31 KB; a few MB allow for the parser. Expanding the labels, even
    # only to show them in the error message, takes 30 MB at this depth and 10x more per level.
    assert peak < 5e6, f"refusing it took {peak / 1e6:.0f} MB: the nested labels were expanded"


@pytest.mark.parametrize(
    "labels",
    [
        [float("nan")] * N,
        [3.7] * N,
        [True] * N,
        ["3"] * N,
        [None] * N,
        np.full(N, 3.0),
        np.full(N, True),
        [[1]] * N,
        [0] * (N - 1) + [10**30],
    ],
    ids=["nan", "float", "bool", "str", "none", "float-array", "bool-array", "nested", "huge-int"],
)
def test_labels_that_are_not_integers_0_to_9_are_refused(tmp_path, labels):
    path = _write(tmp_path / "data_batch_3", {b"data": _flat(_images()), b"labels": labels})
    _refused(path, "labels")


def test_integer_labels_as_a_list_or_an_int_array_still_load(tmp_path):
    for labels in ([int(v) for v in np.arange(N) % 10], (np.arange(N) % 10).astype(np.int64)):
        path = _write(tmp_path / "data_batch_4", {b"data": _flat(_images()), b"labels": labels})
        images, loaded = batch_files.read_batch(path, images_per_batch=None)
        assert images.shape == (N, 32, 32, 3) and loaded.tolist() == list(np.arange(N) % 10)


def test_keys_that_are_not_utf8_or_of_mixed_types_are_refused(tmp_path):
    path = _write(tmp_path / "data_batch_5", {b"\xff\xfe": 1, b"labels": [0] * N})
    _refused(path)
    path = _write(tmp_path / "test_batch", {1: 2, "x": 3, b"y": 4})
    _refused(path, "data")


def test_deep_nesting_is_refused(tmp_path):
    # pickle.dumps itself would recurse: write the opcodes by hand. MARK x 5000, the int 0,
    # then LIST x 5000 gives [[[...[0]...]]], 5,000 deep, as the value of b"labels".
    array = pickle.dumps(_flat(_images()), protocol=3)[2:-1]  # without PROTO and STOP
    raw = (
        b"\x80\x03}(C\x04data"
        + array
        + b"C\x06labels"
        + b"(" * 5_000
        + b"K\x00"
        + b"l" * 5_000
        + b"u."
    )
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    _refused(path)


def test_a_folder_or_a_symlink_loop_in_place_of_a_file(tmp_path):
    folder = tmp_path / "data_batch_1"
    folder.mkdir()
    _refused(folder, "not a regular file")
    loop = tmp_path / "test_batch"
    loop.symlink_to(tmp_path / "test_batch")
    _refused(loop)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_in_place_of_a_file_does_not_hang(tmp_path):
    fifo = tmp_path / "data_batch_1"
    os.mkfifo(fifo)
    outcome = {}

    def read():
        try:
            batch_files.read_batch(fifo)
        except batch_files.CIFAR10DataError as err:
            outcome["error"] = str(err)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # release the hung reader so the test session can go on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_batch hung on a FIFO")
    assert "not a regular file" in outcome.get("error", ""), outcome


def test_a_legitimate_batch_still_round_trips(tmp_path):
    images = _images()
    write_batch(tmp_path / "data_batch_1", images, np.arange(N) % 10)
    loaded, labels = batch_files.read_batch(tmp_path / "data_batch_1", images_per_batch=None)
    np.testing.assert_array_equal(loaded, images)


# --- issue 23, item 9: arrays that never receive their contents --------------------------------


class _Uninitialised:
    """Pickles as numpy's own `_reconstruct(ndarray, shape, dtype)` with no state after it:
    the array numpy allocates is never filled."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return (batch_files._reconstruct, (np.ndarray, self.shape, np.dtype("u1")))


class _DirectNdarray:
    """Pickles as a direct call of `numpy.ndarray(shape, dtype)`: uninitialised memory too."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return (np.ndarray, (self.shape, np.dtype("u1")))


@pytest.mark.parametrize("protocol", [3, 4])
@pytest.mark.parametrize("array", [_Uninitialised((N, 3072)), _DirectNdarray((N, 3072))])
def test_an_array_that_never_receives_its_contents_is_refused(tmp_path, protocol, array):
    path = _write(tmp_path / "data_batch_1", {b"data": array, b"labels": [0] * N}, protocol)
    message = _refused(path, "was not loaded")
    assert "whatever memory held" in message


def test_a_legitimate_batch_of_every_protocol_still_loads(tmp_path):
    for protocol in (3, 4):  # 2 writes bytes with _codecs, 5 arrays with _frombuffer
        images = _images()
        path = _write(
            tmp_path / f"b{protocol}", {b"data": _flat(images), b"labels": [1] * N}, protocol
        )
        x, y = batch_files.read_batch(path, images_per_batch=None)
        np.testing.assert_array_equal(x, images)
