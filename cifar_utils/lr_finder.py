"""The learning-rate range test: raise the rate every step and watch the loss.

    finder = lr_finder.lr_find(model, x_train, y_train, batch_size=256)
    plots.plot_lr_find(finder)
    print(finder.suggestion)

Smith (2015), "Cyclical Learning Rates for Training Neural Networks", and fastai's
`lr_find`: a good peak rate for a schedule is where the loss falls fastest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cifar_utils import data
from cifar_utils.compiling import compile_model, make_optimizer


@dataclass
class LRFindResult:
    """What `lr_find` measured.

    Attributes:
        learning_rates: the rate of each step, rising exponentially.
        losses: the training loss of each step's batch.
        smoothed: `losses` smoothed by an exponential moving average (bias-corrected).
        suggestion: the rate where the smoothed loss falls fastest against log(rate):
            a good peak rate to start from.
        min_loss_rate: the rate of the lowest smoothed loss; a tenth of it is the other
            usual pick (fastai's "minimum / 10").
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    min_loss_rate: float


def lr_find(
    model,
    x_train,
    y_train,
    start_lr=1e-5,
    end_lr=10.0,
    steps=200,
    batch_size=128,
    momentum=0.9,
    label_smoothing=0.0,
    smoothing=0.9,
    diverge=4.0,
    seed=0,
):
    """The learning-rate range test: raise the rate every step and watch the loss.

    Trains `model` with SGD for up to `steps` batches while the learning rate
    grows exponentially from `start_lr` to `end_lr` (Smith, 2015; fastai's
    `lr_find`). The loss first barely moves (rate too small), then falls,
    then explodes (rate too large); a good peak rate is where it falls
    fastest. The run stops early once a batch's loss, or the smoothed loss,
    exceeds `diverge` times the lowest smoothed loss. The model's weights are
    restored afterwards, but it is left compiled with this SGD: compile it
    again (`train` does) before training.

        result = lr_finder.lr_find(model, x_train, y_train)
        plots.plot_lr_find(result)

    Args:
        model: a Keras model ending in probabilities, taking raw pixels.
        x_train: uint8 training images (never test images).
        y_train: their labels.
        start_lr: the first step's rate. Defaults to 1e-5.
        end_lr: the last step's rate. Defaults to 10.0.
        steps: batches to try at most. Defaults to 200.
        batch_size: images per batch; use your training batch size, as the
            best rate depends on it. Defaults to 128.
        momentum: SGD momentum (Nesterov). Defaults to 0.9.
        label_smoothing: as in the recipe you will train. Defaults to 0.0.
        smoothing: weight of the past in the loss's moving average.
            Defaults to 0.9.
        diverge: stop once a loss exceeds this many times the lowest
            smoothed loss. Defaults to 4.0.
        seed: seed of the batches' order. Defaults to 0.

    Returns:
        An `LRFindResult`.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(
            f"need 0 < start_lr < end_lr; received start_lr={start_lr}, end_lr={end_lr}."
        )
    if steps < 10:
        raise ValueError(f"steps must be at least 10 to draw a curve; received {steps}.")
    if not 0 <= smoothing < 1 or not diverge > 1:
        raise ValueError(
            f"need 0 <= smoothing < 1 and diverge > 1; received {smoothing} and {diverge}."
        )
    rates = start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))
    compile_model(
        model, make_optimizer("sgd", start_lr, momentum=momentum, nesterov=True), label_smoothing
    )
    batches = data.make_dataset(
        x_train,
        y_train,
        batch_size,
        shuffle=True,
        seed=seed,
        num_classes=data.NUM_CLASSES,
        drop_remainder=len(x_train) >= batch_size,
    )
    weights = model.get_weights()
    try:
        losses, smoothed = _range_test(
            model, data.endless_batches(batches), rates, smoothing, diverge
        )
    finally:
        model.set_weights(weights)
    if not losses:
        raise ValueError(
            f"the loss was not finite at the first rate, start_lr={start_lr}: lower start_lr."
        )
    smoothed = np.asarray(smoothed)
    n, lowest = len(smoothed), int(np.argmin(smoothed))
    return LRFindResult(
        learning_rates=rates[:n],
        losses=np.asarray(losses),
        smoothed=smoothed,
        suggestion=_steepest_fall(rates[:n], smoothed),
        min_loss_rate=float(rates[lowest]),
    )


def _range_test(model, batches, rates, smoothing, diverge):
    """Trains one batch at each rate; (losses, bias-corrected smoothed losses) until divergence."""
    losses, smoothed, average, best = [], [], 0.0, np.inf
    for step, (x, y) in zip(range(len(rates)), batches):
        model.optimizer.learning_rate = float(rates[step])
        loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
        if not np.isfinite(loss):
            break  # diverged all the way: keep the curve finite
        losses.append(loss)
        average = smoothing * average + (1 - smoothing) * loss
        smoothed.append(average / (1 - smoothing ** (step + 1)))
        best = min(best, smoothed[-1])
        if max(loss, smoothed[-1]) > diverge * best:
            break  # diverged: a larger rate only makes it worse
    return losses, smoothed


def _steepest_fall(rates, smoothed) -> float:
    """The rate where the smoothed loss falls fastest against log(rate), before its minimum.

    Measured over a window of steps (single steps are noisy) and past the first tenth of the
    run, where the moving average has not settled yet.
    """
    n, lowest = len(smoothed), int(np.argmin(smoothed))
    skip, window = max(1, n // 10), max(2, n // 20)
    starts = np.arange(skip, lowest - window + 1)
    if not len(starts):  # the loss never fell: the minimum's tenth is all there is to go on
        return float(rates[lowest] / 10)
    log_rates = np.log(rates)
    slopes = (smoothed[starts + window] - smoothed[starts]) / (
        log_rates[starts + window] - log_rates[starts]
    )
    return float(rates[starts[int(np.argmin(slopes))] + window // 2])
