"""Hyperparameter search with KerasTuner, and regularisation ablations.

The search space (`SEARCH_SPACE`) covers the knobs a learner meets first:
learning rate, weight decay, dropout, network width and augmentation
strength, on the baseline CNN. Trials are scored on the validation split;
the test set is not touched here.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from cifar_utils import paths
from cifar_utils.compiling import compile_model, make_optimizer
from cifar_utils.data import NUM_CLASSES, make_dataset
from cifar_utils.evaluation import accuracy
from cifar_utils.models import build_baseline_cnn

# name -> (kind, arguments). Ranges in the units the optimiser and builder take.
SEARCH_SPACE = {
    "learning_rate": ("log", 3e-4, 1e-2),  # AdamW step size
    "weight_decay": ("log", 1e-5, 1e-2),  # decoupled, per step, times the learning rate
    "dropout": ("linear", 0.0, 0.5),  # after each stage and before the output
    "width": ("choice", [16, 32, 48]),  # channels of the first stage; later stages 2x and 4x
    "augmentation": ("choice", ["none", "standard", "cutout"]),  # increasing strength
}


def build_candidate(
    learning_rate=1e-3,
    weight_decay=1e-4,
    dropout=0.3,
    width=32,
    augmentation="standard",
    num_classes=NUM_CLASSES,
    seed=None,
):
    """The baseline CNN with the searched hyperparameters, compiled.

    Augmentation runs inside the model, so each candidate carries its own.

    Args:
        learning_rate: AdamW step size. Defaults to 1e-3.
        weight_decay: decoupled weight decay. Defaults to 1e-4.
        dropout: dropout rate. Defaults to 0.3.
        width: channels of the first stage. Defaults to 32.
        augmentation: a per-image policy name. Defaults to "standard".
        num_classes: number of classes. Defaults to 10.
        seed: seed of the augmentation. Defaults to None.

    Returns:
        A compiled `keras.Model` (one-hot labels, metric "accuracy").
    """
    model = build_baseline_cnn(
        num_classes=num_classes,
        filters=(width, 2 * width, 4 * width),
        dropout=dropout,
        augmentation=None if augmentation == "none" else augmentation,
        seed=seed,
    )
    return _compile_adamw(model, learning_rate, weight_decay)


def _compile_adamw(model, learning_rate, weight_decay):
    """Compiles for one-hot labels with AdamW; biases and batch norm are not decayed."""
    return compile_model(model, make_optimizer("adamw", learning_rate, weight_decay=weight_decay))


def _hyperparameters(hp, space):
    values = {}
    for name, (kind, *args) in space.items():
        if kind == "log":
            values[name] = hp.Float(name, args[0], args[1], sampling="log")
        elif kind == "linear":
            values[name] = hp.Float(name, args[0], args[1])
        elif kind == "choice":
            values[name] = hp.Choice(name, args[0])
        else:
            raise ValueError(f"search space entry {name!r} has unknown kind {kind!r}.")
    return values


def search(
    x_train,
    y_train,
    x_val,
    y_val,
    max_trials=10,
    epochs=5,
    batch_size=128,
    output_dir=None,
    project_name="baseline_cnn",
    seed=0,
    space=None,
    overwrite=True,
):
    """Random search over `SEARCH_SPACE` with KerasTuner, scored on validation accuracy.

    Args:
        x_train: uint8 training images.
        y_train: their labels.
        x_val: uint8 validation images (from the training set).
        y_val: their labels.
        max_trials: the budget: how many settings to try. Defaults to 10.
        epochs: epochs per trial. Defaults to 5.
        batch_size: images per step. Defaults to 128.
        output_dir: where KerasTuner keeps its trials. Defaults to None:
            `paths.runs_dir() / "tuning"`.
        project_name: sub-folder of the search. Defaults to "baseline_cnn".
        seed: seed of the sampled settings and of training. Defaults to 0.
        space: a search space like `SEARCH_SPACE`. Defaults to None (that one).
        overwrite: start afresh instead of resuming an earlier search.
            Defaults to True.

    Returns:
        `(tuner, results)`: the `keras_tuner.RandomSearch` and a pandas
        DataFrame with one row per trial, best first.
    """
    import keras_tuner as kt

    if max_trials < 1 or epochs < 1:
        raise ValueError(f"max_trials and epochs must be >= 1; received {max_trials} and {epochs}.")
    space = space or SEARCH_SPACE
    keras.utils.set_random_seed(seed)

    def hypermodel(hp):
        return build_candidate(**_hyperparameters(hp, space), seed=seed)

    tuner = kt.RandomSearch(
        hypermodel,
        objective=kt.Objective("val_accuracy", direction="max"),
        max_trials=max_trials,
        seed=seed,
        directory=str(Path(output_dir) if output_dir is not None else paths.runs_dir() / "tuning"),
        project_name=project_name,
        overwrite=overwrite,
    )
    train_ds = make_dataset(
        x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed, num_classes=NUM_CLASSES
    )
    val_ds = make_dataset(x_val, y_val, batch_size=batch_size, num_classes=NUM_CLASSES)
    # shuffle=False: the dataset shuffles itself, with the seed (fit's default warns otherwise).
    tuner.search(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False)
    results = results_table(tuner)
    if results.empty:  # KerasTuner records a failing trial and moves on: say why instead
        messages = [getattr(t, "message", None) for t in tuner.oracle.trials.values()]
        detail = next((m for m in messages if m), "no trial finished")
        raise RuntimeError(f"every trial of the search failed; the first error was:\n{detail}")
    return tuner, results


def results_table(tuner):
    """One row per finished trial: its hyperparameters and best validation accuracy, best first."""
    import pandas as pd

    rows = []
    for trial in tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials)):
        if trial.score is None:
            continue
        rows.append(
            {"trial": trial.trial_id, **trial.hyperparameters.values, "val_accuracy": trial.score}
        )
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


ABLATIONS = {
    "full": {},
    "no batch norm": {"batch_norm": False},
    "no dropout": {"dropout": 0.0},
    "no augmentation": {"augmentation": None},
    "no dropout, no augmentation": {"dropout": 0.0, "augmentation": None},
}


def ablation(
    x_train,
    y_train,
    x_val,
    y_val,
    epochs=10,
    batch_size=128,
    learning_rate=1e-3,
    weight_decay=1e-4,
    seed=0,
    variants=None,
):
    """Trains the baseline CNN with regularisers removed, one variant per entry of `variants`.

    The default variants remove one regulariser at a time, and then dropout and
    augmentation together. Overfitting is the gap between accuracy on the images a model
    trained on and on images it never saw. Both are measured the same way here, after training, in
    inference mode (no dropout) on clean images (no augmentation): the accuracy that
    `fit` reports during training is on augmented images with dropout on, and is not
    comparable with the validation accuracy. Regularisers show their effect when the
    model can overfit: train on a small subset for enough epochs.

    Args:
        x_train: uint8 training images.
        y_train: their labels.
        x_val: uint8 validation images.
        y_val: their labels.
        epochs: epochs per variant. Defaults to 10.
        batch_size: images per step. Defaults to 128.
        learning_rate: AdamW step size. Defaults to 1e-3.
        weight_decay: decoupled weight decay. Defaults to 1e-4.
        seed: seed of every variant. Defaults to 0.
        variants: name -> builder arguments changed from the full model.
            Defaults to None: `ABLATIONS`.

    Returns:
        `(table, histories)`: a DataFrame with one row per variant ("train accuracy"
        and "val accuracy" after the last epoch, both clean and in inference mode,
        "gap (train - val)", "best val accuracy" over the epochs, and "fit accuracy"
        as `fit` reported it) and the per-epoch `fit` histories by variant.
    """
    import pandas as pd

    variants = variants or ABLATIONS
    train_ds = make_dataset(
        x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed, num_classes=NUM_CLASSES
    )
    val_ds = make_dataset(x_val, y_val, batch_size=batch_size, num_classes=NUM_CLASSES)
    rows, histories = [], {}
    for name, changes in variants.items():
        keras.utils.set_random_seed(seed)
        kwargs = {"augmentation": "standard", "seed": seed, **changes}
        model = _compile_adamw(build_baseline_cnn(**kwargs), learning_rate, weight_decay)
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False
        ).history
        histories[name] = history
        train_acc = accuracy(model, x_train, y_train)  # clean images, inference mode
        val_acc = accuracy(model, x_val, y_val)
        rows.append(
            {
                "variant": name,
                "train accuracy": train_acc,
                "val accuracy": val_acc,
                "gap (train - val)": train_acc - val_acc,
                "best val accuracy": float(np.max(history["val_accuracy"])),
                "fit accuracy": history["accuracy"][-1],
            }
        )
    return pd.DataFrame(rows).set_index("variant"), histories
