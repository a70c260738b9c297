"""Checks on the real CIFAR-10 files; runs when CIFAR10_DIR is set, skips otherwise.

CI builds the offline copy and sets CIFAR10_DIR, so these run there.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from cifar_utils import data

pytestmark = pytest.mark.realdata

if not os.environ.get("CIFAR10_DIR"):
    if os.environ.get("CIFAR_REQUIRE_REAL_DATA") == "1":  # CI: skipping would hide a broken set-up
        raise RuntimeError("CIFAR_REQUIRE_REAL_DATA=1 but CIFAR10_DIR is not set")
    pytest.skip(
        "CIFAR10_DIR is not set: build the offline copy with "
        "`python ../shared/data/build_cifar10.py DIR` and export "
        "CIFAR10_DIR=DIR/cifar-10-batches-py to run the real-data tests",
        allow_module_level=True,
    )

# The first 1,000 official test images, lossless (see ../shared/data/SOURCE.md).
REFERENCE_PNG = Path(
    os.environ.get(
        "CIFAR10_REFERENCE_PNG",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "official_test_first_1000.png",
    )
)


@pytest.fixture(scope="module")
def cifar():
    return data.load_cifar10(verbose=False)


def test_sizes_and_dtypes(cifar):
    (x_train, y_train), (x_test, y_test) = cifar
    assert x_train.shape == (50_000, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (50_000, 1) and y_train.dtype == np.uint8
    assert x_test.shape == (10_000, 32, 32, 3) and y_test.shape == (10_000, 1)


def test_classes_are_balanced(cifar):
    (_, y_train), (_, y_test) = cifar
    assert list(np.bincount(y_train.ravel(), minlength=10)) == [5_000] * 10
    assert list(np.bincount(y_test.ravel(), minlength=10)) == [1_000] * 10


def test_first_training_labels(cifar):
    (_, y_train), _ = cifar
    assert list(y_train[:10, 0]) == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


def test_channel_statistics_are_cifar_like(cifar):
    (x_train, _), _ = cifar
    mean, std = data.channel_stats(x_train)
    np.testing.assert_allclose(mean, data.CIFAR10_MEAN, atol=0.005)
    np.testing.assert_allclose(std, data.CIFAR10_STD, atol=0.005)


@pytest.mark.skipif(not REFERENCE_PNG.exists(), reason=f"no lossless reference at {REFERENCE_PNG}")
def test_pixels_match_lossless_reference(cifar):
    """Orientation and channel order are right: the first 1,000 test images match
    the lossless official ones up to JPEG noise (mean 5.8/255 per SOURCE.md)."""
    _, (x_test, y_test) = cifar
    # One image per row of 1024 pixels, each pixel an RGB triple (the package's reader).
    reference = data.load_lossless_test_sample(REFERENCE_PNG).astype(np.int16)
    diff = np.abs(x_test[:1000].astype(np.int16) - reference).mean(axis=(1, 2, 3))
    assert diff.mean() < 10, f"mean absolute difference {diff.mean():.1f}/255"
    assert diff.max() < 20
    # A transposed or channel-swapped loader would be far off.
    swapped = np.abs(x_test[:1000, :, :, ::-1].astype(np.int16) - reference).mean()
    transposed = np.abs(x_test[:1000].transpose(0, 2, 1, 3).astype(np.int16) - reference).mean()
    assert swapped > 2 * diff.mean() and transposed > 2 * diff.mean()


def test_validation_split_comes_from_training_data(cifar):
    (x_train, y_train), _ = cifar
    (x_tr, _), (x_val, y_val) = data.split_train_val(x_train, y_train, 0.1, seed=0)
    assert len(x_tr) == 45_000 and len(x_val) == 5_000
    assert list(np.bincount(y_val.ravel(), minlength=10)) == [500] * 10
