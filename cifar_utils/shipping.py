"""The course's trained model: ship a run's model with a card, and find one for the notebooks.

    target = shipping.ship_model(result.model, "models", x_test, y_test, "offline copy",
                                 command="cifar-train --recipe fast --ship models",
                                 run_dir=result.output_dir)
    model, source = shipping.load_or_train(runs_dir="runs")   # notebooks 05 and 07

`ship_model` is what `cifar-train --ship` and `benchmarks/time_to_accuracy.py --ship` do.
"""

from __future__ import annotations

import json
from pathlib import Path

from cifar_utils import data, evaluation, paths, reports, storage
from cifar_utils.models import float32_copy
from cifar_utils.recipes import get_recipe
from cifar_utils.training import train


def ship_model(
    model,
    output_dir,
    x_test,
    y_test,
    data_variant,
    command,
    run_dir=None,
    saved=None,
    x_val=None,
    y_val=None,
):
    """Copies a trained model into `output_dir` as `ARCH.keras`, with a model card.

    The test set is used here once, after training, for the card's accuracies (with and
    without flip TTA). On the offline copy, the card also gets the accuracy on the first
    1,000 official test images, lossless (`data.load_lossless_test_sample`), when that file
    is there and `y_test` is the whole test set.

    Args:
        model: the trained model.
        output_dir: where the model and MODEL_CARD.md go, e.g. "models".
        x_test: the test images.
        y_test: the test labels.
        data_variant: `DataSource.variant` of the data: "offline copy" or "official".
        command: the command that reproduces the model.
        run_dir: the training run's folder, whose history.json describes the run.
        saved: that history.json's contents ({"run": ..., "recipe": ...}) instead of `run_dir`.
        x_val: the run's validation images, never trained on. Given, a temperature is fitted
            on them (`evaluation.fit_temperature`) and shipped inside the model, so that
            `Classifier`, `cifar-predict` and the web demo show calibrated confidences.
            Defaults to None: a model trained on every image ships as trained, since a
            temperature fitted on its own training images would make it overconfident.
        y_val: their labels.

    Returns:
        The shipped model's path.
    """
    if (x_val is None) != (y_val is None):
        raise ValueError("ship_model needs both x_val and y_val, or neither.")
    if saved is None:
        saved = json.loads((Path(run_dir) / "history.json").read_text())
    target = Path(output_dir) / f"{saved['recipe']['arch']}.keras"
    # An uncompiled float32 copy: the optimiser's state (as large as the weights) is not
    # shipped, and a model trained under mixed precision on a GPU runs fast on a CPU too.
    # A model that already carries a temperature ships (or is refitted) as trained.
    shipped = evaluation.without_temperature(float32_copy(model))
    calibration = None
    if x_val is not None:
        # One view per image, as Classifier serves it (no TTA); the test set stays unseen.
        as_trained = shipped
        temperature = evaluation.fit_temperature(evaluation.predict_probs(shipped, x_val), y_val)
        shipped = evaluation.with_temperature(shipped, temperature)
    storage.atomic_save_model(shipped, target)
    # The file's own accuracy, computed outside any distribution strategy (across machines,
    # only the first worker ships, and a prediction under the strategy would wait for the rest).
    accuracies = [evaluation.accuracy(shipped, x_test, y_test, tta=tta) for tta in (False, True)]
    lossless = None
    if data_variant == data.OFFLINE_COPY:  # the official set holds these images already
        try:
            x_lossless = data.load_lossless_test_sample()
        except data.CIFAR10DataError as err:
            print(f"no lossless test sample on the model card: {err}")
        else:
            y_lossless = y_test[: len(x_lossless)]  # the first 1,000 test images, in order
            if len(y_lossless) == len(x_lossless):
                lossless = [
                    evaluation.accuracy(shipped, x_lossless, y_lossless, tta=tta)
                    for tta in (False, True)
                ]
    if x_val is not None:  # the test set's ECE before and after, for the card
        test_probs = evaluation.predict_probs(as_trained, x_test)
        calibration = {
            "temperature": temperature,
            "val_images": len(x_val),
            "test_ece_before": evaluation.calibration(test_probs, y_test)[0],
            "test_ece_after": evaluation.calibration(
                evaluation.apply_temperature(test_probs, temperature), y_test
            )[0],
        }
    reports.write_model_card(
        None,
        target,
        *accuracies,
        data_variant,
        command,
        saved=saved,
        lossless=lossless,
        calibration=calibration,
    )
    return target


def load_or_train(
    model_path=None,
    runs_dir=None,
    x_train=None,
    y_train=None,
    seed=0,
    num_images=2000,
    prefer="shipped",
):
    """A trained model for the later notebooks, which never fail for lack of one.

    Loads `model_path` when given, else `paths.find_trained_model(runs_dir, prefer)`,
    in Keras's safe mode. When there is none, trains a small fast_net (widths 16/32/32,
    2 epochs on `num_images` training images) so the notebook can go on.

    Args:
        model_path: a `.keras` file. Defaults to None: look for one.
        runs_dir: the runs folder. Defaults to None: `paths.runs_dir()`.
        x_train: training images for the fallback. Defaults to None: no fallback.
        y_train: their labels.
        seed: seed of the fallback's subset, split and weights. Defaults to 0.
        num_images: training images for the fallback. Defaults to 2,000.
        prefer: look first for the "shipped" model or the one notebook 04 "trained".
            Defaults to "shipped".

    Returns:
        `(model, description of where it came from)`.
    """
    if model_path is not None:
        path, source = Path(model_path), f"given as {model_path}"
    else:
        path, source = paths.find_trained_model(runs_dir, prefer)
    if path is not None:
        return storage.load_model(path), source
    if x_train is None:
        raise ValueError(f"{source}, and no training images were given to train a small one")
    runs_dir = Path(runs_dir) if runs_dir is not None else paths.runs_dir()
    (x_tr, y_tr), (x_val, y_val) = data.split_train_val(x_train, y_train, 0.1, seed=seed)
    x_tr, y_tr = data.stratified_subset(x_tr, y_tr, num_images, seed=seed)
    recipe = get_recipe(
        "fast", epochs=2, batch_size=128, learning_rate=0.2, model_kwargs={"widths": [16, 32, 32]}
    )
    result = train(recipe, x_tr, y_tr, x_val, y_val, output_dir=runs_dir / "fast", seed=seed)
    where = paths.display_path(runs_dir / "fast")
    return (
        result.model,
        f"{source}: trained a small fast_net on {num_images:,} images instead ({where})",
    )
