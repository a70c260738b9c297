"""cifar_utils.evaluation on tiny hand-made models whose answers are known."""

import keras
import numpy as np
import pytest

from cifar_utils import evaluation, storage
from cifar_utils.custom_objects import Temperature


def left_half_model():
    """Probability of class 1 grows with the brightness of the left half of the image."""
    inputs = keras.Input((4, 4, 1))
    left = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, :2, 0], axis=(1, 2)))(inputs)
    score = keras.layers.Lambda(lambda s: keras.ops.stack([255.0 - s, s], axis=1) / 255.0)(left)
    return keras.Model(inputs, score)


@pytest.fixture
def images():
    x = np.zeros((4, 4, 4, 1), np.float32)
    x[0, :, :2] = 255  # bright left: class 1
    x[1, :, 2:] = 255  # bright right: class 0, but its mirror image says 1
    x[2] = 0  # dark: class 0
    x[3, :, :3] = 255  # mostly bright, left too: class 1
    return x, np.array([1, 0, 0, 1])


def test_predict_proba_and_accuracy(images):
    x, y = images
    model = left_half_model()
    probs = evaluation.predict_probs(model, x)
    np.testing.assert_allclose(probs[:, 1], [1.0, 0.0, 0.0, 1.0])
    assert evaluation.accuracy(model, x, y) == 1.0
    assert evaluation.accuracy(model, x, 1 - y) == 0.0


def test_flip_tta_averages_with_the_mirror_image(images):
    x, y = images
    probs = evaluation.predict_probs(left_half_model(), x, tta=True)
    # image 1: 0 for itself, 1 for its mirror image -> 0.5; image 3: 1 and 0.5 -> 0.75
    np.testing.assert_allclose(probs[:, 1], [0.5, 0.5, 0.0, 0.75])


def test_bad_inputs(images):
    x, y = images
    with pytest.raises(ValueError, match="received \\(4, 4, 4\\)"):
        evaluation.predict_probs(left_half_model(), x[..., 0])
    with pytest.raises(ValueError, match="4 images but y has 3 labels"):
        evaluation.accuracy(left_half_model(), x, y[:3])


# Hand-checked toy: 6 images, 3 classes.
Y = np.array([0, 0, 1, 1, 2, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],  # right
        [0.2, 0.5, 0.3],  # wrong: 1 (0.5), true class third
        [0.1, 0.8, 0.1],  # right
        [0.6, 0.3, 0.1],  # wrong: 0 (0.6), true class second
        [0.1, 0.1, 0.8],  # right
        [0.06, 0.9, 0.04],  # wrong: 1 (0.9), most confident mistake, true class third
    ]
)


def test_top_k_by_hand():
    assert evaluation.top_k_accuracy(P, Y, k=1) == pytest.approx(3 / 6)
    assert evaluation.top_k_accuracy(P, Y, k=2) == pytest.approx(4 / 6)  # image 3 joins
    assert evaluation.top_k_accuracy(P, Y, k=3) == 1.0
    with pytest.raises(ValueError, match="received 4"):
        evaluation.top_k_accuracy(P, Y, k=4)


def test_classification_report_by_hand():
    report = evaluation.classification_report(P, Y, class_names=["a", "b", "c"])
    # predictions: [0, 1, 1, 0, 2, 1]
    assert report.loc["a", "precision"] == pytest.approx(1 / 2)  # predicted a: images 0 (a), 3 (b)
    assert report.loc["a", "recall"] == pytest.approx(1 / 2)
    assert report.loc["b", "precision"] == pytest.approx(1 / 3)  # predicted b: images 1, 2, 5
    assert report.loc["c", "precision"] == 1.0 and report.loc["c", "recall"] == pytest.approx(1 / 2)
    assert report.loc["c", "f1-score"] == pytest.approx(2 / 3)
    assert report.loc["a", "support"] == 2
    assert report.loc["macro avg", "recall"] == pytest.approx(0.5)
    # every row is a real row: no scalar 'accuracy' spread over the columns with support 0
    assert list(report.index) == ["a", "b", "c", "macro avg", "weighted avg"]
    assert (report["support"] == len(Y)).sum() == 2 and report["support"].min() > 0


def test_confusion_matrix_sums():
    counts = evaluation.confusion_matrix(P, Y)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [1, 1, 0], [0, 1, 1]])
    assert counts.sum() == len(Y)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(Y))
    shares = evaluation.confusion_matrix(P, Y, normalize=True)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="received 'all'"):
        evaluation.confusion_matrix(P, Y, normalize="all")


def test_misclassified_and_pairs():
    np.testing.assert_array_equal(evaluation.misclassified(P, Y), [5, 3, 1])  # 0.9, 0.6, 0.5
    np.testing.assert_array_equal(evaluation.misclassified(P, Y, sort="index"), [1, 3, 5])
    pairs = evaluation.most_confused_pairs(P, Y, top=5, class_names=["a", "b", "c"])
    assert len(pairs) == 3 and set(pairs["count"]) == {1}
    assert {(t, p) for t, p in zip(pairs["true"], pairs["predicted"])} == {
        ("a", "b"),
        ("b", "a"),
        ("c", "b"),
    }
    with pytest.raises(ValueError, match="received 'random'"):
        evaluation.misclassified(P, Y, sort="random")


def test_calibration_of_a_calibrated_toy_is_near_zero():
    rng = np.random.default_rng(0)
    n = 50_000
    confidence = rng.uniform(0.4, 1.0, n)
    # three classes: class 0 always has the top probability c, the others share 1 - c
    probs = np.stack([confidence, (1 - confidence) / 2, (1 - confidence) / 2], axis=1)
    right = rng.uniform(size=n) < confidence  # right exactly as often as confident
    y = np.where(right, 0, 1)
    ece, bins = evaluation.calibration(probs, y, n_bins=10)
    assert ece < 0.01
    assert bins["count"].sum() == n
    overconfident = np.where(rng.uniform(size=n) < confidence - 0.2, 0, 1)
    assert evaluation.calibration(probs, overconfident, n_bins=10)[0] == pytest.approx(
        0.2, abs=0.01
    )


def test_ece_by_hand():
    ece, bins = evaluation.calibration(P, Y, n_bins=2)  # bins [0, 0.5] and (0.5, 1]
    # bin 1: image 1 (0.5, wrong); bin 2: 0.7 r, 0.8 r, 0.6 w, 0.8 r, 0.9 w
    assert list(bins["count"]) == [1, 5]
    expected = 1 / 6 * abs(0 - 0.5) + 5 / 6 * abs(3 / 5 - (0.7 + 0.8 + 0.6 + 0.8 + 0.9) / 5)
    assert ece == pytest.approx(expected)


@pytest.mark.parametrize("arch", ["baseline_cnn", "vgg", "resnet", "resnet9", "fast_net"])
def test_grad_cam_shape_and_range_for_every_builder(arch):
    from cifar_utils import models

    small = {
        "baseline_cnn": {"filters": (8, 16)},
        "vgg": {"widths": (8, 16), "dense_units": 16},
        "resnet": {"depth": 8, "width": 8},
        "resnet9": {"width": 8},
        "fast_net": {"widths": (8, 16, 16)},
    }
    keras.utils.set_random_seed(0)
    model = models.BUILDERS[arch](**small[arch])
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    heat = evaluation.grad_cam(model, images)
    assert heat.shape == (3, 32, 32) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert evaluation.grad_cam(model, images, class_index=2).shape == (3, 32, 32)


def test_grad_cam_without_upsampling_is_the_layers_map():
    from cifar_utils import models

    keras.utils.set_random_seed(0)
    model = models.build_fast_net(widths=(8, 16, 16))
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    layer = "group2_relu2"
    h, w = model.get_layer(layer).output.shape[1:3]
    raw = evaluation.grad_cam(model, images, layer_name=layer, upsample=False)
    assert raw.shape == (3, h, w) and raw.dtype == np.float32 and (h, w) != (32, 32)
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    # the default map is this one resized bilinearly (a linear step) and scaled to [0, 1]
    resized = keras.ops.convert_to_numpy(
        keras.ops.image.resize(raw[..., None], (32, 32), interpolation="bilinear")
    )[..., 0]
    resized /= np.maximum(resized.max(axis=(1, 2), keepdims=True), 1e-12)
    heat = evaluation.grad_cam(model, images, layer_name=layer)
    np.testing.assert_allclose(heat, resized, atol=1e-5)


def test_grad_cam_errors():
    from cifar_utils import models

    model = models.build_baseline_cnn(filters=(8, 16))
    images = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        evaluation.grad_cam(model, images, layer_name="conv9")
    with pytest.raises(ValueError, match="needs a 4-D one"):
        evaluation.grad_cam(model, images, layer_name="fc")
    assert evaluation.last_conv_layer(model).startswith("stage2")


def test_multicrop_tta_is_airbenchs_six_view_average(images):
    x, _ = images
    model = left_half_model()

    def flip_avg(v):
        return (model.predict(v, verbose=0) + model.predict(v[:, :, ::-1], verbose=0)) / 2

    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    up_left, down_right = padded[:, 0:4, 0:4], padded[:, 2:6, 2:6]
    expected = 0.5 * flip_avg(x) + 0.25 * (flip_avg(up_left) + flip_avg(down_right))
    got = evaluation.predict_probs(model, x, tta="multicrop")
    assert np.allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, evaluation.predict_probs(model, x, tta="flip"))
    assert np.allclose(
        evaluation.predict_probs(model, x, tta="flip"), evaluation.predict_probs(model, x, tta=True)
    )
    with pytest.raises(ValueError, match="received 'crops'"):
        evaluation.predict_probs(model, x, tta="crops")


# --- temperature scaling ------------------------------------------------------------------


def test_fit_temperature_recovers_a_known_overconfidence():
    """Labels drawn from softmax(logits) are calibrated by construction; the model that
    reports softmax(2 * logits) is overconfident by a factor the fit must find."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, (20_000, 10))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(10, p=p) for p in true])
    sharp = np.exp(2 * logits) / np.exp(2 * logits).sum(axis=1, keepdims=True)
    temperature = evaluation.fit_temperature(sharp, y)
    assert temperature == pytest.approx(2.0, rel=0.05)
    calibrated = evaluation.apply_temperature(sharp, temperature)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), sharp.argmax(axis=1))
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, rtol=1e-5)
    before, _ = evaluation.calibration(sharp, y)
    after, _ = evaluation.calibration(calibrated, y)
    assert after < before / 3, (before, after)
    # and an underconfident model (softmax(logits / 2)) is sharpened: T near 0.5
    soft = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    assert evaluation.fit_temperature(soft, y) == pytest.approx(0.5, rel=0.05)
    np.testing.assert_allclose(evaluation.apply_temperature(true, 1.0), true, atol=1e-6)


def test_with_temperature_travels_with_the_model(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Softmax(name="predictions")]
    )
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    probs = model.predict(x, verbose=0)
    assert evaluation.temperature_of(model) == 1.0
    calibrated = evaluation.with_temperature(model, 1.7)
    np.testing.assert_allclose(
        calibrated.predict(x, verbose=0), evaluation.apply_temperature(probs, 1.7), atol=1e-5
    )
    assert not isinstance(calibrated.input, list)  # one image tensor, as exports expect
    calibrated.save(tmp_path / "calibrated.keras")
    loaded = storage.load_model(tmp_path / "calibrated.keras")
    assert evaluation.temperature_of(loaded) == pytest.approx(1.7)
    again = evaluation.with_temperature(loaded, 0.8)  # replaced, not stacked
    assert evaluation.temperature_of(again) == pytest.approx(0.8)
    assert sum(isinstance(layer, Temperature) for layer in again.layers) == 1
    np.testing.assert_allclose(
        again.predict(x, verbose=0), evaluation.apply_temperature(probs, 0.8), atol=1e-5
    )
    raw = evaluation.without_temperature(again)  # the model as trained, for refitting
    assert evaluation.temperature_of(raw) == 1.0 and not isinstance(raw.input, list)
    np.testing.assert_allclose(raw.predict(x, verbose=0), probs, atol=1e-6)
    assert evaluation.without_temperature(model) is model
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="temperature must be positive; received"):
            evaluation.with_temperature(model, bad)
        with pytest.raises(ValueError, match="temperature must be positive; received"):
            evaluation.apply_temperature(probs, bad)
    with pytest.raises(ValueError, match=r"probs must be \(N, num_classes\)"):
        evaluation.fit_temperature(np.zeros(5), np.zeros(5))
