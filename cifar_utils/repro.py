"""Reproducibility: one seed for Python, NumPy, TensorFlow and Keras, and deterministic ops.

`set_seed(seed)` is the explicit call a notebook makes at the top of an experiment; it
changes process-wide state (the random generators and, by default, TensorFlow's op
determinism) on purpose, and says so. `deterministic(seed)` does the same for the
length of a `with` block and then puts op determinism back as it was: `training.train`
uses it, so that training leaves no setting behind in the notebook or test that called it.

The facts recorded next to each result are gathered by `reports.run_info`.
"""

from __future__ import annotations

import contextlib

import keras

from cifar_utils import backend, checks


# TensorFlow's public API can turn op determinism on but not read or turn it off; these
# two, from the module that implements `tf.config.experimental.enable_op_determinism`,
# let `deterministic()` restore the earlier state. Checked by tests/test_repro.py. Should a
# TensorFlow release move them, determinism stays on after the block (as `set_seed` leaves
# it) instead of the import failing.
def _determinism_switches():
    """`(is_enabled, disable)` from TensorFlow, or stand-ins where they are missing."""
    try:
        from tensorflow.python.framework.config import (
            disable_op_determinism,
            is_op_determinism_enabled,
        )
    except ImportError:  # pragma: no cover - TensorFlow 2.18-2.21 have both
        return (lambda: True), None
    return is_op_determinism_enabled, disable_op_determinism


# NumPy's legacy seeding (which Keras's set_random_seed uses) takes 32-bit seeds.
MAX_SEED = 2**32 - 1


def check_seed(seed, name="seed") -> int:
    """`seed` as an int, if it is a whole number from 0 to `MAX_SEED` (else ValueError)."""
    return checks.whole_number(seed, name, 0, maximum=MAX_SEED)


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras in one call, for the rest of the process.

    Args:
        seed: the seed, a non-negative integer.
        deterministic: also make TensorFlow's ops deterministic from now on, so two runs
            on the same machine give identical weights (slightly slower on a GPU).
            Defaults to True. Only TensorFlow has the switch: JAX on the CPU is
            deterministic as it is; on a GPU set `XLA_FLAGS=--xla_gpu_deterministic_ops=true`
            before JAX starts, or `torch.use_deterministic_algorithms(True)` on PyTorch.

    Raises:
        ValueError: the seed is not a whole number >= 0.
    """
    seed = check_seed(seed)
    keras.utils.set_random_seed(seed)  # seeds `random`, NumPy, the backend and Keras
    if deterministic and backend.is_tensorflow():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def deterministic(seed: int, enabled: bool = True):
    """Seeds everything and, inside the block, makes TensorFlow's ops deterministic.

        with repro.deterministic(0):
            model.fit(...)

    On leaving the block op determinism is put back as it was before (the seeds stay
    set: the random generators have moved on anyway).

    Args:
        seed: the seed, a non-negative integer.
        enabled: turn op determinism on inside the block; False only seeds.
            Defaults to True.
    """
    if not backend.is_tensorflow():
        set_seed(seed, deterministic=enabled)
        yield
        return
    is_enabled, disable = _determinism_switches()
    before = is_enabled()
    set_seed(seed, deterministic=enabled)
    try:
        yield
    finally:
        if not before and disable is not None:
            disable()
