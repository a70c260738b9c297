"""cifar_utils.training: optimisers and compiling, train (outputs, errors, determinism, the global
settings it leaves alone, resuming a real process killed mid-epoch), fine_tune, lr_find,
load_or_train, ship_model and the cifar-train command.

Recipes, schedules, storage, callbacks, paths and model cards have their own test files."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import keras
import numpy as np
import pytest

from cifar_utils import (
    cli,
    compiling,
    device,
    evaluation,
    lr_finder,
    models,
    paths,
    recipes,
    shipping,
    storage,
    training,
)
from cifar_utils.custom_objects import CUSTOM_OBJECTS, ShiftFlip

TINY = dict(
    arch="baseline_cnn",
    model_kwargs={"filters": [8, 16], "dense_units": 16},
    batch_size=16,
    augmentation="standard",
)


def tiny_recipe(**overrides):
    return recipes.get_recipe("baseline_cnn", **{**TINY, "epochs": 2, **overrides})


# --- optimisers and compiling ----------------------------------------------------------


def _recipe_optimizer(recipe, steps_per_epoch=10):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10, activation="softmax")])
    return compiling.compile_recipe(model, recipe, steps_per_epoch).optimizer


def test_optimisers_and_weight_decay():
    sgd = _recipe_optimizer(recipes.get_recipe("fast"))
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.85
    assert sgd.weight_decay == pytest.approx(0.01)
    assert float(sgd.learning_rate) == pytest.approx(0.2 * 0.375)  # triangle starts at 0.2x
    adamw = _recipe_optimizer(recipes.get_recipe("baseline_cnn"))
    assert isinstance(adamw, keras.optimizers.AdamW)
    adam = _recipe_optimizer(recipes.get_recipe("baseline_cnn", optimizer="adam", weight_decay=0.0))
    assert type(adam) is keras.optimizers.Adam


def test_make_optimizer_by_name():
    sgd = compiling.make_optimizer()
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.9
    assert float(sgd.learning_rate) == pytest.approx(0.1) and sgd.weight_decay is None
    plain = compiling.make_optimizer("sgd", 0.5, momentum=0.0, nesterov=False, weight_decay=0.001)
    assert (
        not plain.nesterov and plain.momentum == 0.0 and plain.weight_decay == pytest.approx(0.001)
    )
    assert type(compiling.make_optimizer("adam", 1e-3)) is keras.optimizers.Adam
    with pytest.raises(ValueError, match="optimizer must be one of .*received 'rmsprop'"):
        compiling.make_optimizer("rmsprop")


def test_compile_model_uses_one_hot_labels_smoothing_and_the_accuracy_metric():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    probs = np.array([0.5, 0.25, 0.25])
    model.layers[0].set_weights([np.zeros((4, 3), "float32"), np.log(probs).astype("float32")])
    compiling.compile_model(model, compiling.make_optimizer("sgd", 0.01), label_smoothing=0.3)
    x = np.zeros((6, 4), "float32")
    y = keras.utils.to_categorical(np.zeros(6), 3)  # every image of class 0, one-hot
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "accuracy"} and logs["accuracy"] == 1.0
    target = np.array([0.7 + 0.1, 0.1, 0.1])  # 0.3 of the target spread over the three classes
    assert logs["loss"] == pytest.approx(-(target * np.log(probs)).sum(), rel=1e-4)


def test_weight_decay_shrinks_kernels_but_not_scaled_shifts():
    from cifar_utils.models import build_fast_net

    model = build_fast_net(widths=(8, 16, 16), bias_scale=8)
    shift = model.get_layer("group1_shift1").bias
    shift.assign(np.ones(shift.shape, "float32"))
    kernel = model.get_layer("group1_conv1").kernel
    before = keras.ops.convert_to_numpy(kernel).copy()
    plain = recipes.get_recipe(
        "fast", schedule="constant", momentum=0.0, nesterov=False, decay_biases=False
    )
    optimizer = compiling.compile_recipe(model, plain, 10).optimizer
    optimizer.apply_gradients(
        [(keras.ops.zeros(shift.shape), shift), (keras.ops.zeros(kernel.shape), kernel)]
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(shift), 1.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(kernel), before * (1 - 0.375 * 0.01), rtol=1e-5
    )
    # airbench's way (decay_biases=True, the fast recipe's): the shifts shrink by that share too
    model = build_fast_net(widths=(8, 16, 16), bias_scale=8)
    shift = model.get_layer("group1_shift1").bias
    shift.assign(np.ones(shift.shape, "float32"))
    recipe = recipes.get_recipe(
        "fast", schedule="constant", momentum=0.0, nesterov=False, decay_biases=True
    )
    optimizer = compiling.compile_recipe(model, recipe, 10).optimizer
    optimizer.apply_gradients([(keras.ops.zeros(shift.shape), shift)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(shift), 1 - 0.375 * 0.01, rtol=1e-5)


# --- training -----------------------------------------------------------------------------


def test_train_writes_models_and_history(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    result = training.train(tiny_recipe(), x, y, xv, yv, output_dir=tmp_path, verbose=0)
    assert result.history["epoch"] == [0, 1]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "learning_rate"):
        assert len(result.history[key]) == 2, key
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["recipe"]["epochs"] == 2 and saved["run"]["seed"] == 0
    assert saved["run"]["epochs"] == 2 and saved["run"]["train_seconds"] > 0
    assert not (tmp_path / "backup").exists()
    for name in ("best.keras", "final.keras"):
        loaded = keras.saving.load_model(tmp_path / name, safe_mode=True)
        assert loaded.output_shape == (None, 10)
    np.testing.assert_array_equal(
        keras.saving.load_model(result.final_model_path).predict(xv, verbose=0),
        result.model.predict(xv, verbose=0),
    )


def test_train_accepts_mixing_policies(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    result = training.train(
        tiny_recipe(epochs=1, augmentation="cutmix"), x, y, xv, yv, output_dir=tmp_path, verbose=0
    )
    assert np.isfinite(result.history["loss"][0])


@pytest.mark.slow
def test_two_seeded_runs_give_identical_weights(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    runs = [
        training.train(
            tiny_recipe(augmentation="cutout+mixup"),
            x,
            y,
            xv,
            yv,
            output_dir=tmp_path / str(i),
            seed=7,
            verbose=0,
        )
        for i in range(2)
    ]
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = training.train(
        tiny_recipe(), x, y, xv, yv, output_dir=tmp_path / "other", seed=8, verbose=0
    )
    assert not all(
        np.array_equal(a, b) for a, b in zip(runs[0].model.get_weights(), other.model.get_weights())
    )


def test_train_leaves_the_global_dtype_policy_and_op_determinism_as_it_found_them(
    tmp_path, tiny_data
):
    if keras.backend.backend() == "tensorflow":
        from tensorflow.python.framework.config import (
            disable_op_determinism,
            enable_op_determinism,
            is_op_determinism_enabled,
        )
    else:  # only TensorFlow has the switch: the policy part is checked alone
        disable_op_determinism = enable_op_determinism = lambda: None  # noqa: E731
        is_op_determinism_enabled = lambda: False  # noqa: E731

    x, y, xv, yv = tiny_data
    before = is_op_determinism_enabled()
    # Off before train(), so that a train() that left it on is caught (an earlier test may
    # have turned it on for the rest of the process).
    disable_op_determinism()
    determinism = False
    try:
        # setup_devices itself sets the global policy; train() must put back what was set
        # right before it
        setup = device.setup_devices(mixed_precision="mixed_bfloat16", verbose=False)
        keras.config.set_dtype_policy("mixed_float16")
        result = training.train(
            tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path / "a", setup=setup, verbose=0
        )
        assert result.model.dtype_policy.name == "mixed_bfloat16"  # built under the setup's policy
        assert keras.config.dtype_policy().name == "mixed_float16"
        assert is_op_determinism_enabled() == determinism
        keras.config.set_dtype_policy("bfloat16")
        result = training.train(
            tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path / "b", verbose=0
        )
        # The machine's own setup: float32, or mixed_bfloat16 on a CPU with bfloat16 instructions.
        assert result.model.dtype_policy.name == device.mixed_precision_policy()
        assert keras.config.dtype_policy().name == "bfloat16"
        assert is_op_determinism_enabled() == determinism
    finally:
        keras.config.set_dtype_policy("float32")
        (enable_op_determinism if before else disable_op_determinism)()


def test_compile_model_takes_an_optimiser_and_says_what_it_received():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="received Recipe"):
        compiling.compile_model(model, recipes.get_recipe("fast"))
    with pytest.raises(ValueError, match="received str"):
        compiling.compile_model(model, "sgd")
    compiled = compiling.compile_model(
        model, compiling.make_optimizer("sgd", 0.1), label_smoothing=0.2
    )
    assert compiled.loss.get_config()["label_smoothing"] == 0.2


def test_build_recipe_model_sets_the_whitening_filters_from_the_asked_images(tiny_data):
    x = tiny_data[0]
    recipe = recipes.get_recipe(
        "fast", model_kwargs={"widths": [8, 16, 16]}, whitening_images=len(x)
    )
    built = compiling.build_recipe_model(recipe, x, seed=3)
    # all of x, in whatever order: the same patch covariance as whitening from x itself
    expected = models.build_fast_net(widths=(8, 16, 16), bias_scale=8, whitening_sample=x)
    whiten = built.get_layer("whiten").get_weights()[0]
    np.testing.assert_allclose(
        whiten, expected.get_layer("whiten").get_weights()[0], rtol=1e-3, atol=1e-4
    )
    unwhitened = compiling.build_recipe_model(
        recipes.get_recipe("fast", whitening_images=0, model_kwargs={"widths": [8, 16, 16]}), x
    )
    assert not np.allclose(unwhitened.get_layer("whiten").get_weights()[0], whiten, atol=1e-3)


def test_train_refuses_bad_inputs(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    with pytest.raises(ValueError, match="received 64 and 0"):
        training.train(tiny_recipe(), x, y, xv[:0], yv[:0], output_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown recipe"):
        training.train("nope", x, y, xv, yv, output_dir=tmp_path)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import keras, numpy as np
    from cifar_utils import recipes, training

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"EPOCH_END {epoch}", flush=True)
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.05)  # long enough epochs to be killed in the middle of one

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    y = np.arange(256) % 10
    recipe = recipes.get_recipe(
        "baseline_cnn", arch="baseline_cnn", epochs=5, batch_size=16, augmentation="standard",
        model_kwargs={"filters": [8, 16], "dense_units": 16})
    result = training.train(recipe, x, y, x[:32], y[:32], output_dir=sys.argv[1], seed=0,
                            verbose=0, callbacks=[Progress()])
    print("DONE", result.history["epoch"], flush=True)
    """
)


@pytest.mark.slow
def test_killed_run_resumes_without_losing_epochs(tmp_path):
    script = tmp_path / "train_tiny.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [sys.executable, str(script), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    seen = []
    for line in first.stdout:
        seen.append(line.strip())
        if line.startswith("EPOCH_END 1"):
            break
    time.sleep(0.4)  # into the third epoch
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert seen[-2:] == ["EPOCH_END 0", "EPOCH_END 1"]
    assert [int(r.split(",")[0]) for r in (out / "history.csv").read_text().splitlines()[1:]] == [
        0,
        1,
    ]

    second = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    lines = second.stdout.split("\n")
    assert [ln for ln in lines if ln.startswith("EPOCH_END")] == [
        f"EPOCH_END {i}" for i in (2, 3, 4)
    ]
    assert "DONE [0, 1, 2, 3, 4]" in second.stdout
    saved = json.loads((out / "history.json").read_text())
    assert saved["history"]["epoch"] == [0, 1, 2, 3, 4]
    assert not (out / "backup").exists()


def test_ship_model_writes_model_and_card(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    result = training.train(
        tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path / "run", verbose=0
    )
    target = shipping.ship_model(
        result.model,
        tmp_path / "models",
        xv,
        yv,
        "offline copy",
        "cifar-train --recipe baseline_cnn",
        run_dir=tmp_path / "run",
    )
    assert target == tmp_path / "models" / "baseline_cnn.keras"
    card = (tmp_path / "models" / "MODEL_CARD.md").read_text()
    for needed in (
        "test accuracy (offline copy)",
        "cifar-train --recipe baseline_cnn",
        "seed | 0",
        {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}[keras.backend.backend()],
        "training time",
        '"arch": "baseline_cnn"',
    ):
        assert needed in card, needed
    loaded = keras.saving.load_model(target, safe_mode=True)
    # The shipped file is the float32 copy (the run may have trained in mixed_bfloat16 on this CPU).
    assert models.computes_in_float32(loaded)
    np.testing.assert_array_equal(
        loaded.predict(xv, verbose=0), models.float32_copy(result.model).predict(xv, verbose=0)
    )
    np.testing.assert_allclose(
        loaded.predict(xv, verbose=0), result.model.predict(xv, verbose=0), atol=0.02
    )
    # Not given the validation images, the model ships as trained.
    assert (
        "| temperature | none: the probabilities are as trained |" in card
        and evaluation.temperature_of(loaded) == 1.0
    )


def test_ship_model_calibrates_on_the_validation_images(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    result = training.train(
        tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path / "run", verbose=0
    )
    x_val, y_val, x_test, y_test = xv[: len(xv) // 2], yv[: len(yv) // 2], xv, yv
    target = shipping.ship_model(
        result.model,
        tmp_path / "models",
        x_test,
        y_test,
        "offline copy",
        "c",
        run_dir=tmp_path / "run",
        x_val=x_val,
        y_val=y_val,
    )
    loaded = keras.saving.load_model(target, safe_mode=True, custom_objects=CUSTOM_OBJECTS)
    as_trained = models.float32_copy(result.model)
    # The temperature the validation images give, fitted on one view per image as served.
    expected = evaluation.fit_temperature(as_trained.predict(x_val, verbose=0), y_val)
    assert evaluation.temperature_of(loaded) == pytest.approx(expected, rel=1e-4)
    assert expected != pytest.approx(1.0)  # a temperature that does something
    np.testing.assert_allclose(
        loaded.predict(x_test, verbose=0),
        evaluation.apply_temperature(as_trained.predict(x_test, verbose=0), expected),
        atol=1e-5,
    )
    card = (tmp_path / "models" / "MODEL_CARD.md").read_text()
    assert f"| temperature | {expected:.3f}, fitted on the {len(x_val)} validation images" in card
    assert "chose nothing but the temperature" in card


def test_load_or_train_never_leaves_a_notebook_without_a_model(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "SHIPPED_MODEL", tmp_path / "models" / "fast_net.keras")
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match="no trained model"):
        shipping.load_or_train(runs_dir=runs)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
    y = np.arange(200) % 10
    model, source = shipping.load_or_train(runs_dir=runs, x_train=x, y_train=y, num_images=100)
    assert "trained a small fast_net on 100 images" in source and model.output_shape == (None, 10)
    assert (runs / "fast" / "best.keras").exists()
    again, source = shipping.load_or_train(runs_dir=runs)  # now notebook 04's place has one
    assert "notebook 04" in source and again.count_params() == model.count_params()
    given, source = shipping.load_or_train(model_path=runs / "fast" / "best.keras")
    assert source.startswith("given as")


def test_fine_tune_continues_from_trained_weights(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    result = training.train(tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path, verbose=0)
    before = [w.copy() for w in result.model.get_weights()]
    history = training.fine_tune(
        result.model, x, y, xv, yv, learning_rate=1e-3, epochs=2, batch_size=16, verbose=0
    )
    assert len(history["val_accuracy"]) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(before, result.model.get_weights()))
    with pytest.raises(ValueError, match="received -1 and 2"):
        training.fine_tune(result.model, x, y, xv, yv, learning_rate=-1, epochs=2)


def test_fine_tune_rate_falls_to_zero_unless_asked_not_to(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    model = training.train(
        tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path, verbose=0
    ).model
    training.fine_tune(model, x, y, xv, yv, learning_rate=0.01, epochs=2, batch_size=16, verbose=0)
    schedule = keras.saving.deserialize_keras_object(model.optimizer.get_config()["learning_rate"])
    steps = 2 * math.ceil(len(x) / 16)
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(steps)) == pytest.approx(
        0.0
    )
    assert int(model.optimizer.iterations) == steps
    training.fine_tune(
        model,
        x,
        y,
        xv,
        yv,
        learning_rate=0.01,
        epochs=1,
        batch_size=16,
        decay_to_zero=False,
        verbose=0,
    )
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_shipped_model_leaves_the_optimiser_behind(tmp_path, tiny_data):
    import zipfile

    x, y, xv, yv = tiny_data
    result = training.train(
        tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path / "run", verbose=0
    )
    target = shipping.ship_model(
        result.model, tmp_path / "models", xv, yv, "offline copy", "c", run_dir=tmp_path / "run"
    )
    with zipfile.ZipFile(target) as z:
        import io

        import h5py

        weights = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
        assert "optimizer" not in weights
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- learning-rate finder ---------------------------------------------------------------


def _colour_problem(n=640, seed=0):
    """Images whose class is their colour, plus noise: easy, so rates alone decide the pace."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    colours = rng.integers(40, 216, (10, 3))
    x = colours[y][:, None, None, :] + rng.normal(0, 40, (n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def _tiny_cnn():
    from cifar_utils import models

    keras.utils.set_random_seed(0)
    return models.build_baseline_cnn(filters=(8, 16), dense_units=16, dropout=0.0)


@pytest.mark.slow
def test_lr_find_suggests_the_rate_that_trains_fastest():
    from cifar_utils import data, plots

    x, y = _colour_problem()
    model = _tiny_cnn()
    before = [w.copy() for w in model.get_weights()]
    result = lr_finder.lr_find(model, x, y, start_lr=1e-4, end_lr=10.0, steps=80, batch_size=64)
    for a, b in zip(before, model.get_weights()):  # the weights are put back
        np.testing.assert_array_equal(a, b)
    n = len(result.losses)
    assert 10 <= n <= 80 and len(result.learning_rates) == len(result.smoothed) == n
    ratios = result.learning_rates[1:] / result.learning_rates[:-1]
    np.testing.assert_allclose(ratios, ratios[0])  # exponential growth
    assert 1e-4 <= result.suggestion <= 10.0

    # Independently: the rate of a half-decade grid that lowers the loss most in 20 steps.
    stream = data.endless_batches(
        data.make_dataset(x, y, batch_size=64, shuffle=True, seed=0, num_classes=10)
    )
    batches = [next(stream) for _ in range(20)]
    grid = 10.0 ** np.arange(-4, 1.01, 0.5)
    final = []
    for rate in grid:
        candidate = _tiny_cnn()
        candidate.compile(
            keras.optimizers.SGD(rate, momentum=0.9, nesterov=True),
            keras.losses.CategoricalCrossentropy(),
        )
        for bx, by in batches:
            loss = float(np.asarray(candidate.train_on_batch(bx, by)).reshape(-1)[0])
        final.append(loss if np.isfinite(loss) else np.inf)
    best = grid[int(np.argmin(final))]
    assert abs(np.log10(result.suggestion) - np.log10(best)) <= 1.0, (
        result.suggestion,
        best,
        final,
    )
    plots.plot_lr_find(result)


def test_lr_find_refuses_nonsense():
    x, y = _colour_problem(64)
    with pytest.raises(ValueError, match="start_lr"):
        lr_finder.lr_find(_tiny_cnn(), x, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        lr_finder.lr_find(_tiny_cnn(), x, y, steps=3)


def test_lr_find_stops_when_the_loss_blows_up():
    x, y = _colour_problem(256)
    result = lr_finder.lr_find(
        _tiny_cnn(), x, y, start_lr=1e-2, end_lr=1e8, steps=40, batch_size=64
    )
    assert len(result.losses) < 40  # stopped before the last, absurd rates
    assert np.all(np.isfinite(result.losses)) and np.all(np.isfinite(result.smoothed))
    assert np.isfinite(result.suggestion) and result.suggestion <= result.learning_rates[-1]


# --- issue 13: values that cannot train, and a run that diverges ---------------------------


def test_a_run_whose_loss_becomes_nan_stops_and_says_so(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    with pytest.raises(
        training.TrainingDiverged,
        match="became NaN or infinite in epoch 1.*Lower the learning rate",
    ):
        training.train(
            tiny_recipe(optimizer="sgd", learning_rate=1e30, epochs=3),
            x,
            y,
            xv,
            yv,
            output_dir=tmp_path,
            verbose=0,
        )
    assert not (tmp_path / "final.keras").exists()  # no NaN model written
    assert not any(p.name.startswith("backup") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "epochs must be a whole number >= 1"),
        (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
        (["--data-dir", "/nonexistent/cifar"], "--data-dir /nonexistent/cifar is not a folder"),
        (
            ["--budget-min", "0"],
            "budget_min (minutes) must be a positive finite number; received 0.0",
        ),
        (
            ["--budget-min", "inf"],
            "budget_min (minutes) must be a positive finite number; received inf",
        ),
        (["--budget-min", "5", "--epochs", "3"], "pass --epochs or --budget-min, not both"),
        (["--seed", "-1"], "--seed must be a whole number from 0 to 4294967295; received -1"),
        (["--seed", str(2**40)], "--seed must be a whole number from 0 to 4294967295"),
        (["--output-dir", "/proc/cifar-run"], "cannot write the run into /proc/cifar-run"),
    ],
)
def test_cifar_train_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.train_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        message in err
        and "Traceback" not in err
        and err.strip().splitlines()[-1].startswith("cifar-train: error:")
    )


def test_temporaries_left_by_a_killed_save_are_removed_on_the_next_run(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    stale = [
        tmp_path / ".best.k3j_x9a2.keras",
        tmp_path / ".history.p0q8zz1m.tmp",
        tmp_path / ".final.abcdefgh.keras",
    ]
    for path in stale:
        path.write_bytes(b"")  # what a kill between write and rename leaves
    keep = [tmp_path / ".notes.txt", tmp_path / ".best.keras.bak", tmp_path / "mine.tmp"]
    for path in keep:
        path.write_bytes(b"x")
    training.train(tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path, verbose=0)
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in keep)
    assert not [
        p.name
        for p in tmp_path.iterdir()
        if p.name.startswith((".best.", ".final.", ".history.")) and p not in keep
    ]


# --- issue 15: airbench's recipe pieces, timed runs, budgets ----------------------------------


def test_airbench_augmentation_and_lookahead_train_whole_epochs(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    recipe = recipes.get_recipe(
        "fast",
        epochs=2,
        batch_size=16,
        augmentation="airbench",
        lookahead_steps=2,
        tta="multicrop",
        whitening_images=32,
        model_kwargs={"widths": [8, 8, 8], "init": "pytorch", "dirac": True},
    )
    result = training.train(recipe, x, y, xv, yv, output_dir=tmp_path, verbose=0)
    assert len(result.history["loss"]) == 2 and len(result.history["val_accuracy"]) == 2
    # fit was told the endless stream's epoch length: 64 images / 16 = 4 steps, not forever
    assert result.run["epochs"] == 2 and (tmp_path / "final.keras").exists()


def test_the_fast_recipe_can_augment_inside_the_model(tiny_data, tmp_path):
    """As on a GPU under JAX or PyTorch: the shifts and flips in the model, compiled with
    the step, beside lookahead and the whitening bias; plain shuffled batches in."""
    x, y, xv, yv = tiny_data
    recipe = recipes.get_recipe(
        "fast",
        epochs=2,
        batch_size=16,
        lookahead_steps=2,
        whitening_images=32,
        model_kwargs={"widths": [8, 8, 8]},
    )
    setup = device.setup_devices(mixed_precision=False, augment_in_model=True, verbose=False)
    assert setup.augment_in_model
    result = training.train(recipe, x, y, xv, yv, output_dir=tmp_path, verbose=0, setup=setup)
    assert isinstance(result.model.layers[1], ShiftFlip)  # right after the input
    assert result.run["augmentation_in_model"] and len(result.history["loss"]) == 2
    loaded = storage.load_model(result.final_model_path)
    np.testing.assert_allclose(
        loaded.predict(xv, verbose=0), result.model.predict(xv, verbose=0), atol=1e-5
    )
    # Elsewhere (the default on a CPU and on TensorFlow) the pipeline augments.
    auto = device.setup_devices(mixed_precision=False, verbose=False)
    assert not auto.augment_in_model
    with pytest.raises(ValueError, match="augment_in_model must be 'auto', True or False"):
        device.setup_devices(augment_in_model="yes", verbose=False)


def test_the_whitening_bias_learns_for_its_epochs_then_stays(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    recipe = recipes.get_recipe(
        "fast",
        epochs=3,
        batch_size=16,
        lookahead_steps=0,
        whitening_images=32,
        whitening_bias_epochs=1,
        decay_biases=True,
        model_kwargs={"widths": [8, 8, 8]},
    )
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.get_layer("whiten_bias").bias.numpy().copy())

    result = training.train(
        recipe, x, y, xv, yv, output_dir=tmp_path, verbose=0, callbacks=[Watch()]
    )
    assert np.abs(seen[0]).max() > 0  # learned in the first epoch (it starts at zero)
    np.testing.assert_array_equal(seen[0], seen[1])  # then frozen: no decay, no momentum
    np.testing.assert_array_equal(seen[1], seen[2])
    # trainable again after fit, so the saved optimiser state matches on loading (no warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = keras.saving.load_model(result.final_model_path, safe_mode=True)
    assert loaded.get_layer("whiten_bias").trainable
    np.testing.assert_array_equal(loaded.get_layer("whiten_bias").bias.numpy(), seen[2])


def test_a_timed_run_skips_validation_and_checkpoints(tiny_data, tmp_path):
    x, y, _, _ = tiny_data
    result = training.train(
        tiny_recipe(epochs=2), x, y, None, None, output_dir=tmp_path, verbose=0, checkpoints=False
    )
    assert (tmp_path / "final.keras").exists() and not (tmp_path / "best.keras").exists()
    assert "val_accuracy" not in result.history and len(result.history["loss"]) == 2
    assert result.run["val_images"] == 0
    with pytest.raises(ValueError, match="both x_val and y_val, or neither"):
        training.train(tiny_recipe(), x, y, None, y[:4], output_dir=tmp_path / "b", verbose=0)
    with pytest.raises(ValueError, match="early_stopping_patience needs validation images"):
        training.train(
            tiny_recipe(),
            x,
            y,
            None,
            None,
            output_dir=tmp_path / "c",
            verbose=0,
            early_stopping_patience=2,
        )
    with pytest.raises(ValueError, match="budget_min .minutes. must be a positive finite number"):
        training.train(
            tiny_recipe(), x, y, None, None, output_dir=tmp_path / "d", verbose=0, budget_min=0
        )


@pytest.mark.slow
def test_a_budget_chooses_the_epochs_and_ends_inside_it(tiny_data, tmp_path, capsys):
    x, y, xv, yv = tiny_data
    x, y = np.concatenate([x] * 4), np.concatenate([y] * 4)  # 256 images: 16 steps of 16 an epoch
    start = time.perf_counter()
    result = training.train(
        tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path, verbose=1, budget_min=0.5
    )
    seconds = time.perf_counter() - start
    budget = result.run["budget"]
    assert budget["minutes"] == 0.5 and "model" in budget["seconds_per_step"]
    # The plan, not the recipe's 1 epoch; on a machine busier than when it measured, the
    # TimeBudget callback may end the run before the planned epochs.
    assert result.recipe.epochs >= len(result.history["loss"]) > 1
    assert result.recipe.epochs * 16 * budget["seconds_per_step"]["model"] < 30
    assert seconds < 30 + 15  # inside the budget, give or take saving final.keras on a busy machine
    assert "budget 0.5 min:" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.realdata
def test_cifar_train_in_a_busy_folder_is_one_line_and_exit_2(tmp_path):
    """Issue 23, item 5: the second run refuses at once, naming the holder."""
    if not os.environ.get("CIFAR10_DIR"):
        pytest.skip("needs CIFAR10_DIR")
    from cifar_utils.runs import RunFolder

    with RunFolder(tmp_path / "run"):  # this test process holds the folder
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "cifar_utils.cli",
                "--epochs",
                "1",
                "--output-dir",
                str(tmp_path / "run"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "CIFAR_TF_LOGS": "0"},
        )
    from cifar_utils.tf_logs import is_noise

    cpp_log = re.compile(r"^(?:\d{4}-\d\d-\d\d [\d:.]+: [IWEF] |[IWEF]\d{4} [\d:.]+ )")
    lines = [ln for ln in proc.stderr.splitlines() if not is_noise(ln) and not cpp_log.match(ln)]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "is in use by another training run (pid" in lines[0], lines


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("CIFAR_OUTPUT_DIR", "a file", "cannot write the run into"),
        ("TF_CONFIG", "{not json", "TF_CONFIG must be a JSON object"),
    ],
)
def test_cifar_train_bad_environment_is_one_line_and_exit_2(
    variable, value, message, tmp_path, monkeypatch, capsys
):
    """Issue 23, item 11: these were tracebacks."""
    if value == "a file":
        value = str(tmp_path / "runs")
        (tmp_path / "runs").write_text("not a folder")
    monkeypatch.setenv(variable, value)
    policy = keras.config.dtype_policy().name
    with pytest.raises(SystemExit) as info:
        cli.train_main(["--epochs", "1"])
    assert info.value.code == 2
    assert keras.config.dtype_policy().name == policy  # refused before anything changed
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("cifar-train: error:")
