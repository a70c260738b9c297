"""cifar_utils.tuning (KerasTuner search, ablations) and transfer learning, on tiny data."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from cifar_utils import backend, models, tuning


@pytest.mark.slow
def test_one_trial_search_runs(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    space = {
        "learning_rate": ("log", 1e-3, 1e-2),
        "width": ("choice", [8]),
        "augmentation": ("choice", ["none", "standard"]),
    }
    tuner, table = tuning.search(
        x, y, xv, yv, max_trials=1, epochs=1, batch_size=32, output_dir=tmp_path, space=space
    )
    assert len(table) == 1
    assert set(table.columns) == {"learning_rate", "width", "augmentation", "val_accuracy"}
    assert 1e-3 <= table["learning_rate"].iloc[0] <= 1e-2
    assert 0.0 <= table["val_accuracy"].iloc[0] <= 1.0
    best = tuner.get_best_hyperparameters(1)[0].values
    model = tuning.build_candidate(**{k: v for k, v in best.items()})
    assert model.output_shape == (None, 10)


def test_search_rejects_no_budget(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    with pytest.raises(ValueError, match="received 0 and 1"):
        tuning.search(x, y, xv, yv, max_trials=0, epochs=1, output_dir=tmp_path)


def test_bad_search_space(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    with pytest.raises(ValueError, match="unknown kind 'normal'"):
        tuning.search(
            x,
            y,
            xv,
            yv,
            max_trials=1,
            epochs=1,
            output_dir=tmp_path,
            space={"dropout": ("normal", 0, 1)},
        )


def test_ablation_table(tiny_data):
    x, y, xv, yv = tiny_data
    variants = {"full": {"filters": (8, 16)}, "no dropout": {"filters": (8, 16), "dropout": 0.0}}
    table, histories = tuning.ablation(x, y, xv, yv, epochs=2, batch_size=32, variants=variants)
    assert list(table.index) == ["full", "no dropout"]
    assert len(histories["full"]["val_accuracy"]) == 2
    np.testing.assert_allclose(
        table["gap (train - val)"], table["train accuracy"] - table["val accuracy"]
    )


def test_ablation_measures_train_accuracy_on_clean_images_in_inference_mode(tiny_data, monkeypatch):
    x, y, xv, yv = tiny_data
    calls, real = [], tuning.accuracy

    def recording(model, images, labels, **kwargs):
        value = real(model, images, labels, **kwargs)
        calls.append((images is x, images is xv, kwargs, value))
        return value

    monkeypatch.setattr(tuning, "accuracy", recording)  # evaluation.accuracy, as tuning imported it
    variants = {"heavy dropout": {"filters": (8, 16), "dropout": 0.9}}
    table, histories = tuning.ablation(x, y, xv, yv, epochs=1, batch_size=32, variants=variants)
    # evaluated after training on the very training and validation arrays, without TTA
    assert [(c[0], c[1], c[2]) for c in calls] == [(True, False, {}), (False, True, {})]
    row = table.loc["heavy dropout"]
    assert row["train accuracy"] == calls[0][3] and row["val accuracy"] == calls[1][3]
    assert row["fit accuracy"] == histories["heavy dropout"]["accuracy"][-1]  # kept, labelled apart


def test_transfer_model_code_path_offline(tmp_path):
    model = models.build_transfer(weights=None, image_size=32)
    assert model.output_shape == (None, 10)
    base = [layer for layer in model.layers if isinstance(layer, keras.Model)][0]
    assert not base.trainable
    assert len(model.trainable_weights) == 2  # only the new head learns
    probs = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "t.keras")
    keras.saving.load_model(tmp_path / "t.keras", safe_mode=True)  # no Lambda: loads safely


@pytest.mark.slow
def test_imagenet_weights_load_only_when_their_hash_matches(tmp_path):
    """A file in Keras's cache under the weights' name that is not the published file is
    not loaded: Keras compares its SHA-256 and fetches the real one instead (offline, the
    fetch then fails and the error says so)."""
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    (cache / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5").write_bytes(b"not weights")
    script = (
        "from cifar_utils import models\n"
        "try:\n"
        "    models.build_transfer(base='mobilenet_v3_small', weights='imagenet')\n"
        "except Exception as err:\n"
        "    print('REFUSED', type(err).__name__)\n"
        "else:\n"
        "    print('LOADED')\n"
    )
    env = {
        **os.environ,
        "KERAS_HOME": str(tmp_path / "keras_home"),
        "KERAS_BACKEND": backend.name(),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert "file hash does not match the original value" in done.stdout, done.stdout + done.stderr
    # Offline the download fails; online the published file replaces the impostor and loads.
    weights = cache / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    assert "REFUSED" in done.stdout or (
        "LOADED" in done.stdout and weights.read_bytes() != b"not weights"
    )


def test_transfer_errors():
    with pytest.raises(ValueError, match="received 'vgg16'"):
        models.build_transfer(base="vgg16", weights=None)
    with pytest.raises(ValueError, match="received 16"):
        models.build_transfer(weights=None, image_size=16)


@pytest.mark.slow
def test_search_reports_when_every_trial_fails(tiny_data, tmp_path, monkeypatch):
    x, y, xv, yv = tiny_data
    real, calls = tuning.build_candidate, []

    def broken(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:  # KerasTuner builds one candidate up front, to learn the search space
            return real(**kwargs)
        raise ValueError("broken candidate")  # every trial's model

    monkeypatch.setattr(tuning, "build_candidate", broken)
    # KerasTuner records a failing trial and goes on; search() must then say why, not return nothing
    with pytest.raises(
        RuntimeError,
        match=r"(?s)^every trial of the search failed; the first error was:\n"
        r".*ValueError: broken candidate",
    ):
        tuning.search(x, y, xv, yv, max_trials=1, epochs=1, output_dir=tmp_path)
    assert len(calls) >= 2  # the trial itself ran, and failed


def test_weight_decay_skips_biases_and_batch_norm():
    model = tuning.build_candidate(learning_rate=1e-3, weight_decay=0.1, width=8, seed=0)
    variables = model.trainable_variables
    for v in variables:  # non-zero everywhere, so that decay shows
        v.assign(np.ones(v.shape, "float32"))
    # A zero gradient moves nothing but AdamW's decoupled decay: w <- w (1 - learning_rate x decay).
    model.optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in variables])
    decayed = {v.path: not np.allclose(keras.ops.convert_to_numpy(v), 1.0) for v in variables}
    assert any(decayed.values())
    for path, shrank in decayed.items():
        assert shrank == path.endswith("kernel"), path
        if shrank:
            value = keras.ops.convert_to_numpy(model.get_layer(path.split("/")[0]).kernel)
            np.testing.assert_allclose(value, 1 - 1e-3 * 0.1, rtol=1e-6)
