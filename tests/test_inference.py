"""Classifier, image loading of every kind (cifar_utils.images), and the cifar-predict command."""

import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from cifar_utils import images, inference, models, paths
from cifar_utils.data import CLASS_NAMES
from cifar_utils.images import ImageError, load_image
from cifar_utils.inference import Classifier

RNG = np.random.default_rng(0)
PICTURE = RNG.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)  # a non-square RGB picture


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return models.build_baseline_cnn(filters=(4, 8, 8), dense_units=8)


@pytest.fixture(scope="module")
def tiny_path(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model.save(path)
    return path


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


# ----------------------------------------------------------------------------- load_image


@pytest.mark.parametrize(
    "mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr"]
)
def test_every_pil_mode_becomes_32x32_rgb(mode):
    image = Image.fromarray(PICTURE).convert(mode) if mode not in ("I;16", "I", "F") else None
    if image is None:  # 16/32-bit and float greyscale, with values beyond 255
        values = PICTURE[..., 0].astype(np.uint16) * 200
        image = (
            Image.fromarray(values)
            if mode == "I;16"
            else Image.fromarray(values.astype(np.int32 if mode == "I" else np.float32))
        )
    assert image.mode == mode
    out = load_image(image)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out.std() > 10  # the content survived: not one flat colour


def test_sixteen_bit_is_stretched_not_clipped():
    values = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    out = load_image(Image.fromarray(values))
    assert out.min() == 0 and out.max() == 255  # PIL's own convert("L") would give mostly 255
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)


def test_transparency_becomes_white():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:16, :, :] = (255, 0, 0, 255)  # opaque red top half, transparent bottom half
    out = load_image(Image.fromarray(rgba, "RGBA"))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[-1, 0]) == (255, 255, 255)
    palette = Image.fromarray(rgba, "RGBA").convert("P")  # palette with a transparent entry
    assert load_image(palette).shape == (32, 32, 3)
    assert np.array_equal(load_image(rgba), out)  # (H, W, 4) arrays go the same way


def test_non_square_is_centre_cropped():
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, 32:64] = 255  # white square in the middle, black sides
    assert load_image(wide).min() == 255  # crop keeps just the middle
    squashed = load_image(wide, crop=False)
    assert squashed[:, 0].max() < 30 and squashed[:, 16].min() > 200


def test_cifar_arrays_pass_through_unchanged():
    x = RNG.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(images.load_images(x), x)
    assert np.array_equal(load_image(x[0].astype(np.float32)), x[0])


@pytest.mark.parametrize(
    "array",
    [
        np.full((40, 40), 7, np.uint8),
        np.full((40, 40, 1), 7, np.uint8),
        np.full((40, 40, 3), 7 * 257, np.uint16),
        np.full((40, 40, 3), 7.0, np.float64),
        np.full((40, 40, 3), 7, np.int64),
    ],
)
def test_arrays_of_any_layout(array):
    out = load_image(array)
    assert out.shape == (32, 32, 3)
    assert np.all(out == 7)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((32, 32, 2), np.uint8), "shape"),
        (np.zeros((2, 2, 32, 32, 3), np.uint8), "shape"),
        (np.zeros((0, 32, 3), np.uint8), "empty"),
        (np.full((32, 32, 3), 300.0), "0-255"),
        (np.full((32, 32, 3), -1.0), "0-255"),
        (np.full((32, 32, 3), np.nan), "NaN"),
        (np.zeros((32, 32, 3), np.complex64), "dtype"),
    ],
)
def test_bad_arrays_say_what_is_wrong(array, message):
    with pytest.raises(ImageError, match=message):
        load_image(array)


def test_zero_to_one_floats_warn():
    with pytest.warns(UserWarning, match="0-255"):
        load_image(np.full((32, 32, 3), 0.5))


def test_paths_bytes_and_file_objects(tmp_path):
    png = save(Image.fromarray(PICTURE), tmp_path / "a.png")
    expected = load_image(png)
    assert np.array_equal(load_image(str(png)), expected)
    assert np.array_equal(load_image(png.read_bytes()), expected)
    assert np.array_equal(load_image(io.BytesIO(png.read_bytes())), expected)


def test_very_large_jpeg_loads(tmp_path):
    big = Image.fromarray(PICTURE).resize((6000, 4500))  # 27 megapixels
    path = save(big, tmp_path / "big.jpg", quality=70)
    out = load_image(path)
    assert out.shape == (32, 32, 3)
    assert np.abs(out.astype(int) - load_image(PICTURE).astype(int)).mean() < 12


def test_too_many_pixels_is_refused(tmp_path, monkeypatch):
    path = save(Image.fromarray(PICTURE), tmp_path / "a.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="limit"):
        load_image(path)
    for in_memory in (PICTURE, Image.fromarray(PICTURE)):  # arrays and PIL images too
        with pytest.raises(ImageError, match="limit"):
            load_image(in_memory)


def bad_files(tmp_path):
    png = Image.fromarray(PICTURE)
    good = save(png, tmp_path / "good.png")
    truncated = tmp_path / "truncated.jpg"
    buf = io.BytesIO()
    png.save(buf, "JPEG")
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {
        "good": good,
        "truncated": (truncated, "damaged or truncated"),
        "text": (text, "not an image"),
        "empty": (empty, "empty"),
        "missing": (tmp_path / "missing.png", "no such file"),
        "folder": (tmp_path, "folder"),
    }


def test_bad_files_raise_image_errors_with_reasons(tmp_path):
    for name, value in bad_files(tmp_path).items():
        if name == "good":
            continue
        path, reason = value
        with pytest.raises(ImageError, match=reason):
            load_image(path)


# ----------------------------------------------------------------------------- Classifier


def test_classifier_matches_the_keras_model(tiny_model, tiny_path):
    x = RNG.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    expected = tiny_model.predict(x.astype("float32"), verbose=0)
    for clf in (Classifier(tiny_path, batch_size=16), Classifier(tiny_model)):
        probs = clf.predict_proba(x)
        np.testing.assert_allclose(probs, expected, atol=1e-5)
    top = clf.predict(x[:3], top_k=4)
    assert len(top) == 3 and all(len(t) == 4 for t in top)
    for row, preds in zip(expected[:3], top):
        assert [p.class_index for p in preds] == list(np.argsort(-row)[:4])
        assert preds[0].label == CLASS_NAMES[preds[0].class_index]
        assert preds[0].confidence == pytest.approx(float(row.max()), abs=1e-5)


def test_classifier_refuses_what_it_should(tmp_path, tiny_path):
    legacy = tmp_path / "model.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ValueError, match="safe mode"):
        Classifier(legacy)
    with pytest.raises(ValueError, match="no model at"):
        Classifier(tmp_path / "nothing.keras")
    with pytest.raises(ValueError, match="saved_model.pb"):
        Classifier(tmp_path)
    odd = tmp_path / "model.pkl"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot tell the format"):
        Classifier(odd)
    with pytest.raises(ValueError, match="top_k"):
        Classifier(tiny_path).predict(PICTURE, top_k=11)
    with pytest.raises(ValueError, match="batch_size"):
        Classifier(tiny_path, batch_size=0)


def test_safe_mode_blocks_lambda_layers(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="(?i)safe"):
        Classifier(path)


def test_predict_files_reports_each_bad_file_and_keeps_the_rest(tmp_path, tiny_path):
    files = bad_files(tmp_path)
    order = ["truncated", "good", "text", "empty", "missing", "folder", "good"]
    paths = [files[n] if n == "good" else files[n][0] for n in order]
    results = Classifier(tiny_path).predict_files(paths, top_k=2)
    assert [r.path for r in results] == [str(p) for p in paths]
    for name, result in zip(order, results):
        if name == "good":
            assert result.ok and len(result.predictions) == 2
        else:
            assert not result.ok and files[name][1] in result.error
    assert results[1].predictions == results[-1].predictions


def test_default_model_is_the_trained_or_shipped_one(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR_OUTPUT_DIR", str(tmp_path / "empty_runs"))
    if not paths.SHIPPED_MODEL.exists():
        pytest.skip("no shipped model in this checkout")
    clf = Classifier()
    assert clf.path == paths.SHIPPED_MODEL and clf.format == "keras"


def test_default_model_is_the_one_paths_finds(monkeypatch, tmp_path, tiny_path):
    runs = tmp_path / "runs"
    (runs / "fast").mkdir(parents=True)
    trained = runs / "fast" / "best.keras"
    trained.write_bytes(tiny_path.read_bytes())
    monkeypatch.setenv("CIFAR_OUTPUT_DIR", str(runs))
    monkeypatch.setattr(paths, "SHIPPED_MODEL", tmp_path / "none_shipped.keras")
    assert paths.find_trained_model()[0] == trained  # no shipped model: notebook 04's
    clf = Classifier()
    assert clf.path == trained and clf.format == "keras"


def test_inference_imports_no_training_and_no_side_effect_modules():
    """Keras files load through storage.load_model (custom objects passed explicitly) and the
    default model comes from paths: nothing is imported for its side effects, not even lazily."""
    import ast

    tree = ast.parse(open(inference.__file__, encoding="utf-8").read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert not {"cifar_utils.training", "cifar_utils.layers"} & imported, imported
    assert {"cifar_utils.storage", "cifar_utils.paths.find_trained_model"} <= imported


# ----------------------------------------------------------------------------- backends and batches


def test_one_backend_per_format(tiny_model, tiny_path):
    assert set(inference.BACKENDS) == set(inference.FORMATS) == {"keras", "saved_model", "tflite"}
    for fmt, backend in inference.BACKENDS.items():
        assert issubclass(backend, inference._Backend) and backend.format == fmt
    assert type(Classifier(tiny_path)._backend) is inference._KerasBackend
    assert type(Classifier(tiny_model)._backend) is inference._KerasBackend


def spy_on_batches(clf):
    """Records the length of each batch the classifier's backend runs, and its batch_size then."""
    seen = []
    forward = clf._backend.forward

    def recording(x):
        seen.append((len(x), clf.batch_size))
        return forward(x)

    clf._backend.forward = recording
    return seen


def test_batch_size_per_call_leaves_the_classifier_alone(tiny_path):
    x = RNG.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    clf = Classifier(tiny_path, batch_size=16)
    seen = spy_on_batches(clf)
    expected = clf.predict_proba(x)
    assert [n for n, _ in seen] == [16, 16, 8]
    seen.clear()
    np.testing.assert_allclose(clf.predict_proba(x, batch_size=7), expected, atol=1e-5)
    assert [n for n, _ in seen] == [7] * 5 + [5]
    assert clf.batch_size == 16
    for bad in (0, -3, 2.5):
        with pytest.raises(
            ValueError, match=f"batch_size must be a whole number >= 1; received {bad}"
        ):
            clf.predict_proba(x, batch_size=bad)


def test_predict_prepared_is_predict_proba_without_the_image_checks(tiny_path):
    x = RNG.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    clf = Classifier(tiny_path)
    np.testing.assert_allclose(
        clf.predict_prepared(x.astype(np.float32)), clf.predict_proba(x), atol=1e-6
    )
    assert clf.predict_prepared(np.zeros((0, 32, 32, 3), np.float32)).shape == (0, 10)
    for bad in (np.zeros((2, 48, 48, 3), np.float32), np.zeros((32, 32, 3), np.float32)):
        with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\); received"):
            clf.predict_prepared(bad)


def test_measure_speed_passes_its_batch_size_and_never_changes_the_classifier(tiny_path):
    x = RNG.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    clf = Classifier(tiny_path, batch_size=64)
    seen = spy_on_batches(clf)
    speed = inference.measure_speed(clf, x, batch_size=8, single=3, repeats=2)
    assert speed["batch_size"] == 8 and speed["images_per_second"] > 0
    assert 0 < speed["latency_ms_median"] <= speed["latency_ms_p90"]
    # 1 warm-up + 2 timed passes of 8, 8, 4; then 1 warm-up + 3 single images.
    assert [n for n, _ in seen] == [8, 8, 4] * 3 + [1] * 4
    assert {size for _, size in seen} == {64} and clf.batch_size == 64
    with pytest.raises(ValueError, match="at least one image"):
        inference.measure_speed(clf, x[:0])
    with pytest.raises(ValueError, match="repeats"):
        inference.measure_speed(clf, x, repeats=0)


# ----------------------------------------------------------------------------- cifar-predict


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "cifar_utils.inference", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_classifies_good_files_and_reports_bad_ones(tmp_path, tiny_path):
    files = bad_files(tmp_path)
    good, (text, _), (missing, _) = files["good"], files["text"], files["missing"]
    done = run_cli("--model", tiny_path, "--top-k", "2", good, text, missing)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"{good}: ") and done.stdout.count("%") == 2
    assert f"{text}: ERROR not an image" in done.stderr
    assert f"{missing}: ERROR no such file" in done.stderr
    assert "2 of 3 files could not be classified" in done.stderr

    done = run_cli("--model", tiny_path, "--json", good, text)
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc["format"] == "keras"
    assert len(doc["results"][0]["predictions"]) == 3 and "error" in doc["results"][1]

    done = run_cli("--model", tiny_path, good, good)
    assert done.returncode == 0 and done.stdout.count(str(good)) == 2


@pytest.mark.slow
def test_cli_bad_model_exits_2(tmp_path):
    legacy = tmp_path / "m.h5"
    legacy.write_bytes(b"x")
    image = save(Image.fromarray(PICTURE), tmp_path / "a.png")
    done = run_cli("--model", legacy, image)
    assert done.returncode == 2 and "safe mode" in done.stderr


# --- issue 13: every failure of one file is that file's ImageError; models fail in one line ---


def _png_with_broken_exif():
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(
        buffer, "PNG", exif=b"Exif\x00\x00garbage!"
    )
    return buffer.getvalue()


def test_a_broken_exif_block_is_ignored_and_a_too_long_name_is_that_files_image_error(tmp_path):
    from cifar_utils.images import ImageError, load_image

    # exif_transpose raised SyntaxError; then it was this file's error; now (issue 23, item 12)
    # the picture is used as stored, as JPEG always did.
    assert load_image(_png_with_broken_exif()).shape == (32, 32, 3)
    with pytest.raises(ImageError, match="name too long"):
        load_image(tmp_path / ("a" * 300 + ".png"))  # raised OSError before


def test_predict_files_classifies_the_good_files_around_crafted_ones(tmp_path, tiny_path):
    from cifar_utils.inference import Classifier

    good = tmp_path / "good.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(good)
    exif = tmp_path / "exif.png"
    exif.write_bytes(_png_with_broken_exif())
    long_name = tmp_path / ("b" * 300 + ".png")
    results = Classifier(tiny_path).predict_files([exif, good, long_name])
    assert [r.ok for r in results] == [True, True, False]
    assert results[1].predictions and "name too long" in results[2].error


def test_cifar_predict_escapes_a_newline_in_a_file_name(tmp_path, tiny_path, capsys):
    from PIL import Image

    from cifar_utils.inference import main

    odd = tmp_path / "two\nlines.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(odd)
    assert main(["--model", str(tiny_path), str(odd)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "two\\nlines.png: " in out, out


@pytest.mark.parametrize("kind", ["not-a-zip", "no-config", "code-in-config", "garbage-savedmodel"])
def test_every_unloadable_model_is_one_line_and_exit_2(tmp_path, capsys, kind):
    import json
    import zipfile

    from cifar_utils.inference import main

    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    if kind == "garbage-savedmodel":
        model = tmp_path / "sm"
        model.mkdir()
        (model / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
    else:
        model = tmp_path / "m.keras"
        if kind == "not-a-zip":
            model.write_bytes(b"not a zip at all")
        else:
            with zipfile.ZipFile(model, "w") as z:
                z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
                if kind == "code-in-config":
                    z.writestr(
                        "config.json",
                        json.dumps(
                            {
                                "module": "os",
                                "class_name": "system",
                                "config": {"command": "echo pwned"},
                                "registered_name": "system",
                            }
                        ),
                    )
    assert main(["--model", str(model), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cifar-predict: cannot load"), err
    assert "Traceback" not in err and "File not found" not in err and "pwned" not in err


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L"])
def test_reducing_in_strips_equals_one_reduce(mode):
    from PIL import Image

    from cifar_utils.images import _reduce_in_strips

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (1003, 700, 4), dtype=np.uint8), "RGBA").convert(
        mode
    )
    for factor in (2, 7, 36):
        expected = np.asarray(image.reduce(factor))
        got = np.asarray(_reduce_in_strips(image, factor, rows=3))
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "error",
    [
        NotImplementedError("crafted DDS"),
        TypeError("fuzzed TIFF"),
        SyntaxError("bad header"),
        OSError("decoder error -2"),
    ],
)
def test_any_decoder_failure_is_that_files_image_error(error, monkeypatch, tmp_path):
    """What crafted DDS and fuzzed TIFF files raised out of Pillow before (issue 13)."""
    from PIL import Image

    from cifar_utils import images

    picture = tmp_path / "odd.tif"
    picture.write_bytes(b"II*\x00" + b"\x00" * 64)

    def broken_open(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image, "open", broken_open)
    with pytest.raises(images.ImageError, match=str(error)):
        images.load_image(picture)


# --- issue 22: each image is prepared once; top_k is checked once, in Classifier ---


def test_load_images_returns_a_prepared_batch_without_preparing_it_again(monkeypatch):
    x = RNG.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    expected = np.stack([load_image(image) for image in x])
    monkeypatch.setattr(images, "load_image", lambda *a, **k: pytest.fail("prepared again"))
    out = images.load_images(x)
    assert np.array_equal(out, expected) and out is not x and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(images.load_images(x[:, ::-1]), expected[:, ::-1])  # a strided view


def test_predict_files_prepares_each_file_once(tmp_path, tiny_path, monkeypatch):
    files = [save(Image.fromarray(PICTURE), tmp_path / f"{i}.png") for i in range(3)]
    clf = Classifier(tiny_path)
    expected = clf.predict(files, top_k=2)
    calls = []

    def counted(source, *args, **kwargs):
        calls.append(source)
        return load_image(source, *args, **kwargs)

    monkeypatch.setattr(inference, "load_image", counted)
    monkeypatch.setattr(images, "load_image", counted)
    results = clf.predict_files(files, top_k=2)
    assert calls == files
    assert [r.predictions for r in results] == expected


def test_cifar_predict_reports_a_bad_top_k_in_one_line(tmp_path, tiny_path, capsys):
    image = save(Image.fromarray(PICTURE), tmp_path / "a.png")
    for k in ("0", "11"):
        assert inference.main(["--model", str(tiny_path), "--top-k", k, str(image)]) == 2
        err = capsys.readouterr().err
        assert err == f"cifar-predict: top_k must be between 1 and 10; received {k}\n", err
    with pytest.raises(ValueError, match="top_k must be between 1 and 10; received 0"):
        Classifier(tiny_path).predict_files([], top_k=0)  # checked even when no file is read
