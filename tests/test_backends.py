"""Keras 3's backends: what runs everywhere (these tests run under TensorFlow, JAX and PyTorch:
scripts/test_backends.sh), and what says in one sentence that it needs TensorFlow."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from cifar_utils import augment, backend, callbacks, data, device, evaluation, export, reports

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
Y = np.arange(40) % 10


# --- choosing and checking the backend --------------------------------------------------


def test_the_backend_is_the_one_keras_runs_and_its_library_is_named():
    assert backend.name() == keras.backend.backend() in backend.BACKENDS
    assert backend.name() == backend.configured_name()
    assert backend.library_version() != "not installed"
    assert backend.describe().split()[0] in ("TensorFlow", "JAX", "PyTorch")


def test_the_backend_is_read_as_keras_reads_it(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert backend.configured_name() == "tensorflow"  # no keras.json: Keras's default
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert backend.configured_name() == "torch"
    monkeypatch.setenv("KERAS_BACKEND", "JAX")
    assert backend.configured_name() == "jax"  # the environment wins, as in Keras


def test_a_backend_that_is_not_installed_is_one_sentence_naming_the_extra(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(backend, "installed", lambda library: library == "torch")
    with pytest.raises(ImportError) as caught:
        backend.check_installed()
    message = str(caught.value)
    assert 'pip install -e ".[jax]"' in message and "KERAS_BACKEND=torch" in message
    assert "\n" not in message


def test_importing_the_package_without_the_backend_says_what_to_install():
    missing = [b for b in backend.BACKENDS if not backend.installed(backend.LIBRARIES[b])]
    if not missing:
        pytest.skip("every backend is installed here")  # CI's backend venvs each lack one
    env = {**os.environ, "KERAS_BACKEND": missing[0]}
    result = subprocess.run(
        [sys.executable, "-c", "import cifar_utils"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f'pip install -e ".[{missing[0]}]"' in result.stderr.strip().splitlines()[-1]


def test_what_needs_tensorflow_says_so_in_one_sentence(monkeypatch, tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    if not backend.is_tensorflow():  # exporting a Keras model needs Keras on TensorFlow
        with pytest.raises(backend.NeedsTensorFlow, match=r"needs Keras on TensorFlow.*KERAS_BACK"):
            export.export_saved_model(model, tmp_path / "saved")
    monkeypatch.setattr(backend, "tensorflow_installed", lambda: False)
    monkeypatch.setattr(backend, "name", lambda: "tensorflow")  # as if Keras ran on it
    with pytest.raises(backend.NeedsTensorFlow, match=r"SavedModel export needs TensorFlow"):
        export.export_saved_model(model, tmp_path / "saved")
    with pytest.raises(backend.NeedsTensorFlow, match=r'pip install -e "\.\[tensorflow\]"'):
        export.convert_tflite(tmp_path / "saved", tmp_path / "m.tflite")
    assert not (tmp_path / "saved").exists()


def test_library_versions_come_from_the_module_or_its_distribution(monkeypatch):
    import types

    fake = types.ModuleType("tensorflow")
    fake.__version__ = "9.9.9"  # e.g. tensorflow-cpu: its module, not a "tensorflow" package
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    assert backend.library_version("tensorflow") == "9.9.9"
    assert backend.library_version("no_such_library_here") == "not installed"


def test_setup_devices_describes_the_backend_and_its_choices():
    with device.dtype_policy_scope() as setup:  # Keras's global policy is put back after
        pass
    assert backend.describe() in setup.description
    assert setup.num_replicas == 1
    with setup.strategy.scope():
        keras.layers.Dense(1)
    if not backend.is_tensorflow():  # the CPU's bfloat16 is chosen for TensorFlow's oneDNN only
        assert setup.precision_policy == "float32"
        assert setup.jit_compile == (backend.name() == "jax")


def test_run_info_records_the_backend():
    info = reports.run_info(seed=3)
    assert info["backend"] == backend.name()
    assert info["backend_version"] == backend.library_version()
    expected = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}[backend.name()]
    assert f", {expected} {backend.library_version()}, Keras" in reports.versions_text(info)


# --- batches without tf.data ----------------------------------------------------------------


def test_array_batches_are_make_datasets_batches():
    batches = data.ArrayBatches(X, Y, batch_size=16, shuffle=True, seed=1, num_classes=10)
    assert len(batches) == 3  # 16 + 16 + 8
    seen = []
    for images, labels in batches:
        assert images.dtype == np.float32 and labels.shape == (len(images), 10)
        seen += [bytes(image.astype(np.uint8)) for image in images]
        assert np.all(labels.argmax(1) == [Y[_index_of(image)] for image in images])
    assert sorted(seen) == sorted(bytes(image) for image in X)  # every image once
    first = [bytes(images[0].astype(np.uint8)) for images, _ in batches]
    batches.on_epoch_end()
    assert [bytes(images[0].astype(np.uint8)) for images, _ in batches] != first  # reshuffled
    assert len(data.ArrayBatches(X, Y, batch_size=16, drop_remainder=True)) == 2
    with pytest.raises(IndexError):
        batches[3]


def _index_of(image):
    return int(np.flatnonzero((X == image.astype(np.uint8)).all(axis=(1, 2, 3)))[0])


def test_array_batches_normalise_and_augment_as_asked():
    images, labels = data.ArrayBatches(X, Y, batch_size=8, normalize=True)[0]
    np.testing.assert_allclose(
        images, keras.ops.convert_to_numpy(data.normalize_images(X[:8])), atol=1e-6
    )
    assert labels.dtype == np.int32
    flip = augment.pipeline_augment("standard", seed=0)
    images, _ = data.ArrayBatches(X, Y, batch_size=8, augment_fn=flip, num_classes=10)[0]
    assert images.shape == (8, 32, 32, 3) and not np.array_equal(images, X[:8])


def test_endless_batches_cross_epochs():
    batches = data.ArrayBatches(X, Y, batch_size=16)
    stream = data.endless_batches(batches)
    shapes = [next(stream)[0].shape[0] for _ in range(7)]
    assert shapes == [16, 16, 8, 16, 16, 8, 16]
    assert not data.is_endless(batches)


def test_alternating_batches_shift_flip_and_cut_as_airbench():
    n, shift = len(X), 2
    batches = augment.AlternatingBatches(
        X, Y, 8, seed=0, max_shift=shift, cutout=0, drop_remainder=True
    )
    padded = np.pad(X, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="reflect")
    flips = []
    for _epoch in range(2):
        flipped = {}
        for images, labels in batches:
            for image, label in zip(images.astype(np.uint8), labels.argmax(1)):
                i, mirrored = _crop_of(padded, image, shift)
                assert Y[i] == label
                flipped[i] = mirrored
        assert sorted(flipped) == list(range(n))  # every image once an epoch
        flips.append(flipped)
        batches.on_epoch_end()
    assert all(flips[0][i] != flips[1][i] for i in range(n))  # alternating flip
    assert 0 < sum(flips[0].values()) < n
    cut = augment.AlternatingBatches(X, Y, 8, seed=0, max_shift=0, cutout=12, drop_remainder=True)
    images, _ = cut[0]
    mean = np.all(images == np.array(augment.MEAN_PIXEL, np.float32), axis=-1)
    assert np.all(mean.sum(axis=(1, 2)) >= 144)  # a 12 x 12 square of the mean pixel


def _crop_of(padded, image, shift):
    """(index, mirrored) of the padded image that `image` is a crop of."""
    size = image.shape[0]
    for i, source in enumerate(padded):
        for mirrored, view in ((False, image), (True, image[:, ::-1])):
            for dy in range(2 * shift + 1):
                for dx in range(2 * shift + 1):
                    if np.array_equal(source[dy : dy + size, dx : dx + size], view):
                        return i, mirrored
    raise AssertionError("not a shifted crop of any training image")


def test_training_dataset_takes_the_backends_pipeline():
    ds = augment.training_dataset(X, Y, "airbench", batch_size=8)
    assert data.is_endless(ds) == backend.is_tensorflow()
    images, labels = next(data.endless_batches(ds))
    assert tuple(images.shape) == (8, 32, 32, 3) and tuple(labels.shape) == (8, 10)


# --- callbacks on every backend ---------------------------------------------------------------


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.CategoricalCrossentropy(from_logits=True))
    return model


def test_lookahead_without_an_update_ends_on_the_first_weights():
    model = _tiny_model()
    first = [w.copy() for w in model.get_weights()]
    batches = data.ArrayBatches(X, Y, batch_size=8, num_classes=10)
    model.fit(
        batches, epochs=2, verbose=0, callbacks=[callbacks.Lookahead(total_steps=10, every=100)]
    )
    for before, after in zip(first, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_lookahead_updates_in_fit_and_keeps_training():
    model = _tiny_model()
    first = model.get_layer("head").get_weights()[0].copy()
    batches = data.ArrayBatches(X, Y, batch_size=8, num_classes=10)
    lookahead = callbacks.Lookahead(total_steps=10, every=2)
    model.fit(batches, epochs=2, verbose=0, callbacks=[lookahead])
    assert lookahead.step == 10
    assert not np.allclose(model.get_layer("head").get_weights()[0], first)


def test_frozen_layers_stop_changing_on_every_backend():
    model = _tiny_model()
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.get_layer("conv").get_weights()[0].copy())

    batches = data.ArrayBatches(X, Y, batch_size=8, num_classes=10)
    start = model.get_layer("conv").get_weights()[0].copy()
    model.fit(
        batches,
        epochs=3,
        verbose=0,
        callbacks=[callbacks.FreezeLayers(["conv"], epochs=1), Record()],
    )
    assert not np.allclose(seen[0], start)  # trained in its first epoch
    np.testing.assert_array_equal(seen[0], seen[2])  # frozen after it
    assert model.get_layer("conv").trainable  # trainable again after fit


# --- evaluation ---------------------------------------------------------------------------------


def test_grad_cam_on_this_backend():
    model = _tiny_model()
    heatmaps = evaluation.grad_cam(model, X[:3], layer_name="conv", class_index=2)
    assert heatmaps.shape == (3, 32, 32) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and np.allclose(heatmaps.max(axis=(1, 2)), 1.0, atol=1e-5)
