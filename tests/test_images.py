"""cifar_utils.images against hostile and unusual pictures (issue 23, items 3 and 4): only the
accepted formats are decoded, and a very large picture of any mode stays within a memory
bound (measured in a child process)."""

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cifar_utils import images

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n"


def test_an_eps_upload_never_reaches_ghostscript(tmp_path, monkeypatch):
    """With a `gs` on PATH that would leave a mark, an EPS picture is refused by format."""
    marker = tmp_path / "gs-ran"
    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{gs.parent}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("gs") == str(gs)
    for source in (EPS, io.BytesIO(EPS)):
        with pytest.raises(
            images.ImageError, match=r"not an image in an accepted format \(PNG, JPEG"
        ):
            images.load_image(source)
    path = tmp_path / "drawing.eps"
    path.write_bytes(EPS)
    with pytest.raises(images.ImageError) as info:
        images.load_image(path)
    assert not marker.exists()
    assert str(tmp_path) not in str(info.value) and "gs" not in str(info.value).split()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_every_accepted_format_loads(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, fmt)
    assert images.load_image(buffer.getvalue()).shape == (32, 32, 3)


# Modes a file can hold at 9,400 x 9,400 (88 megapixels), the format that stores it, and
# the size Pillow decodes it to (its own layout: 1 byte a pixel for "1", "L" and "P", 2 for
# "I;16", 4 for the rest, "LA" and "RGB" included): load_image may take that and 200 MB
# more, never a full-size copy on top (16-bit greyscale took +1,291 MB before).
SIDE = 9400
MODES = {
    "1": ("PNG", 88),
    "L": ("PNG", 88),
    "P": ("PNG", 88),
    "LA": ("PNG", 353),
    "I;16": ("PNG", 177),
    "I": ("TIFF", 353),
    "F": ("TIFF", 353),
    "RGB": ("PNG", 353),
    "RGBA": ("PNG", 353),
    "CMYK": ("TIFF", 353),
}

# The child's own peak (VmHWM: this process's memory map, new at exec; ru_maxrss would
# start from the parent's peak on Linux and hide the growth).
CHILD = """
import sys
from cifar_utils import images
def peak_kb():
    lines = open("/proc/self/status").read().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("VmHWM:"))
before = peak_kb()
out = images.load_image(sys.argv[1])
print((peak_kb() - before) / 1024, out.shape, out.dtype)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_huge_picture_of_any_mode_stays_within_its_decoded_size(mode, tmp_path):
    fmt, decoded_mb = MODES[mode]
    # A gradient, so that 16-bit and float values span a range to stretch.
    ramp = np.linspace(0, 1, SIDE, dtype=np.float32)[None, :]
    if mode in ("I;16", "I", "F"):
        scale = {"I;16": 65535, "I": 1_000_000, "F": 3.5}[mode]
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        array = np.broadcast_to(ramp * scale, (SIDE, SIDE)).astype(dtype)
        picture = Image.fromarray(array)  # uint16: I;16, int32: I, float32: F
        assert picture.mode == mode
    else:
        picture = Image.new(mode, (SIDE, SIDE))
        if mode == "P":
            picture.putpalette([v for i in range(256) for v in (i, 255 - i, 128)])
    path = tmp_path / f"big.{fmt.lower()}"
    picture.save(path, fmt)
    del picture
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CIFAR_TF_LOGS": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown_mb, shape = float(proc.stdout.split()[0]), proc.stdout.split(None, 1)[1]
    assert "(32, 32, 3) uint8" in shape
    assert grown_mb < decoded_mb + 200, f"{mode}: +{grown_mb:.0f} MB for {decoded_mb} MB decoded"


# --- issue 23, item 10: FIFOs where files were expected ----------------------------------------

fifo_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


def _within(seconds, fn):
    """Runs `fn` in a thread; its result, or a failure if it has not returned in time."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except Exception as err:  # noqa: BLE001 - reported below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{fn} hung for {seconds} s")
    return outcome


@fifo_only
def test_a_fifo_in_place_of_a_picture_never_hangs(tmp_path):
    fifo = tmp_path / "cat.jpg"
    os.mkfifo(fifo)
    outcome = _within(10, lambda: images.load_image(fifo))
    assert isinstance(outcome.get("error"), images.ImageError)
    assert "is a FIFO (named pipe), not a regular file" in str(outcome["error"])
    outcome = _within(10, lambda: images.load_image("/dev/zero"))
    assert "is a character device" in str(outcome["error"])  # not "empty (0 bytes)"


@fifo_only
def test_a_fifo_in_place_of_a_model_never_hangs(tmp_path):
    from cifar_utils import inference

    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    outcome = _within(10, lambda: inference.Classifier(fifo))
    assert "is a FIFO (named pipe)" in str(outcome.get("error")), outcome
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    os.mkfifo(saved / "saved_model.pb")
    outcome = _within(10, lambda: inference.Classifier(saved))
    assert "saved_model.pb is a FIFO (named pipe)" in str(outcome.get("error")), outcome


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
@pytest.mark.parametrize("exif", [b"Exif\x00\x00garbage!!", b"garbage"])
def test_broken_exif_is_ignored_in_every_format(fmt, exif):
    """Issue 23, item 12: JPEG ignored it, PNG and WebP failed with 'not a TIFF file'."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(buffer, fmt, exif=exif)
    out = images.load_image(buffer.getvalue())
    assert out.shape == (32, 32, 3) and abs(int(out[16, 16, 1]) - 200) < 8
