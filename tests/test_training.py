"""cifar_utils.training, recipes and storage: schedules, errors, outputs, determinism,
atomic saves, and resuming a real process killed mid-epoch."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from cifar_utils import recipes, storage, training

TINY = dict(
    arch="baseline_cnn", model_kwargs={"filters": [8, 16], "dense_units": 16},
    batch_size=16, augmentation="standard",
)


def tiny_recipe(**overrides):
    return recipes.get_recipe("baseline_cnn", **{**TINY, "epochs": 2, **overrides})


# --- schedules --------------------------------------------------------------------------


def test_piecewise_linear_values_and_serialisation():
    schedule = training.PiecewiseLinear([0, 10, 30], [0.1, 1.0, 0.0])
    values = [float(schedule(s)) for s in (0, 5, 10, 20, 30, 99)]
    np.testing.assert_allclose(values, [0.1, 0.55, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(again, training.PiecewiseLinear) and float(again(20)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "args, pattern",
    [(([0], [1.0]), "at least 2"), (([0, 0], [1, 1]), "must increase"), (([0, 1], [1, -1]), ">= 0")],
)
def test_piecewise_linear_rejects_nonsense(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        training.PiecewiseLinear(*args)


@pytest.mark.parametrize(
    "schedule, start, peak, end",
    [("one_cycle", 0.01, 0.1, 0.0), ("triangle", 0.02, 0.1, 0.007), ("warmup_cosine", 0.0, 0.1, 0.0)],
)
def test_schedules_start_peak_end(schedule, start, peak, end):
    recipe = recipes.get_recipe("vgg", epochs=10, learning_rate=0.1, schedule=schedule, warmup_fraction=0.2)
    lr = training.make_schedule(recipe, steps_per_epoch=10)
    assert float(lr(0)) == pytest.approx(start, abs=1e-6)
    assert float(lr(20)) == pytest.approx(peak, rel=1e-5)
    assert float(lr(100)) == pytest.approx(end, abs=1e-6)
    assert training.make_schedule(recipes.get_recipe("vgg", schedule="constant"), 10) == 0.05


def test_optimisers_and_weight_decay():
    sgd = training.make_optimizer(recipes.get_recipe("fast"), 10)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.85
    assert sgd.weight_decay == pytest.approx(0.01)
    assert float(sgd.learning_rate) == pytest.approx(0.2 * 0.375)  # triangle starts at 0.2x
    adamw = training.make_optimizer(recipes.get_recipe("baseline_cnn"), 10)
    assert isinstance(adamw, keras.optimizers.AdamW)
    adam = training.make_optimizer(recipes.get_recipe("baseline_cnn", optimizer="adam", weight_decay=0.0), 10)
    assert type(adam) is keras.optimizers.Adam


# --- recipes ----------------------------------------------------------------------------


def test_every_recipe_is_valid_and_builds():
    from cifar_utils.models import BUILDERS

    for name in recipes.RECIPES:
        recipe = recipes.get_recipe(name)
        assert recipe.name == name and recipe.arch in BUILDERS
        json.dumps(recipe.to_dict())


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"learning_rate": -0.1}, "learning_rate must be a positive number; received -0.1"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1; received 0"),
        ({"epochs": 0}, "epochs must be a whole number >= 1; received 0"),
        ({"epochs": 2.5}, "received 2.5"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam, adamw; received 'rmsprop'"),
        ({"schedule": "exp"}, "received 'exp'"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\); received 1.0"),
        ({"label_smoothing": 1.5}, "received 1.5"),
        ({"augmentation": "wobble"}, "Unknown augmentation policy 'wobble'"),
        ({"arch": "alexnet"}, "received 'alexnet'"),
        ({"learning_rat": 0.1}, r"Unknown recipe field\(s\) \['learning_rat'\]"),
    ],
)
def test_nonsense_hyperparameters_are_refused(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        recipes.get_recipe("fast", **overrides)


def test_model_kwargs_overrides_merge_into_the_recipe():
    recipe = recipes.get_recipe("fast", model_kwargs={"widths": [8, 16, 16]})
    assert recipe.model_kwargs == {"bias_scale": 8, "widths": [8, 16, 16]}
    assert recipes.get_recipe("fast", model_kwargs={"bias_scale": 1}).model_kwargs == {"bias_scale": 1}
    assert recipes.RECIPES["fast"]["model_kwargs"] == {"bias_scale": 8}  # left untouched


def test_weight_decay_shrinks_kernels_but_not_scaled_shifts():
    from cifar_utils.models import build_fast_net

    model = build_fast_net(widths=(8, 16, 16), bias_scale=8)
    shift = model.get_layer("group1_shift1").bias
    shift.assign(np.ones(shift.shape, "float32"))
    kernel = model.get_layer("group1_conv1").kernel
    before = keras.ops.convert_to_numpy(kernel).copy()
    optimizer = training.make_optimizer(
        recipes.get_recipe("fast", schedule="constant", momentum=0.0, nesterov=False), 10
    )
    optimizer.apply_gradients([(keras.ops.zeros_like(shift), shift), (keras.ops.zeros_like(kernel), kernel)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(shift), 1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), before * (1 - 0.375 * 0.01), rtol=1e-5)


def test_unknown_recipe():
    with pytest.raises(ValueError, match="Unknown recipe 'turbo'"):
        recipes.get_recipe("turbo")


# --- storage ------------------------------------------------------------------------------


def test_atomic_json_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "h.json"
    storage.atomic_write_json(path, {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2]}
    assert os.listdir(path.parent) == ["h.json"]


def test_interrupted_model_save_keeps_the_old_file(tmp_path, tiny_data):
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
    result = training.train(tiny_recipe(epochs=1, augmentation="cutmix"), x, y, xv, yv,
                            output_dir=tmp_path, verbose=0)
    assert np.isfinite(result.history["loss"][0])


def test_two_seeded_runs_give_identical_weights(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    runs = [
        training.train(tiny_recipe(augmentation="cutout+mixup"), x, y, xv, yv,
                       output_dir=tmp_path / str(i), seed=7, verbose=0)
        for i in range(2)
    ]
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = training.train(tiny_recipe(), x, y, xv, yv, output_dir=tmp_path / "other", seed=8, verbose=0)
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0].model.get_weights(), other.model.get_weights()))


def test_train_refuses_bad_inputs(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    with pytest.raises(ValueError, match="received 64 and 0"):
        training.train(tiny_recipe(), x, y, xv[:0], yv[:0], output_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown recipe"):
        training.train("nope", x, y, xv, yv, output_dir=tmp_path)


def test_atomic_checkpoint_keeps_the_best(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callback = training.AtomicCheckpoint(tmp_path / "best.keras")
    callback.set_model(model)
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    first = (tmp_path / "best.keras").stat().st_mtime_ns
    time.sleep(0.01)
    callback.on_epoch_end(1, {"val_accuracy": 0.4})  # worse: not saved
    assert (tmp_path / "best.keras").stat().st_mtime_ns == first and callback.best == 0.5
    callback.on_epoch_end(2, {"val_accuracy": 0.6})
    assert callback.best == 0.6


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


def test_killed_run_resumes_without_losing_epochs(tmp_path):
    script = tmp_path / "train_tiny.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env)
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
    assert [int(r.split(",")[0]) for r in (out / "history.csv").read_text().splitlines()[1:]] == [0, 1]

    second = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    lines = second.stdout.split("\n")
    assert [ln for ln in lines if ln.startswith("EPOCH_END")] == [f"EPOCH_END {i}" for i in (2, 3, 4)]
    assert "DONE [0, 1, 2, 3, 4]" in second.stdout
    saved = json.loads((out / "history.json").read_text())
    assert saved["history"]["epoch"] == [0, 1, 2, 3, 4]
    assert not (out / "backup").exists()


def test_ship_model_writes_model_and_card(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    result = training.train(tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path / "run", verbose=0)
    target = training.ship_model(result.model, tmp_path / "run", tmp_path / "models", xv, yv,
                                 "offline copy", "cifar-train --recipe baseline_cnn")
    assert target == tmp_path / "models" / "baseline_cnn.keras"
    card = (tmp_path / "models" / "MODEL_CARD.md").read_text()
    for needed in ("test accuracy (offline copy)", "cifar-train --recipe baseline_cnn", "seed | 0",
                   "TensorFlow", "training time", '"arch": "baseline_cnn"'):
        assert needed in card, needed
    loaded = keras.saving.load_model(target, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(xv, verbose=0), result.model.predict(xv, verbose=0))


def test_model_card_snippet_loads_a_scaled_bias_model_in_a_fresh_process(tmp_path):
    from cifar_utils.models import build_fast_net
    from cifar_utils.storage import atomic_save_model

    (tmp_path / "history.json").write_text(json.dumps({
        "recipe": recipes.get_recipe("fast").to_dict(), "history": {"val_accuracy": [0.1]},
        "run": {"train_seconds": 1.0, "cpu": "cpu", "cpu_cores": 2, "gpus": [], "precision": "float32",
                "python": "3", "tensorflow": "2", "keras": "3", "numpy": "2", "seed": 0, "date": "d",
                "train_images": 10, "val_images": 10, "best_val_accuracy": 0.1, "epochs": 1}}))
    model = build_fast_net(widths=(8, 16, 16), bias_scale=8)
    atomic_save_model(model, tmp_path / "fast_net.keras")
    training.write_model_card(tmp_path, tmp_path / "fast_net.keras", 0.1, 0.1, "offline copy", "cmd")
    card = (tmp_path / "MODEL_CARD.md").read_text()
    snippet = card.split("```python\n")[1].split("```")[0]
    code = snippet + "print(sorted({type(l).__name__ for l in model.layers}))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ScaledBias" in out.stdout


def test_find_trained_model_prefers_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "SHIPPED_MODEL", tmp_path / "models" / "fast_net.keras")
    path, why = training.find_trained_model(tmp_path / "runs")
    assert path is None and "no trained model" in why
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fast_net.keras").write_bytes(b"x")
    assert training.find_trained_model(tmp_path / "runs")[0] == tmp_path / "models" / "fast_net.keras"
    (tmp_path / "runs" / "fast").mkdir(parents=True)
    (tmp_path / "runs" / "fast" / "best.keras").write_bytes(b"x")
    path, why = training.find_trained_model(tmp_path / "runs")
    assert path == tmp_path / "runs" / "fast" / "best.keras" and "notebook 04" in why


def test_find_trained_model_from_the_repository_root(tmp_path, monkeypatch):
    """cifar-train writes runs/ below the working directory; the tools look there too."""
    monkeypatch.setattr(training, "SHIPPED_MODEL", tmp_path / "models" / "fast_net.keras")
    monkeypatch.delenv("CIFAR_OUTPUT_DIR", raising=False)
    repo = tmp_path / "repo"
    (repo / "runs" / "fast").mkdir(parents=True)
    (repo / "runs" / "fast" / "best.keras").write_bytes(b"x")
    monkeypatch.chdir(repo)
    path, why = training.find_trained_model()
    assert path == Path("runs") / "fast" / "best.keras" and "cifar-train" in why
    monkeypatch.setenv("CIFAR_OUTPUT_DIR", str(tmp_path / "elsewhere"))  # an explicit folder wins
    path, why = training.find_trained_model()
    assert path is None and str(tmp_path / "elsewhere") in why


def test_load_or_train_never_leaves_a_notebook_without_a_model(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "SHIPPED_MODEL", tmp_path / "models" / "fast_net.keras")
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match="no trained model"):
        training.load_or_train(runs=runs)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
    y = np.arange(200) % 10
    model, source = training.load_or_train(runs=runs, x_train=x, y_train=y, images=100)
    assert "trained a small fast_net on 100 images" in source and model.output_shape == (None, 10)
    assert (runs / "fast" / "best.keras").exists()
    again, source = training.load_or_train(runs=runs)  # now notebook 04's place has one
    assert "notebook 04" in source and again.count_params() == model.count_params()
    given, source = training.load_or_train(model_path=runs / "fast" / "best.keras")
    assert source.startswith("given as")


def test_fine_tune_continues_from_trained_weights(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    result = training.train(tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path, verbose=0)
    before = [w.copy() for w in result.model.get_weights()]
    history = training.fine_tune(result.model, x, y, xv, yv, learning_rate=1e-3, epochs=2,
                                 batch_size=16, verbose=0)
    assert len(history["val_accuracy"]) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(before, result.model.get_weights()))
    with pytest.raises(ValueError, match="received -1 and 2"):
        training.fine_tune(result.model, x, y, xv, yv, learning_rate=-1, epochs=2)


def test_fine_tune_rate_falls_to_zero_unless_asked_not_to(tmp_path, tiny_data):
    x, y, xv, yv = tiny_data
    model = training.train(tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path, verbose=0).model
    training.fine_tune(model, x, y, xv, yv, learning_rate=0.01, epochs=2, batch_size=16, verbose=0)
    schedule = model.optimizer.learning_rate if callable(getattr(model.optimizer, "learning_rate", None)) \
        else model.optimizer._learning_rate
    steps = 2 * -(-len(x) // 16)
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(steps)) == pytest.approx(0.0)
    assert int(model.optimizer.iterations) == steps
    training.fine_tune(model, x, y, xv, yv, learning_rate=0.01, epochs=1, batch_size=16,
                       decay_to_zero=False, verbose=0)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_shipped_model_leaves_the_optimiser_behind(tmp_path, tiny_data):
    import zipfile

    x, y, xv, yv = tiny_data
    result = training.train(tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path / "run", verbose=0)
    target = training.ship_model(result.model, tmp_path / "run", tmp_path / "models", xv, yv, "offline copy", "c")
    with zipfile.ZipFile(target) as z:
        import h5py, io

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


def test_lr_find_suggests_the_rate_that_trains_fastest():
    from cifar_utils import data, plots

    x, y = _colour_problem()
    model = _tiny_cnn()
    before = [w.copy() for w in model.get_weights()]
    result = training.lr_find(model, x, y, start_lr=1e-4, end_lr=10.0, steps=80, batch_size=64)
    for a, b in zip(before, model.get_weights()):  # the weights are put back
        np.testing.assert_array_equal(a, b)
    n = len(result.losses)
    assert 10 <= n <= 80 and len(result.learning_rates) == len(result.smoothed) == n
    ratios = result.learning_rates[1:] / result.learning_rates[:-1]
    np.testing.assert_allclose(ratios, ratios[0])  # exponential growth
    assert 1e-4 <= result.suggestion <= 10.0

    # Independently: the rate of a half-decade grid that lowers the loss most in 20 steps.
    ds = data.make_dataset(x, y, batch_size=64, shuffle=True, seed=0, num_classes=10).repeat()
    batches = list(ds.take(20))
    grid = 10.0 ** np.arange(-4, 1.01, 0.5)
    final = []
    for rate in grid:
        candidate = _tiny_cnn()
        candidate.compile(keras.optimizers.SGD(rate, momentum=0.9, nesterov=True),
                          keras.losses.CategoricalCrossentropy())
        for bx, by in batches:
            loss = float(np.asarray(candidate.train_on_batch(bx, by)).reshape(-1)[0])
        final.append(loss if np.isfinite(loss) else np.inf)
    best = grid[int(np.argmin(final))]
    assert abs(np.log10(result.suggestion) - np.log10(best)) <= 1.0, (result.suggestion, best, final)
    plots.plot_lr_find(result)


def test_lr_find_refuses_nonsense():
    x, y = _colour_problem(64)
    with pytest.raises(ValueError, match="start_lr"):
        training.lr_find(_tiny_cnn(), x, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        training.lr_find(_tiny_cnn(), x, y, steps=3)


def test_lr_find_stops_when_the_loss_blows_up():
    x, y = _colour_problem(256)
    result = training.lr_find(_tiny_cnn(), x, y, start_lr=1e-2, end_lr=1e8, steps=40, batch_size=64)
    assert len(result.losses) < 40  # stopped before the last, absurd rates
    assert np.all(np.isfinite(result.losses)) and np.all(np.isfinite(result.smoothed))
    assert np.isfinite(result.suggestion) and result.suggestion <= result.learning_rates[-1]


def test_time_budget_stops_fit_and_records_accuracy_against_time():
    import time as _time

    import keras
    import numpy as np

    from cifar_utils.training import TimeBudget

    class Slow(keras.callbacks.Callback):  # each training step costs 50 ms, each validation batch 100 ms
        def on_train_batch_end(self, batch, logs=None):
            _time.sleep(0.05)

        def on_test_batch_end(self, batch, logs=None):
            _time.sleep(0.1)

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    # Trace the train and test steps first: the first step of a fresh model also builds the
    # graph (1.5 s on a busy CI machine), which would overshoot any short budget.
    model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), validation_batch_size=8, verbose=0)
    budget = TimeBudget(0.5)
    start = _time.perf_counter()
    history = model.fit(x, y, batch_size=8, epochs=100, validation_data=(x, y), validation_batch_size=8,
                        callbacks=[Slow(), budget], verbose=0)
    wall = _time.perf_counter() - start
    epochs_run = len(history.history["loss"])
    assert 1 <= epochs_run < 100  # stopped by the budget, not by the epoch count
    # the step that crosses 0.5 s finishes, then training stops; every step that ran was counted
    facts = f"used {budget.used:.3f} s, steps {budget.steps}, epochs {epochs_run}, wall {wall:.3f} s"
    assert 0.5 <= budget.used < 0.5 + 0.3, facts
    assert 8 * (epochs_run - 1) < budget.steps <= 8 * epochs_run, facts
    # validation (8 batches x 100 ms per epoch) is not billed to the training budget
    assert wall - budget.used >= 0.75 * epochs_run, facts
    assert len(budget.seconds_at_epoch_end) == len(budget.val_accuracy) == epochs_run
    assert budget.seconds_at_epoch_end == sorted(budget.seconds_at_epoch_end)
    assert all(0.0 <= a <= 1.0 for a in budget.val_accuracy)
    with pytest.raises(ValueError, match="received 0"):
        TimeBudget(0)


# --- issue 13: values that cannot train, and a run that diverges ---------------------------


@pytest.mark.parametrize("field", ["learning_rate", "weight_decay", "momentum", "label_smoothing"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), True])
def test_recipes_require_finite_numbers(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a finite number"):
        recipes.get_recipe("baseline_cnn", **{field: value})


def test_model_kwargs_unknown_to_the_builder_name_its_arguments():
    with pytest.raises(ValueError, match=r"\['widht'\] are not arguments of build_fast_net; it takes .*widths"):
        recipes.get_recipe("fast", model_kwargs={"widht": [8, 8, 8]})


def test_a_run_whose_loss_becomes_nan_stops_and_says_so(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    with pytest.raises(training.TrainingDiverged, match="became NaN or infinite in epoch 1.*Lower the learning rate"):
        training.train(tiny_recipe(optimizer="sgd", learning_rate=1e30, epochs=3), x, y, xv, yv,
                       output_dir=tmp_path, verbose=0)
    assert not (tmp_path / "final.keras").exists()  # no NaN model written
    assert not any(p.name.startswith("backup") for p in tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
    (["--data-dir", "/nonexistent/cifar"], "--data-dir /nonexistent/cifar is not a folder"),
])
def test_cifar_train_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        training.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.strip().splitlines()[-1].startswith("cifar-train: error:")


def test_temporaries_left_by_a_killed_save_are_removed_on_the_next_run(tiny_data, tmp_path):
    x, y, xv, yv = tiny_data
    stale = [tmp_path / ".best.k3j_x9a2.keras", tmp_path / ".history.p0q8zz1m.tmp",
             tmp_path / ".final.abcdefgh.keras"]
    for path in stale:
        path.write_bytes(b"")  # what a kill between write and rename leaves
    keep = [tmp_path / ".notes.txt", tmp_path / ".best.keras.bak", tmp_path / "mine.tmp"]
    for path in keep:
        path.write_bytes(b"x")
    training.train(tiny_recipe(epochs=1), x, y, xv, yv, output_dir=tmp_path, verbose=0)
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in keep)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".best.", ".final.", ".history."))
                and p not in keep]
