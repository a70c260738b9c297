"""cifar_utils.repro: one seed for every generator, and op determinism for a block only.

Quick mode is tested in test_paths.py, the run facts in test_reports.py.
"""

import json
import random
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_utils import repro


def _draws():
    """One draw from each generator `set_seed` seeds, and a freshly initialised layer."""
    layer = keras.layers.Dense(4)
    layer.build((None, 3))
    return [
        random.random(),
        np.random.rand(3),
        tf.random.uniform((3,)).numpy(),
        keras.random.uniform((3,)).numpy(),
        layer.kernel.numpy(),
    ]


def test_set_seed_repeats_random_draws_and_a_different_seed_changes_them():
    repro.set_seed(11, deterministic=False)
    first = _draws()
    repro.set_seed(11, deterministic=False)
    again = _draws()
    repro.set_seed(12, deterministic=False)
    other = _draws()
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_deterministic_block_seeds_like_set_seed():
    repro.set_seed(5, deterministic=False)
    expected = _draws()
    with repro.deterministic(5, enabled=False):  # enabled=False: no global op setting touched here
        inside = _draws()
    for a, b in zip(expected, inside):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_set_seed_refuses_what_is_not_a_seed(seed):
    with pytest.raises(ValueError, match="seed must be a whole number.*received"):
        repro.set_seed(seed)


DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import json
    from tensorflow.python.framework.config import is_op_determinism_enabled as on
    from cifar_utils import repro

    states = [on()]
    with repro.deterministic(1):
        states.append(on())
    states.append(on())
    with repro.deterministic(1, enabled=False):
        states.append(on())
    try:
        with repro.deterministic(2):
            raise KeyError("inside")
    except KeyError:
        pass
    states.append(on())  # restored after an error too
    repro.set_seed(3)  # set_seed turns it on for the rest of the process, on purpose
    states.append(on())
    with repro.deterministic(4):
        states.append(on())
    states.append(on())  # on before the block: still on after it
    print("STATES", json.dumps(states))
    """
)


@pytest.mark.slow
def test_deterministic_restores_op_determinism_on_exit():
    """In a fresh process: op determinism is process-wide and cannot be read back here."""
    out = subprocess.run(
        [sys.executable, "-c", DETERMINISM_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    states = json.loads(out.stdout.split("STATES", 1)[1])
    assert states == [False, True, False, False, False, True, True, True]
