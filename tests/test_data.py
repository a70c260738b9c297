"""cifar_utils.data on small synthetic batches written in the official pickle format."""

import os
import pickle

import numpy as np
import pytest
from conftest import make_synthetic, write_batch

from cifar_utils import batch_files, data


def load(folder, **kwargs):
    return data.load_cifar10(folder, verbose=False, images_per_batch=None, **kwargs)


# --- round trip and layout -------------------------------------------------------------


def test_round_trip_matches_written_arrays(synthetic_dir, no_cifar_env):
    folder, ((x_train, y_train), (x_test, y_test)) = synthetic_dir
    (xa, ya), (xb, yb) = load(folder)
    assert xa.shape == (100, 32, 32, 3) and xa.dtype == np.uint8
    assert ya.shape == (100, 1) and ya.dtype == np.uint8
    assert xb.shape == (20, 32, 32, 3) and yb.shape == (20, 1)
    assert xa.flags["C_CONTIGUOUS"] and xb.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(xa, x_train)
    np.testing.assert_array_equal(ya[:, 0], y_train)
    np.testing.assert_array_equal(xb, x_test)
    np.testing.assert_array_equal(yb[:, 0], y_test)


def test_channel_order_is_rgb_rows(tmp_path, no_cifar_env):
    """An official row is 1024 red, then 1024 green, then 1024 blue values, row-major."""
    folder = tmp_path / "c"
    make_synthetic(folder)
    flat = np.zeros((20, 3072), dtype=np.uint8)
    flat[0, 0] = 200  # red of pixel (0, 0)
    flat[0, 1024 + 33] = 100  # green of pixel (1, 1)
    flat[0, 2048 + 1023] = 50  # blue of pixel (31, 31)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": flat, b"labels": [0] * 20}, f, protocol=4)
    (_, _), (x_test, _) = load(folder)
    assert x_test[0, 0, 0, 0] == 200
    assert x_test[0, 1, 1, 1] == 100
    assert x_test[0, 31, 31, 2] == 50
    assert int(x_test[0].sum()) == 350


def test_parent_folder_is_accepted(synthetic_dir, no_cifar_env):
    folder, _ = synthetic_dir
    assert data.locate_cifar10(folder.parent).path == folder


def test_prints_which_source(synthetic_dir, no_cifar_env, capsys):
    folder, _ = synthetic_dir
    data.load_cifar10(folder, images_per_batch=None)
    out = capsys.readouterr().out
    assert "data_dir" in out and f".../{folder.name}" in out and "100 training" in out
    assert (
        str(folder) not in out
    )  # never the machine's absolute path (notebook outputs are committed)


# --- where it looks, in order ----------------------------------------------------------


def test_explicit_dir_beats_environment(tmp_path, monkeypatch, no_cifar_env):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    make_synthetic(env_dir, seed=1)
    (x_arg, _), _ = make_synthetic(arg_dir, seed=2)
    monkeypatch.setenv("CIFAR10_DIR", str(env_dir))
    assert data.locate_cifar10(arg_dir).kind == "data_dir"
    (x, _), _ = load(arg_dir)
    np.testing.assert_array_equal(x, x_arg)


def test_environment_beats_keras_cache(tmp_path, monkeypatch, no_cifar_env):
    env_dir = tmp_path / "env"
    (x_env, _), _ = make_synthetic(env_dir, seed=1)
    cache = (
        tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    )
    make_synthetic(cache, seed=2)
    monkeypatch.setenv("CIFAR10_DIR", str(env_dir))
    source = data.locate_cifar10()
    assert (source.kind, source.path) == ("env", env_dir)
    (x, _), _ = load(None)
    np.testing.assert_array_equal(x, x_env)


@pytest.mark.parametrize(
    "layout", [("cifar-10-batches-py-target", "cifar-10-batches-py"), ("cifar-10-batches-py",)]
)
def test_keras_cache_is_used_when_nothing_is_set(tmp_path, no_cifar_env, layout):
    cache = tmp_path.joinpath("keras_home", "datasets", *layout)
    (x_cache, _), _ = make_synthetic(cache)
    source = data.locate_cifar10()
    assert (source.kind, source.path) == ("keras_cache", cache)
    (x, _), _ = load(None)
    np.testing.assert_array_equal(x, x_cache)


def test_variant_says_offline_copy_only_for_its_test_file(synthetic_dir, no_cifar_env, monkeypatch):
    import hashlib

    folder, _ = synthetic_dir
    assert data.locate_cifar10(folder).variant == data.OFFICIAL == "official"
    assert data.DataSource("keras_download", None).variant == data.OFFICIAL
    digest = hashlib.sha256((folder / data.TEST_FILE).read_bytes()).hexdigest()
    monkeypatch.setattr(
        data, "OFFLINE_COPY_TEST_SHA256", digest
    )  # this folder's test file is "the" copy
    assert data.locate_cifar10(folder).variant == data.OFFLINE_COPY == "offline copy"
    (folder / data.TEST_FILE).write_bytes((folder / data.TEST_FILE).read_bytes() + b"\0")
    assert data.locate_cifar10(folder).variant == data.OFFICIAL  # one byte more: not the copy


def test_load_cifar10_returns_its_source_and_prints_the_same_variant(
    synthetic_dir, no_cifar_env, monkeypatch, capsys
):
    import hashlib

    folder, _ = synthetic_dir
    (x, _), (x_test, _), source = data.load_cifar10(
        folder, images_per_batch=None, return_source=True
    )
    assert (source.kind, source.variant) == ("data_dir", data.OFFICIAL) and len(x) and len(x_test)
    assert "(official layout; not the known offline copy)" in capsys.readouterr().out
    digest = hashlib.sha256((folder / data.TEST_FILE).read_bytes()).hexdigest()
    monkeypatch.setattr(data, "OFFLINE_COPY_TEST_SHA256", digest)
    *_, source = data.load_cifar10(folder, images_per_batch=None, return_source=True)
    assert source.variant == data.OFFLINE_COPY
    assert "(offline copy, JPEG re-encoded)" in capsys.readouterr().out
    assert data.DataSource("keras_download", None).describe_variant() == "official files"
    assert (
        len(data.load_cifar10(folder, images_per_batch=None, verbose=False)) == 2
    )  # Keras's shape by default


def test_keras_download_is_last(no_cifar_env, monkeypatch):
    import keras

    calls = []
    fake = (
        (np.zeros((3, 32, 32, 3), np.uint8), np.zeros((3, 1), np.uint8)),
        (np.ones((2, 32, 32, 3), np.uint8), np.ones((2, 1), np.uint8)),
    )
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: calls.append(1) or fake)
    assert data.locate_cifar10().kind == "keras_download"
    (x, _), (xt, _) = data.load_cifar10(verbose=False)
    assert calls == [1] and x.shape == (3, 32, 32, 3) and xt.shape == (2, 32, 32, 3)


def test_offline_download_failure_says_what_to_do(no_cifar_env, monkeypatch):
    import keras

    def offline():
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(data.CIFAR10NotFoundError) as err:
        data.load_cifar10(verbose=False)
    assert "CIFAR10_DIR" in str(err.value) and "no network" in str(err.value)


def test_environment_folder_without_data_does_not_fall_through(tmp_path, monkeypatch, no_cifar_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CIFAR10_DIR", str(empty))
    with pytest.raises(
        data.CIFAR10NotFoundError, match=r"\$CIFAR10_DIR.*holds no CIFAR-10 batch files"
    ):
        data.load_cifar10(verbose=False)


def test_missing_folder(tmp_path, no_cifar_env):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        data.load_cifar10(tmp_path / "nowhere", verbose=False)


# --- bad files ---------------------------------------------------------------------------


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("exploit", [_Exploit, _EvalExploit])
def test_malicious_pickle_is_refused_and_nothing_runs(
    synthetic_dir, no_cifar_env, tmp_path, exploit
):
    folder, _ = synthetic_dir
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": exploit(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(
        data.CIFAR10DataError, match=r"data_batch_2 was not loaded: refused to load global"
    ):
        load(folder)
    assert not marker.exists()


def test_missing_file_is_named(synthetic_dir, no_cifar_env):
    folder, _ = synthetic_dir
    (folder / "data_batch_3").unlink()
    with pytest.raises(data.CIFAR10NotFoundError) as err:
        load(folder)
    message = str(err.value)
    assert (
        "data_batch_3 is missing" in message
        and "CIFAR10_DIR" in message
        and "scripts/setup.sh" in message
    )


def test_truncated_file(synthetic_dir, no_cifar_env):
    folder, _ = synthetic_dir
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.CIFAR10DataError, match=r"test_batch is truncated or corrupt"):
        load(folder)


def test_garbage_file(synthetic_dir, no_cifar_env):
    folder, _ = synthetic_dir
    (folder / "data_batch_1").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(data.CIFAR10DataError, match=r"data_batch_1"):
        load(folder)


def test_not_a_dict(synthetic_dir, no_cifar_env):
    folder, _ = synthetic_dir
    with open(folder / "data_batch_4", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(data.CIFAR10DataError, match=r"data_batch_4 holds a list"):
        load(folder)


def test_wrong_shape(synthetic_dir, no_cifar_env):
    folder, _ = synthetic_dir
    with open(folder / "data_batch_5", "wb") as f:
        pickle.dump({b"data": np.zeros((20, 3000), np.uint8), b"labels": [0] * 20}, f)
    with pytest.raises(data.CIFAR10DataError, match=r"data_batch_5: 'data' has shape \(20, 3000\)"):
        load(folder)


def test_wrong_dtype(synthetic_dir, no_cifar_env):
    folder, _ = synthetic_dir
    with open(folder / "data_batch_5", "wb") as f:
        pickle.dump({b"data": np.zeros((20, 3072), np.float32), b"labels": [0] * 20}, f)
    with pytest.raises(data.CIFAR10DataError, match=r"dtype float32"):
        load(folder)


def test_wrong_label_count(synthetic_dir, no_cifar_env):
    folder, ((x_train, y_train), _) = synthetic_dir
    write_batch(folder / "data_batch_1", x_train[:20], y_train[:19])
    with pytest.raises(data.CIFAR10DataError, match=r"data_batch_1: 19 labels for 20 images"):
        load(folder)


def test_label_out_of_range(synthetic_dir, no_cifar_env):
    folder, ((x_train, _), _) = synthetic_dir
    write_batch(folder / "data_batch_1", x_train[:20], [10] * 20)
    with pytest.raises(data.CIFAR10DataError, match=r"labels range from 10 to 10"):
        load(folder)


def test_incomplete_batch_is_refused_by_default(synthetic_dir, no_cifar_env):
    """The official files hold 10,000 images each; a shorter one is never accepted silently."""
    folder, _ = synthetic_dir
    with pytest.raises(
        data.CIFAR10DataError, match=r"data_batch_1: holds 20 images; an official batch holds 10000"
    ):
        data.load_cifar10(folder, verbose=False)


def test_errors_are_value_errors():
    assert issubclass(data.CIFAR10DataError, ValueError)
    assert issubclass(data.CIFAR10NotFoundError, FileNotFoundError)


def test_the_batch_files_labels_are_the_class_names():
    """`batch_files` checks labels 0..9 without importing `data`; both must agree."""
    assert batch_files.NUM_CLASSES == data.NUM_CLASSES == len(data.CLASS_NAMES)


# --- splits ----------------------------------------------------------------------------


def _labels(n_per_class=100):
    return np.repeat(np.arange(10), n_per_class).reshape(-1, 1).astype(np.uint8)


def test_split_is_stratified_and_disjoint():
    y = _labels()
    x = np.arange(len(y), dtype=np.int64).reshape(-1, 1, 1, 1)  # image i holds its index
    (x_tr, y_tr), (x_val, y_val) = data.split_train_val(x, y, val_fraction=0.2, seed=3)
    assert len(x_val) == 200 and len(x_tr) == 800
    assert list(np.bincount(y_val.ravel(), minlength=10)) == [20] * 10
    assert list(np.bincount(y_tr.ravel(), minlength=10)) == [80] * 10
    assert not set(x_tr.ravel()) & set(x_val.ravel())
    np.testing.assert_array_equal(y[x_val.ravel()], y_val)  # images keep their labels


def test_split_seed_stability():
    y = _labels()
    x = np.arange(len(y)).reshape(-1, 1, 1, 1)
    first = data.split_train_val(x, y, 0.1, seed=7)[1][0]
    again = data.split_train_val(x, y, 0.1, seed=7)[1][0]
    other = data.split_train_val(x, y, 0.1, seed=8)[1][0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 0, 1000])
def test_split_rejects_bad_fraction(bad):
    y = _labels()
    with pytest.raises(ValueError, match="received"):
        data.split_train_val(np.zeros((len(y), 1, 1, 1)), y, bad)


def test_stratified_subset():
    y = _labels()
    x = np.arange(len(y)).reshape(-1, 1, 1, 1)
    xs, ys = data.stratified_subset(x, y, 50, seed=0)
    assert len(xs) == 50 and list(np.bincount(ys.ravel())) == [5] * 10
    assert data.stratified_subset(x, y, 5000)[0] is x


def test_class_counts_and_channel_stats():
    y = _labels(3)
    counts = data.class_counts({"train": y, "test": y[:10]})
    assert list(counts["train"]) == [3] * 10 and counts["test"].sum() == 10
    assert list(counts.index) == list(data.CLASS_NAMES)
    x = np.random.default_rng(0).integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    mean, std = data.channel_stats(x, chunk=3)
    np.testing.assert_allclose(mean, (x / 255.0).mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, (x / 255.0).std(axis=(0, 1, 2)), rtol=1e-9)


# --- the batch pipeline (tf.data on TensorFlow, ArrayBatches elsewhere) ---------------------


def _np(tensor):
    import keras

    return keras.ops.convert_to_numpy(tensor)


def _dtype(tensor):
    import keras

    return keras.backend.standardize_dtype(tensor.dtype)


def _xy(n=50):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), (np.arange(n) % 10).reshape(-1, 1)


def test_pipeline_shapes_dtypes_and_normalisation():
    x, y = _xy()
    ds = data.make_dataset(x, y, batch_size=16, normalize=True)
    batches = list(ds)
    assert [len(b[0]) for b in batches] == [16, 16, 16, 2]
    xb, yb = batches[0]
    assert _dtype(xb) == "float32" and xb.shape == (16, 32, 32, 3)
    assert _dtype(yb) == "int32" and yb.shape == (16,)
    expected = (x[:16] / 255.0 - np.array(data.CIFAR10_MEAN)) / np.array(data.CIFAR10_STD)
    np.testing.assert_allclose(_np(xb), expected, atol=1e-5)
    np.testing.assert_array_equal(_np(yb), y[:16, 0])


def test_pipeline_raw_pixels_and_one_hot():
    x, y = _xy()
    xb, yb = next(iter(data.make_dataset(x, y, batch_size=8, num_classes=10)))
    np.testing.assert_array_equal(_np(xb), x[:8].astype(np.float32))
    np.testing.assert_array_equal(_np(yb), np.eye(10)[y[:8, 0]])


def test_pipeline_shuffle_is_seeded_and_reshuffles():
    x, y = _xy()
    firsts = x[:, 0, 0, 0]  # a fingerprint of each image

    def two_epochs(seed):
        ds = data.make_dataset(x, y, batch_size=50, shuffle=True, seed=seed, normalize=False)
        stream = data.endless_batches(ds)  # one batch an epoch
        return [_np(next(stream)[0])[:, 0, 0, 0] for _ in range(2)]

    a, b = two_epochs(5), two_epochs(5)
    np.testing.assert_array_equal(a[0], b[0])  # same seed, same order
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], firsts)  # shuffled
    assert not np.array_equal(a[0], a[1])  # a new order each epoch
    assert sorted(a[0]) == sorted(firsts)  # every image once per epoch


def test_pipeline_drop_remainder_and_augment_hook():
    import keras

    from cifar_utils import backend

    x, y = _xy()
    seen = []

    def augment(images, labels):
        seen.append(_dtype(images))
        return keras.ops.zeros_like(images) + 255.0, labels

    ds = data.make_dataset(
        x, y, batch_size=16, drop_remainder=True, augment_fn=augment, normalize=False
    )
    batches = list(ds)
    assert len(batches) == 3 and all(b[0].shape[0] == 16 for b in batches)
    assert float(np.min(_np(batches[0][0]))) == 255.0
    # on float32 pixels: traced once by tf.data, called on each batch elsewhere
    assert seen == ["float32"] * (1 if backend.is_tensorflow() else 3)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"batch_size": 0}, "batch_size must be a whole number >= 1; received 0"),
        ({"batch_size": 2.5}, "received 2.5"),
        ({"batch_size": True}, "batch_size must be a whole number"),
    ],
)
def test_pipeline_rejects_bad_arguments(kwargs, pattern):
    x, y = _xy()
    with pytest.raises(ValueError, match=pattern):
        data.make_dataset(x, y, **kwargs)


def test_pipeline_rejects_float_images_and_mismatch():
    x, y = _xy()
    with pytest.raises(ValueError, match="must be uint8"):
        data.make_dataset(x.astype(np.float32), y)
    with pytest.raises(ValueError, match="50 images but y has 49 labels"):
        data.make_dataset(x, y[:49])
    with pytest.raises(ValueError, match=r"received \(50, 32, 32\)"):
        data.make_dataset(x[..., 0], y)


def test_normalisation_layer_and_function_agree_under_mixed_precision():
    import keras

    x, _ = _xy(4)
    expected = (x / 255.0 - np.array(data.CIFAR10_MEAN)) / np.array(data.CIFAR10_STD)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = data.normalization_layer()
        np.testing.assert_allclose(np.asarray(layer(x.astype("float32"))), expected, atol=1e-4)
        np.testing.assert_allclose(_np(data.normalize_images(x)), expected, atol=1e-4)
        assert _dtype(data.normalize_images(x)) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- the lossless sample of the official test set -------------------------------------------


def _lossless_png(path, images):
    from PIL import Image

    Image.fromarray(images.reshape(len(images), 32 * 32, 3)).save(path)
    return path


def test_lossless_sample_reads_one_image_per_row(tmp_path, monkeypatch):
    images = np.random.default_rng(1).integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
    png = _lossless_png(tmp_path / "official_test_first_1000.png", images)
    assert np.array_equal(data.load_lossless_test_sample(png), images)
    # Without a path: $CIFAR10_LOSSLESS, else the file beside the $CIFAR10_DIR folder.
    monkeypatch.delenv("CIFAR10_LOSSLESS", raising=False)
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "cifar-10-batches-py"))
    assert np.array_equal(data.load_lossless_test_sample(), images)
    monkeypatch.setenv("CIFAR10_LOSSLESS", str(tmp_path / "elsewhere.png"))
    with pytest.raises(data.CIFAR10DataError, match="elsewhere.png.*set CIFAR10_LOSSLESS"):
        data.load_lossless_test_sample()


def test_lossless_sample_refuses_other_files(tmp_path):
    small = _lossless_png(tmp_path / "small.png", np.zeros((10, 32, 32, 3), np.uint8))
    with pytest.raises(
        data.CIFAR10DataError, match="expected 1000 rows of 1024 pixels; received 10 x 1024"
    ):
        data.load_lossless_test_sample(small)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(data.CIFAR10DataError, match="not a readable PNG"):
        data.load_lossless_test_sample(junk)
