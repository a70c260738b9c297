"""The GPU path, rehearsed on the CPU: every recipe under the settings `setup_devices` picks on
a GPU (mixed float16 / bfloat16, XLA, several replicas), forced here, then evaluated with TTA,
saved, reloaded in safe mode, exported to TFLite and used to classify a picture.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from gpu_rehearsal import rehearse

from cifar_utils import custom_objects, device, models, recipes

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("recipe_name", sorted(recipes.RECIPES))
def test_recipe_under_gpu_settings(recipe_name, policy, tmp_path, tiny_data):
    setup = device.setup_devices(mixed_precision=policy, jit_compile=True, verbose=False)
    assert setup.jit_compile and setup.precision_policy == policy
    facts = rehearse(recipe_name, setup, *tiny_data, tmp_path)
    # mixed_float16 needs loss scaling (float16 gradients underflow); bfloat16 does not.
    assert facts["loss_scaled"] == (policy == "mixed_float16")
    # The TFLite export computes in float32; the Keras model in 16 bits: close, not equal.
    assert facts["keras_tflite_max_diff"] < 0.05, facts


@pytest.mark.slow
def test_every_recipe_on_two_replicas_in_a_fresh_process(tmp_path):
    """MirroredStrategy over two logical CPUs, as on a machine with two GPUs."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        sys.path.insert(0, {str(TESTS)!r})
        from gpu_rehearsal import rehearse
        from cifar_utils import device, recipes
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
        y = np.arange(96) % 10
        two = ["/cpu:0", "/cpu:1"]
        try:  # XLA compiles the whole step and cannot reach the other replica's variables
            device.setup_devices(jit_compile=True, devices=two, verbose=False)
            raise AssertionError("jit_compile=True with two replicas should be refused")
        except ValueError as err:
            assert "needs one replica" in str(err), err
        facts = {{}}
        for name in sorted(recipes.RECIPES):
            # What setup_devices() picks on a machine with two Ampere-or-newer GPUs, called once
            # per model as train() does: the second model must not break the first's all-reduces.
            setup = device.setup_devices(
                mixed_precision="mixed_bfloat16", devices=two, verbose=False
            )
            assert (
                isinstance(setup.strategy, tf.distribute.MirroredStrategy)
                and not setup.jit_compile
            )
            facts[name] = rehearse(
                name, setup, x[:64], y[:64], x[64:], y[64:], {str(tmp_path)!r} + "/" + name
            )
        print("FACTS", json.dumps(facts))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    facts = json.loads(result.stdout.split("FACTS", 1)[1])
    assert sorted(facts) == sorted(recipes.RECIPES)
    assert all(f["replicas"] == 2 for f in facts.values()), facts


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_scaled_bias_and_whitening_under_each_policy(policy, tiny_data):
    keras.mixed_precision.set_global_policy(policy)
    x = tiny_data[0]
    model = models.build_fast_net(widths=(8, 16, 16), bias_scale=8, whitening_sample=x)
    shift = model.get_layer("group1_shift1")
    assert isinstance(shift, custom_objects.ScaledBias)
    # Variables stay float32 (the optimiser updates them exactly); the arithmetic is 16-bit.
    assert shift.bias.dtype == "float32" and model.get_layer("whiten").kernel.dtype == "float32"
    assert shift.compute_dtype == ("float32" if policy == "float32" else policy.split("_")[1])
    probs = np.asarray(model(x.astype("float32"), training=False))
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-3)
    # The whitened patches keep their scale in 16 bits: no overflow to inf in float16.
    whitened = keras.Model(model.input, model.get_layer("whiten").output)(x.astype("float32"))
    assert np.all(np.isfinite(np.asarray(whitened, dtype=np.float32)))
    # The float32 copy (exports, shipped models) computes in float32 even under a mixed policy.
    assert models.computes_in_float32(model) == (policy == "float32")
    copy = models.float32_copy(model)
    assert models.computes_in_float32(copy)
    np.testing.assert_allclose(np.asarray(copy(x.astype("float32"))), probs, atol=0.05)


def test_loss_scaling_under_mixed_float16_recovers_tiny_gradients():
    """Without loss scaling a float16 gradient of 1e-8 is 0; the LossScaleOptimizer keeps it."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(1.0), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # Each kernel gradient is 8 x 1e-4 x 2 x 1e-4 / 8 = 2e-8, below float16's smallest number.
    assert np.float16(2e-8) == 0
    x = np.full((8, 4), 1e-4, np.float32)
    y = np.full((8, 1), 1e-4, np.float32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    kernel = np.asarray(model.layers[0].kernel)
    np.testing.assert_allclose(kernel, 2e-8, rtol=0.05)  # the scaled gradient arrived whole
    assert float(model.optimizer.dynamic_scale) > 1


def test_setup_devices_forces_xla_and_refuses_nonsense():
    assert device.setup_devices(jit_compile=True, verbose=False).jit_compile
    assert not device.setup_devices(jit_compile=False, verbose=False).jit_compile
    with pytest.raises(ValueError, match="received 'yes'"):
        device.setup_devices(jit_compile="yes", verbose=False)
