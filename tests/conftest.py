"""Shared fixtures: small synthetic CIFAR-10 folders in the official pickle format."""

import os
import pickle

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cifar_utils import data  # noqa: E402

PER_BATCH = 20  # images per synthetic batch: 5 x 20 training, 20 test


def write_batch(path, images, labels, protocol=4):
    """Writes `images` (N, 32, 32, 3) and `labels` like an official batch file."""
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        b"batch_label": b"synthetic",
        b"labels": [int(v) for v in labels],
        b"data": np.ascontiguousarray(flat),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def make_synthetic(folder, per_batch=PER_BATCH, seed=0):
    """Writes data_batch_1..5 and test_batch with random pixels; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_train = 5 * per_batch
    x_train = rng.integers(0, 256, size=(n_train, 32, 32, 3), dtype=np.uint8)
    y_train = np.arange(n_train) % 10
    rng.shuffle(y_train)
    x_test = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
    y_test = np.arange(per_batch) % 10
    for i, name in enumerate(data.TRAIN_FILES):
        s = slice(i * per_batch, (i + 1) * per_batch)
        write_batch(folder / name, x_train[s], y_train[s])
    write_batch(folder / data.TEST_FILE, x_test, y_test)
    return (x_train, y_train), (x_test, y_test)


@pytest.fixture
def synthetic_dir(tmp_path):
    """A folder holding a complete small synthetic copy and the arrays written."""
    folder = tmp_path / "cifar-10-batches-py"
    arrays = make_synthetic(folder)
    return folder, arrays


@pytest.fixture
def no_cifar_env(monkeypatch, tmp_path):
    """No $CIFAR10_DIR and an empty Keras home, so only explicit sources count."""
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


@pytest.fixture(scope="session")
def tiny_data():
    """Random uint8 images with balanced labels: 64 to train on, 32 to validate on."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
    y = np.arange(96) % 10
    return x[:64], y[:64], x[64:], y[64:]
