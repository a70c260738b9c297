"""cifar_utils.repro: quick mode, seeding, run facts."""

import json

import numpy as np
import pytest

from cifar_utils import repro


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_quick_mode(monkeypatch, value, expected):
    monkeypatch.setenv("CIFAR_QUICK", value)
    assert repro.is_quick_mode() is expected


def test_quick_mode_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("CIFAR_QUICK", "maybe")
    with pytest.raises(ValueError, match="received 'maybe'"):
        repro.is_quick_mode()


def test_set_seed_repeats_random_draws():
    import tensorflow as tf

    repro.set_seed(11, deterministic=False)
    a = (np.random.rand(3), tf.random.uniform((3,)).numpy())
    repro.set_seed(11, deterministic=False)
    b = (np.random.rand(3), tf.random.uniform((3,)).numpy())
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="received -1"):
        repro.set_seed(-1)


def test_run_info_is_json_and_complete():
    info = repro.run_info(seed=3, epochs=2)
    json.dumps(info)
    for key in ("cpu", "cpu_cores", "gpus", "python", "tensorflow", "keras", "numpy", "date"):
        assert info[key] is not None
    assert info["seed"] == 3 and info["epochs"] == 2
