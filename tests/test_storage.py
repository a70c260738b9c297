"""cifar_utils.storage: atomic writes, temporary files, and loading models in safe mode."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import cifar_utils
from cifar_utils import storage


@pytest.fixture
def umask_027():
    """A known umask for the test (set and restored here, the only place it is touched)."""
    umask = os.umask  # kept: the test replaces os.umask with a function that refuses
    old = umask(0o027)
    yield 0o027
    umask(old)


def _no_umask(monkeypatch):
    def refuse(mask):
        raise AssertionError("os.umask was called: it changes a setting every thread shares")

    monkeypatch.setattr(os, "umask", refuse)


# --- atomic writes ------------------------------------------------------------------------


def test_atomic_json_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "h.json"
    storage.atomic_write_json(path, {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2]}
    assert os.listdir(path.parent) == ["h.json"]
    storage.atomic_write_json(path, {"c": 1})
    assert json.loads(path.read_text()) == {"c": 1}
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        storage.atomic_write_json(path, {"d": object()})
    assert json.loads(path.read_text()) == {"c": 1} and os.listdir(path.parent) == ["h.json"]


def test_interrupted_model_save_keeps_the_old_file(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "m.keras"
    storage.atomic_save_model(model, path)
    before = path.read_bytes()

    class Broken(keras.Sequential):
        def save(self, filepath, *args, **kwargs):
            with open(filepath, "wb") as f:
                f.write(b"half a model")
            raise KeyboardInterrupt("killed during save")

    broken = Broken([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(KeyboardInterrupt):
        storage.atomic_save_model(broken, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary file left behind
    with pytest.raises(ValueError, match="must end in .keras; received"):
        storage.atomic_save_model(model, tmp_path / "m.h5")


def test_written_files_get_the_permissions_of_a_plain_open_without_touching_the_umask(
    tmp_path, monkeypatch, umask_027
):
    expected = 0o666 & ~umask_027  # 0o640; mkstemp alone would give 0o600
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == expected
    _no_umask(monkeypatch)
    text = storage.atomic_write_text(tmp_path / "a.txt", "hello")
    model = storage.atomic_save_model(
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), tmp_path / "m.keras"
    )
    for path in (text, model):
        assert oct(path.stat().st_mode & 0o777) == oct(expected), path.name
    temporary = storage._temporary_path(tmp_path / "b.json", ".tmp")
    assert (
        temporary.parent == tmp_path
        and temporary.name.startswith(".b.")
        and temporary.name.endswith(".tmp")
    )
    assert oct(temporary.stat().st_mode & 0o777) == oct(expected)


def test_remove_stale_temporaries_removes_only_their_names(tmp_path):
    stale = [".best.k3j_x9a2.keras", ".history.p0q8zz1m.tmp", ".final.abcdefgh.keras"]
    keep = [
        ".notes.txt",
        ".best.keras.bak",
        "mine.tmp",
        ".best.short.keras",
        ".other.abcdefgh.tmp",
        "best.keras",
    ]
    for name in stale + keep:
        (tmp_path / name).write_bytes(b"")
    removed = storage.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
    assert storage.remove_stale_temporaries(tmp_path / "missing") == []


# --- loading ------------------------------------------------------------------------------


def test_custom_objects_are_the_registered_ones():
    from cifar_utils.custom_objects import (
        CUSTOM_OBJECTS,
        PiecewiseLinear,
        ScaledBias,
        ShiftFlip,
        Temperature,
    )

    assert storage.CUSTOM_OBJECTS is CUSTOM_OBJECTS
    classes = (ScaledBias, ShiftFlip, Temperature, PiecewiseLinear)
    assert CUSTOM_OBJECTS == {keras.saving.get_registered_name(cls): cls for cls in classes}
    # The names saved files record: renaming them would orphan every saved model.
    assert set(CUSTOM_OBJECTS) == {
        "cifar_utils>ScaledBias",
        "cifar_utils>ShiftFlip",
        "cifar_utils>Temperature",
        "cifar_utils>PiecewiseLinear",
    }


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_loading_the_shipped_model_does_not_import_the_augmentation_module():
    """`storage.load_model` needs only Keras and `custom_objects` (issue 22)."""
    if not (REPO / "models" / "fast_net.keras").is_file():
        pytest.skip("no shipped model in this checkout")
    code = (
        "import sys, cifar_utils; cifar_utils.load_model('models/fast_net.keras'); "
        "print('cifar_utils.augment' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout


LOAD_SCRIPT = """
import sys
import numpy as np
import cifar_utils
model = cifar_utils.load_model(sys.argv[1])
schedule = model.optimizer.get_config()["learning_rate"]
print("LAYERS", sorted({type(layer).__name__ for layer in model.layers}))
print("SCHEDULE", schedule["class_name"], [round(v, 6) for v in schedule["config"]["values"]])
x = np.load(sys.argv[2])
np.testing.assert_allclose(model.predict(x, verbose=0), np.load(sys.argv[3]), atol=1e-6)
print("SAME PREDICTIONS")
"""


@pytest.mark.slow
def test_load_model_reads_custom_layers_and_schedules_in_a_fresh_process(tmp_path):
    """`import cifar_utils` alone is enough: the custom objects are passed to Keras explicitly."""
    from cifar_utils import compiling, models, recipes

    recipe = recipes.get_recipe("fast", epochs=2)
    model = compiling.compile_recipe(
        models.build_fast_net(widths=(8, 16, 16), bias_scale=8), recipe, 10
    )
    model.optimizer.build(
        model.trainable_variables
    )  # saved with its (zero) state, as after training
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "p.npy", model.predict(x, verbose=0))
    storage.atomic_save_model(model, tmp_path / "fast_net.keras")
    out = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, "fast_net.keras", "x.npy", "p.npy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ScaledBias" in out.stdout.split("LAYERS", 1)[1].splitlines()[0]
    assert (
        "SCHEDULE PiecewiseLinear [0.075, 0.375, 0.02625]" in out.stdout
    )  # triangle: 0.2x, 1x, 0.07x
    assert "SAME PREDICTIONS" in out.stdout


def test_load_model_compiles_only_when_asked(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    storage.atomic_save_model(model, tmp_path / "m.keras")
    assert isinstance(cifar_utils.load_model(tmp_path / "m.keras").optimizer, keras.optimizers.SGD)
    assert (
        getattr(storage.load_model(tmp_path / "m.keras", compile=False), "optimizer", None) is None
    )
    assert (
        cifar_utils.load_model(str(tmp_path / "m.keras"), compile=False).count_params()
        == model.count_params()
    )


def test_load_model_stays_in_safe_mode(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2)])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        cifar_utils.load_model(tmp_path / "lambda.keras")


@pytest.mark.parametrize("name", ["model.h5", "model.hdf5", "MODEL.H5"])
def test_load_model_refuses_legacy_hdf5(tmp_path, name):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "model.h5")  # a real legacy file
    (tmp_path / "model.h5").rename(tmp_path / name)
    with pytest.raises(ValueError, match="refusing to load .*legacy HDF5"):
        cifar_utils.load_model(tmp_path / name)


def test_one_function_refuses_legacy_hdf5_for_load_model_and_the_classifier(tmp_path):
    from cifar_utils import inference

    for name in ("m.h5", "m.HDF5"):
        with pytest.raises(ValueError, match="refusing to load .*legacy HDF5") as refused:
            storage.refuse_legacy_hdf5(tmp_path / name)
        (tmp_path / name).write_bytes(b"x")
        for load in (storage.load_model, inference.detect_format):
            with pytest.raises(ValueError) as again:
                load(tmp_path / name)
            assert str(again.value) == str(refused.value)
    assert storage.refuse_legacy_hdf5(tmp_path / "m.keras") is None


def test_load_model_refuses_what_is_not_a_keras_zip(tmp_path):
    with pytest.raises(ValueError, match="no model file at"):
        storage.load_model(tmp_path / "missing.keras")
    (tmp_path / "fake.keras").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"fake.keras is not a .keras file \(a zip archive"):
        storage.load_model(tmp_path / "fake.keras")
    with zipfile.ZipFile(tmp_path / "model.zip", "w") as z:  # a zip, but not named .keras
        z.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="model.zip is not a .keras file"):
        storage.load_model(tmp_path / "model.zip")
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(ValueError, match="no model file at"):
        storage.load_model(tmp_path / "folder.keras")
