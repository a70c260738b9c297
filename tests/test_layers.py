"""cifar_utils.layers names its layers; ScaledBias (custom_objects) learns faster, serialises."""

import keras
import numpy as np
import pytest

from cifar_utils import layers
from cifar_utils.custom_objects import ScaledBias


def test_blocks_name_their_layers_after_the_stack():
    inputs = keras.Input((8, 8, 3))
    x = layers.conv_bn_act(inputs, 4, name="stem")
    x = layers.vgg_block(x, 4, convs=2, dropout=0.1, name="stage1")
    x = layers.residual_block(x, 8, strides=2, name="res")
    names = [layer.name for layer in keras.Model(inputs, x).layers]
    for expected in (
        "stem_conv",
        "stem_bn",
        "stem_relu",
        "stage1_1_conv",
        "stage1_2_conv",
        "stage1_pool",
        "stage1_dropout",
        "res_1_conv",
        "res_2_bn",
        "res_shortcut_conv",
        "res_add",
        "res_out",
    ):
        assert expected in names, (expected, names)


def test_scaled_bias_learns_faster_and_serialises(tmp_path):
    layer = ScaledBias(8.0, name="shift")
    model = keras.Sequential([keras.Input((3,)), layer])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(np.zeros((4, 3)), np.ones((4, 3)), epochs=1, batch_size=4, verbose=0)
    # one SGD step: b moves by lr * 8 * grad, the output by 8 * that = 64x a plain bias step
    # mse gradient on the output: 2 * (0 - 1) / 3 per unit; a plain bias would move 0.01 * 2/3
    np.testing.assert_allclose(
        model.predict(np.zeros((1, 3)), verbose=0), 0.01 * 64 * 2 / 3, rtol=1e-4
    )
    model.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras", safe_mode=True)
    assert loaded.get_layer("shift").scale == 8.0
    with pytest.raises(ValueError, match="received 0"):
        ScaledBias(0)
