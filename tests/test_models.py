"""cifar_utils.models: shapes, parameter counts worked out by hand,
save/load round trips, names, FLOPs, and errors that say what was received."""

import keras
import numpy as np
import pytest

from cifar_utils import models


def conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def dense(n_in, n_out):
    return n_in * n_out + n_out


def expected_baseline(filters=(32, 64, 128), dense_units=128, c=3, size=32, classes=10):
    total, c_in = 0, c
    for f in filters:
        total += conv(3, c_in, f) + bn(f)
        c_in, size = f, size // 2
    return total + dense(size * size * c_in, dense_units) + dense(dense_units, classes)


def expected_vgg(widths=(64, 128, 256), convs=2, dense_units=256, classes=10):
    total, c_in, size = 0, 3, 32
    for w in widths:
        for _ in range(convs):
            total += conv(3, c_in, w) + bn(w)
            c_in = w
        size //= 2
    return total + size * size * c_in * dense_units + bn(dense_units) + dense(dense_units, classes)


def expected_resnet(depth=20, width=16, classes=10):
    n = (depth - 2) // 6
    total, c_in = conv(3, 3, width) + bn(width), width
    for stage in range(3):
        w = width * 2**stage
        for _block in range(n):
            total += conv(3, c_in, w) + bn(w) + conv(3, w, w) + bn(w)
            if c_in != w:
                total += conv(1, c_in, w) + bn(w)
            c_in = w
    return total + dense(c_in, classes)


def expected_fast_net(widths=(64, 256, 256), classes=10, bias_scale=1.0):
    total, c_in = conv(2, 3, 24, bias=True), 24  # frozen whitening layer
    for w in widths:
        total += conv(3, c_in, w) + conv(3, w, w)
        # batch norm without scale: moving mean and variance, plus the shift
        total += 2 * (3 * w if bias_scale == 1 else 2 * w + w)
        c_in = w
    return total + c_in * classes


def expected_resnet9(width=64, classes=10):
    total = conv(3, 3, width) + bn(width)
    c_in = width
    for stage, residual in ((1, True), (2, False), (3, True)):
        w = width * 2**stage
        total += conv(3, c_in, w) + bn(w)
        if residual:
            total += 2 * (conv(3, w, w) + bn(w))
        c_in = w
    return total + dense(c_in, classes)


CASES = [
    ("baseline_cnn", {}, expected_baseline()),
    (
        "baseline_cnn",
        {"filters": (8, 16), "dense_units": 32, "num_classes": 5},
        expected_baseline((8, 16), 32, classes=5),
    ),
    ("vgg", {}, expected_vgg()),
    ("resnet", {}, expected_resnet(20)),
    ("resnet", {"depth": 32, "width": 8}, expected_resnet(32, 8)),
    ("resnet9", {}, expected_resnet9()),
    ("fast_net", {}, expected_fast_net()),
    (
        "fast_net",
        {"widths": (16, 32, 32), "bias_scale": 8.0},
        expected_fast_net((16, 32, 32), bias_scale=8.0),
    ),
]


@pytest.mark.parametrize("arch, kwargs, params", CASES)
def test_output_shape_and_parameter_count(arch, kwargs, params):
    model = models.BUILDERS[arch](**kwargs)
    classes = kwargs.get("num_classes", 10)
    assert model.count_params() == params
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, classes)
    probs = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert probs.shape == (2, classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_resnet20_is_the_paper_size():
    assert 0.26e6 < models.build_resnet(depth=20).count_params() < 0.28e6  # "0.27M" in He et al.


SMALL = {
    "baseline_cnn": {"filters": (8, 16)},
    "vgg": {"widths": (8, 16), "dense_units": 16},
    "resnet": {"depth": 8, "width": 8},
    "resnet9": {"width": 8},
    "fast_net": {"widths": (8, 16, 16)},
}


@pytest.mark.parametrize("arch", list(models.BUILDERS))
def test_keras_round_trip_gives_identical_predictions(arch, tmp_path):
    model = models.BUILDERS[arch](augmentation="cutout", seed=0, **SMALL[arch])
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    before = model.predict(x, verbose=0)
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("arch", list(models.BUILDERS))
def test_layers_are_named(arch):
    model = models.BUILDERS[arch](**SMALL[arch])
    names = [layer.name for layer in model.layers]
    for expected in ("image", "normalize", "logits", "predictions"):
        assert expected in names
    anonymous = [
        n for n in names if n.split("_")[0] in ("conv2d", "dense", "batch", "activation", "add")
    ]
    assert not anonymous, anonymous


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(models.BUILDERS))
def test_can_overfit_a_tiny_batch(arch):
    """Loss falls on 16 fixed images: the model can learn at all (dropout off)."""
    keras.utils.set_random_seed(0)
    extra = {"dropout": 0.0} if arch in ("baseline_cnn", "vgg") else {}
    model = models.BUILDERS[arch](**SMALL[arch], **extra)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 10
    # the fast net's 1/9 logit scale keeps its outputs soft: it needs more steps
    epochs = 80 if arch == "fast_net" else 30
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses


def test_mixed_precision_keeps_probabilities_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.build_resnet(depth=8, width=8)
        assert model.get_layer("stem_conv").compute_dtype == "float16"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_other_input_shapes():
    model = models.build_baseline_cnn(input_shape=(64, 48, 1), num_classes=3)
    assert model.output_shape == (None, 3)
    assert model.predict(np.zeros((1, 64, 48, 1)), verbose=0).shape == (1, 3)


@pytest.mark.parametrize(
    "arch, kwargs, pattern",
    [
        ("baseline_cnn", {"num_classes": 1}, "num_classes must be a whole number.*received 1"),
        ("vgg", {"num_classes": 2.5}, "received 2.5"),
        ("resnet", {"input_shape": (32, 32)}, r"received \(32, 32\)"),
        (
            "resnet9",
            {"input_shape": (32, 32, 4)},
            r"1 \(grey\) or 3 \(RGB\).*received \(32, 32, 4\)",
        ),
        ("vgg", {"input_shape": (4, 4, 3)}, r"at least 8; received input_shape=\(4, 4, 3\)"),
        ("resnet", {"depth": 21}, "6n\\+2.*received 21"),
        ("baseline_cnn", {"dropout": 1.5}, r"dropout must be .*\[0, 1\); received 1.5"),
        ("vgg", {"dropout": "0.3"}, "dropout must be a finite number"),
        ("resnet", {"augmentation": "mixup"}, "mixes labels"),
        ("vgg", {"augmentation": "blur"}, "Unknown augmentation policy 'blur'"),
    ],
)
def test_bad_arguments_say_what_was_received(arch, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        models.BUILDERS[arch](**kwargs)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's profiler counts the FLOPs"
)
def test_flops_match_tensorflow_profiler():
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph,
    )

    model = models.build_baseline_cnn()

    @tf.autograph.experimental.do_not_convert
    def forward(x):
        return model(x, training=False)

    concrete = tf.function(forward).get_concrete_function(tf.TensorSpec([1, 32, 32, 3], tf.float32))
    frozen, _ = convert_variables_to_constants_v2_as_graph(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profiled = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    ).total_float_ops
    ours = models.count_flops(model)
    assert 0.98 < ours / profiled <= 1.0  # ours leaves out BN, ReLU and pooling only


def test_model_stats_table():
    table = models.model_stats([models.build_resnet(), models.build_baseline_cnn()])
    assert list(table.index) == ["resnet20", "baseline_cnn"]
    assert table.loc["resnet20", "parameters"] == expected_resnet(20)
    assert table.loc["baseline_cnn", "MFLOPs per image"] == round(
        models.count_flops(models.build_baseline_cnn()) / 1e6, 1
    )
    assert (
        table.loc["baseline_cnn", "MFLOPs per image"] > 1
    )  # the baseline CNN's convolutions: tens of MFLOPs
    assert table.loc["resnet20", "size MB (float32)"] == round(expected_resnet(20) * 4 / 1e6, 2)


def test_whitening_decorrelates_patches():
    rng = np.random.default_rng(0)
    # Correlated, smooth images: neighbouring pixels and channels move together.
    base = rng.normal(size=(200, 8, 8, 1))
    images = np.clip(
        128 + 40 * np.kron(base, np.ones((1, 4, 4, 3))) + rng.normal(0, 5, (200, 32, 32, 3)), 0, 255
    )
    images = images.astype(np.uint8)
    model = models.build_fast_net(widths=(8, 8, 8), whitening_sample=images)
    layer = model.get_layer("whiten")
    assert not layer.trainable
    features = keras.Model(model.input, layer.output).predict(images[:50], verbose=0)
    flat = features.reshape(-1, 24)[:, :12].astype(np.float64)
    cov = flat.T @ flat / len(flat)  # uncentred, like the patch statistics it was set from
    # the eigen-directions with variance well above eps come out with unit variance
    assert np.max(np.abs(np.diag(cov)[-6:] - 1)) < 0.1
    off_diagonal = cov - np.diag(np.diag(cov))
    assert np.abs(off_diagonal).max() < 0.1


def test_fast_net_airbench_start_identity_convolutions_and_pytorch_scale():
    model = models.build_fast_net(
        widths=(16, 32, 32), init="pytorch", dirac=True, activation="gelu"
    )
    conv2 = model.get_layer("group2_conv2").kernel.numpy()  # 32 -> 32: all filters identities
    identity = np.zeros_like(conv2)
    identity[1, 1, np.arange(32), np.arange(32)] = 1.0
    assert np.array_equal(conv2, identity)
    conv1 = model.get_layer("group2_conv1").kernel.numpy()  # 16 -> 32: the first 16 filters
    assert np.array_equal(conv1[..., :16], identity[:, :, :16, :16])
    rest = conv1[..., 16:]  # PyTorch's default: uniform within 1/sqrt(fan_in)
    bound = 1 / np.sqrt(3 * 3 * 16)
    assert np.abs(rest).max() <= bound and np.abs(rest).max() > 0.8 * bound
    fc = model.get_layer("fc").kernel.numpy()
    assert np.abs(fc).max() <= 1 / np.sqrt(32)
    assert model.get_layer("group1_gelu1").get_config()["activation"] == "gelu"
    keras_init = models.build_fast_net(widths=(16, 32, 32))
    assert not np.array_equal(keras_init.get_layer("group2_conv2").kernel.numpy(), identity)
    assert np.abs(keras_init.get_layer("fc").kernel.numpy()).max() > 1 / np.sqrt(
        32
    )  # Glorot is larger


def test_fast_net_rejects_unknown_init_and_activation():
    with pytest.raises(ValueError, match="init must be one of .*received 'he'"):
        models.build_fast_net(init="he")
    with pytest.raises(ValueError, match="activation must be one of .*received 'swish'"):
        models.build_fast_net(activation="swish")


def test_fast_net_whitening_bias_and_batch_norm_epsilon():
    plain = models.build_fast_net(widths=(8, 16, 16))
    assert plain.get_layer("whiten").use_bias  # frozen at zero, as before the option existed
    assert "whiten_bias" not in [layer.name for layer in plain.layers]
    model = models.build_fast_net(widths=(8, 16, 16), whitening_bias=True, batch_norm_epsilon=1e-12)
    whiten, bias = model.get_layer("whiten"), model.get_layer("whiten_bias")
    assert not whiten.trainable and not whiten.use_bias
    assert bias.trainable and bias.bias.shape == (24,) and bias.scale == 1.0
    assert model.get_layer("group2_bn1").epsilon == 1e-12
    assert len(model.trainable_weights) == len(plain.trainable_weights) + 1


def test_fast_net_with_three_convolutions_a_group_adds_a_residual():
    two = models.build_fast_net(widths=(8, 16, 16))
    three = models.build_fast_net(widths=(8, 16, 16), convs=3, dirac=True, init="pytorch")
    names = [layer.name for layer in three.layers]
    for group in ("group1", "group2", "group3"):
        assert {f"{group}_conv3", f"{group}_bn3", f"{group}_add"} <= set(names)
    # the shortcut is the first unit's output, the branch the third's
    parts = keras.Model(
        three.input, [three.get_layer(f"group2_{n}").output for n in ("relu1", "relu3", "add")]
    )
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    first, third, added = parts.predict(images, verbose=0)
    np.testing.assert_allclose(added, first + third, rtol=1e-5, atol=1e-5)
    extra = sum(3 * 3 * w * w for w in (8, 16, 16))  # one more bias-free 3x3 conv a group
    # and its batch norm's shift, moving mean and moving variance
    assert three.count_params() - two.count_params() == extra + sum(3 * w for w in (8, 16, 16))
    assert np.array_equal(  # identity start for the new convolutions too
        three.get_layer("group3_conv3").kernel.numpy()[1, 1], np.eye(16, dtype="float32")
    )
    with pytest.raises(ValueError, match="convs must be one of 2, 3; received 4"):
        models.build_fast_net(convs=4)
