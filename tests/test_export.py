"""Exports to every format, their parity with the Keras model, and the comparison table."""

import os

import keras
import numpy as np
import pytest

from cifar_utils import export, models
from cifar_utils.inference import Classifier

RNG = np.random.default_rng(1)
X = RNG.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
Y = RNG.integers(0, 10, size=64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = models.build_baseline_cnn(filters=(4, 8, 8), dense_units=8)
    out = tmp_path_factory.mktemp("exports")
    return model, export.export_all(model, out, representative_images=X)


def test_every_format_is_written_and_loads(exported):
    model, paths = exported
    assert list(paths) == list(export.EXPORTS)
    assert (paths["saved_model"] / "saved_model.pb").exists()
    expected = model.predict(X.astype("float32"), verbose=0)
    for fmt, path in paths.items():
        clf = Classifier(path)
        assert clf.format == {"keras": "keras", "saved_model": "saved_model"}.get(fmt, "tflite")
        probs = clf.predict_proba(X)
        assert probs.shape == (64, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.05)
        tolerance = {"tflite_float16": 5e-3, "tflite_int8": 0.1}.get(fmt, 1e-5)
        np.testing.assert_allclose(probs, expected, atol=tolerance, err_msg=fmt)
    sizes = {fmt: export.file_size(p) for fmt, p in paths.items()}
    assert sizes["tflite_int8"] < sizes["tflite_float16"] < sizes["tflite_float32"]


def test_no_partial_files_left_behind(exported):
    _, paths = exported
    folder = paths["keras"].parent
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_compare_formats_table(exported):
    _, paths = exported
    table = export.compare_formats(paths, X, Y, speed_images=64, batch_size=32)
    assert list(table.index) == list(export.EXPORTS)
    assert table.loc["keras", "agreement"] == 1.0 and table.loc["keras", "accuracy_change"] == 0.0
    assert table.loc["saved_model", "max_prob_diff"] < 1e-5
    assert (table["agreement"] > 0.8).all()
    assert (table["images_per_second"] > 0).all() and (table["latency_ms"] > 0).all()
    assert table.loc["keras", "accuracy"] == pytest.approx(
        np.mean(Classifier(paths["keras"]).predict_proba(X).argmax(1) == Y)
    )


@pytest.mark.slow
def test_only_some_formats(tmp_path, exported):
    model, _ = exported
    paths = export.export_all(model, tmp_path, formats=("tflite_float16",))
    assert list(paths) == ["tflite_float16"]
    assert not (tmp_path / "saved_model").exists()  # only a stepping stone here


@pytest.mark.slow
def test_bad_requests(tmp_path, exported):
    model, paths = exported
    with pytest.raises(ValueError, match="unknown export formats"):
        export.export_all(model, tmp_path, formats=("onnx",))
    with pytest.raises(ValueError, match="representative_images"):
        export.export_all(model, tmp_path, formats=("tflite_int8",))
    with pytest.raises(ValueError, match="quantization"):
        export.convert_tflite(paths["saved_model"], tmp_path / "m.tflite", quantization="int4")
    with pytest.raises(ValueError, match="non-empty"):
        export.representative_dataset(np.zeros((0, 32, 32, 3)))
    with pytest.raises(ValueError, match="reference"):
        export.compare_formats({"tflite_int8": paths["tflite_int8"]}, X, Y)
    with pytest.raises(ValueError, match="64 predictions but 10 labels"):  # evaluation's check
        export.compare_formats({"keras": paths["keras"]}, X, Y[:10], speed=False)


@pytest.mark.realdata
@pytest.mark.skipif(
    not os.environ.get("CIFAR10_DIR"), reason="needs CIFAR10_DIR (the offline copy)"
)
@pytest.mark.slow
def test_int8_shipped_model_within_half_a_point(tmp_path):
    """The #6 target on validation images (split from the training set), offline copy."""
    from cifar_utils import data, storage
    from cifar_utils.paths import SHIPPED_MODEL

    if not SHIPPED_MODEL.exists():
        pytest.skip("no shipped model in this checkout")
    (x_train, y_train), _ = data.load_cifar10(verbose=False)
    (x_fit, _), (x_val, y_val) = data.split_train_val(x_train, y_train)
    model = storage.load_model(SHIPPED_MODEL)
    paths = export.export_all(
        model, tmp_path, representative_images=x_fit, formats=("keras", "tflite_int8")
    )
    table = export.compare_formats(paths, x_val, y_val, speed=False)
    assert abs(table.loc["tflite_int8", "accuracy_change"]) <= 0.5, table
    assert table.loc["tflite_int8", "agreement"] > 0.97
