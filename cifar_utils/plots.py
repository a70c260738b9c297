"""Figures for exploring CIFAR-10.

Every function returns the matplotlib `Figure`, so a notebook shows it and a
script can save it; pass `save_to="figures/name.png"` to write it as well.
"""

from __future__ import annotations

from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from cifar_utils.augment import pipeline_augment
from cifar_utils.data import CLASS_NAMES, class_counts


def save_figure(fig, path) -> Path:
    """Writes a figure as PNG (150 dpi, tight box), creating its folder.

    Args:
        fig: the matplotlib Figure.
        path: file path; its folder is created when missing.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def _finish(fig, save_to):
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


def _check_images(x):
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (N, height, width, 1 or 3); received {x.shape}.")
    return x


def plot_samples_by_class(x, y, class_names=CLASS_NAMES, per_class=8, seed=0, save_to=None):
    """Draws a grid with one row of random examples per class.

    Args:
        x: uint8 images, shape `(N, H, W, 3)`.
        y: labels, shape `(N,)` or `(N, 1)`.
        class_names: names in label order. Defaults to `CLASS_NAMES`.
        per_class: images per row. Defaults to 8.
        seed: which images are drawn. Defaults to 0.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    x = _check_images(x)
    y = np.ravel(y)
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1; received {per_class}.")
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(class_names),
        per_class,
        figsize=(per_class * 1.1, len(class_names) * 1.15),
        squeeze=False,
    )
    for row, name in enumerate(class_names):
        members = np.flatnonzero(y == row)
        picks = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(picks):
                ax.imshow(x[picks[col]], interpolation="nearest")
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle("Random training images, one row per class", y=1.0)
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_class_distribution(
    labels_by_split, class_names=CLASS_NAMES, title="Images per class", save_to=None
):
    """Draws images per class as grouped bars, one colour per split.

    Args:
        labels_by_split: a mapping of split name to labels, e.g.
            `{"train": y_train, "val": y_val, "test": y_test}`, or one label array.
        class_names: names in label order. Defaults to `CLASS_NAMES`.
        title: the figure's title. Defaults to "Images per class".
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    import seaborn as sns

    if not isinstance(labels_by_split, dict):
        labels_by_split = {"all": labels_by_split}
    counts = class_counts(labels_by_split, class_names)
    long = counts.reset_index().melt(id_vars="class", var_name="split", value_name="count")
    fig, ax = plt.subplots(figsize=(10, 4))
    sns.barplot(data=long, x="class", y="count", hue="split", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="{:,.0f}", fontsize=7, padding=1)
    ax.set_title(title)
    ax.set_xlabel("")
    ax.set_ylabel("images")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # off the bars
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_channel_histograms(x, bins=64, save_to=None):
    """Draws the distribution of pixel values of each colour channel.

    Args:
        x: uint8 images, shape `(N, H, W, 3)`.
        bins: histogram bins over 0..255. Defaults to 64.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    x = _check_images(x)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    edges = np.linspace(0, 256, bins + 1)
    for channel, colour in zip(range(x.shape[-1]), ("red", "green", "blue")):
        # np.histogram on each channel's values; uint8 in, no float copy of all images.
        counts, _ = np.histogram(x[..., channel], bins=edges)
        share = counts / counts.sum()
        ax.stairs(share, edges, color=colour, label=colour, linewidth=1.5)
    ax.set_xlabel("pixel value")
    ax.set_ylabel(f"share of pixels per bin ({bins} bins of {256 / bins:g} values)")
    ax.set_xlim(0, 256)
    ax.legend()
    ax.set_title("Pixel values per colour channel")
    fig.tight_layout()
    return _finish(fig, save_to)


def show_images(images, titles=None, ncols=4, size=2.5, save_to=None):
    """Shows images large, without smoothing, so single pixels are visible.

    Args:
        images: uint8 images, shape `(N, H, W, 3)`.
        titles: optional title per image. Defaults to None.
        ncols: images per row. Defaults to 4.
        size: inches per image. Defaults to 2.5.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    images = _check_images(images)
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images; give one per image.")
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i])
    fig.tight_layout()
    return _finish(fig, save_to)


def _label_text(weights, class_names):
    """'cat' for a one-hot label, 'cat .72' over 'dog .28' (two lines) for a mixed one."""
    order = np.argsort(weights)[::-1]
    if weights[order[1]] < 0.01:
        return class_names[order[0]]
    return "\n".join(f"{class_names[i]} {weights[i]:.2f}".replace(" 0.", " .") for i in order[:2])


def _augmented(x, y, indices, augmentation, seed, repeats, num_classes):
    """Runs a policy `repeats` times over the batch `x[indices]`, one-hot labels."""
    images = np.asarray(x)[indices].astype("float32")
    labels = np.eye(num_classes, dtype="float32")[np.ravel(y)[indices]]
    run = pipeline_augment(augmentation, seed=seed)
    return [
        tuple(keras.ops.convert_to_numpy(t) for t in run(images, labels)) for _ in range(repeats)
    ]


def plot_augmentations(
    x, y, augmentations, image_index=0, n=6, seed=0, class_names=CLASS_NAMES, save_to=None
):
    """One image under each policy: a row per policy, `n` random draws per row.

    MixUp and CutMix blend the image with others from `x`; the titles then show
    the mixed label weights.

    Args:
        x: uint8 images, shape `(N, 32, 32, 3)`, N >= 8.
        y: labels, shape `(N,)` or `(N, 1)`.
        augmentations: policy names, e.g. `list(augment.POLICIES)`.
        image_index: which image to show. Defaults to 0.
        n: random draws per policy. Defaults to 6.
        seed: seed of the draws and of the mixing partners. Defaults to 0.
        class_names: names in label order. Defaults to `CLASS_NAMES`.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    x = _check_images(x)
    if len(x) < 8:
        raise ValueError(f"x must hold at least 8 images (mixing partners); received {len(x)}.")
    if not 0 <= image_index < len(x):
        raise ValueError(f"image_index must be in 0..{len(x) - 1}; received {image_index}.")
    rng = np.random.default_rng(seed)
    others = rng.choice(np.delete(np.arange(len(x)), image_index), size=7, replace=False)
    indices = np.concatenate([[image_index], others])
    fig, axes = plt.subplots(
        len(augmentations), n + 1, figsize=((n + 1) * 1.6, len(augmentations) * 1.85), squeeze=False
    )
    for row, policy in enumerate(augmentations):
        draws = _augmented(x, y, indices, policy, seed, n, len(class_names))
        axes[row, 0].imshow(x[image_index], interpolation="nearest")
        axes[row, 0].set_title("original", fontsize=8)
        axes[row, 0].set_ylabel(policy, fontsize=10)
        for col, (images, labels) in enumerate(draws, start=1):
            axes[row, col].imshow(np.clip(images[0] / 255.0, 0, 1), interpolation="nearest")
            axes[row, col].set_title(_label_text(labels[0], class_names), fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("One image, several random draws of each policy", y=1.0)
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_augmented_grid(
    x, y, augmentation, n=16, ncols=8, seed=0, class_names=CLASS_NAMES, save_to=None
):
    """The first `n` images after one pass of a policy, each below its original.

    Rows alternate: originals (titled with their class), then the same images augmented
    (titled with their label after augmentation, which MixUp and CutMix blend).

    Args:
        x: uint8 images, shape `(N, 32, 32, 3)`.
        y: labels, shape `(N,)` or `(N, 1)`.
        augmentation: a policy name.
        n: images shown. Defaults to 16.
        ncols: images per row. Defaults to 8.
        seed: seed of the policy. Defaults to 0.
        class_names: names in label order. Defaults to `CLASS_NAMES`.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    x = _check_images(x)
    n = min(n, len(x))
    ncols = max(1, min(ncols, n))
    ((images, labels),) = _augmented(x, y, np.arange(n), augmentation, seed, 1, len(class_names))
    classes = np.ravel(y)
    blocks = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(2 * blocks, ncols, figsize=(ncols * 1.45, blocks * 3.3), squeeze=False)
    for i in range(blocks * ncols):
        top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
        if i >= n:
            continue
        top.imshow(x[i], interpolation="nearest")
        top.set_title(class_names[int(classes[i])], fontsize=8)
        bottom.imshow(np.clip(images[i] / 255.0, 0, 1), interpolation="nearest")
        bottom.set_title(_label_text(labels[i], class_names), fontsize=8, color="C3")
    for block in range(blocks):
        axes[2 * block, 0].set_ylabel("original", fontsize=9)
        axes[2 * block + 1, 0].set_ylabel("augmented", fontsize=9, color="C3")
    fig.suptitle(f"Policy '{augmentation}': each original above its augmented copy", y=1.0)
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_history(history, title=None, save_to=None):
    """Learning curves: loss and accuracy per epoch, training against validation.

    Args:
        history: a dict of per-epoch lists with "loss", "accuracy" and
            optionally "val_loss", "val_accuracy" (`TrainResult.history`, or
            Keras's `History.history`).
        title: a title above both panels. Defaults to None.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    missing = [k for k in ("loss", "accuracy") if k not in history]
    if missing:
        raise ValueError(f"history lacks {missing}; received keys {sorted(history)}.")
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], marker=".", label="training")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker=".", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # no half epochs
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title("loss (lower is better)")
    axes[1].set_title("accuracy (higher is better)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_schedules(schedules, total_steps, save_to=None):
    """Learning rate against training step: one panel per schedule, each over its own steps.

    Recipes train for different numbers of steps; drawing them on one axis would show a
    short schedule flat to the end of a long one, as if it trained that long.

    Args:
        schedules: a mapping of label to a Keras schedule (or a float).
        total_steps: the steps each schedule runs: one int for all, or a mapping with
            the same labels as `schedules`.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    if not schedules:
        raise ValueError("schedules is empty; give at least one label -> schedule.")
    if not isinstance(total_steps, dict):
        total_steps = {label: total_steps for label in schedules}
    missing = [label for label in schedules if label not in total_steps]
    if missing:
        raise ValueError(f"total_steps has no entry for {missing}; give one per schedule.")
    short = {label: n for label, n in total_steps.items() if label in schedules and int(n) < 1}
    if short:
        raise ValueError(f"total_steps must be >= 1 for every schedule; received {short}.")
    fig, axes = plt.subplots(1, len(schedules), figsize=(4.2 * len(schedules), 3.2), squeeze=False)
    for ax, (label, schedule) in zip(axes.flat, schedules.items()):
        steps = np.arange(int(total_steps[label]) + 1)
        values = [float(schedule(s)) if callable(schedule) else float(schedule) for s in steps]
        ax.plot(steps, values, color="C0")
        ax.set_xlim(0, steps[-1])
        ax.set_ylim(0, max(values) * 1.08 if max(values) > 0 else 1)
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("learning rate")
    fig.suptitle("Learning-rate schedules, each over its own training run")
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_lr_find(result, save_to=None):
    """The learning-rate range test: loss against learning rate, with the suggestion.

    Args:
        result: an `lr_finder.LRFindResult`.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(result.learning_rates, result.losses, color="0.75", lw=1, label="loss of each batch")
    ax.plot(result.learning_rates, result.smoothed, color="C0", lw=2, label="smoothed")
    ax.axvline(
        result.suggestion, color="C2", ls="--", label=f"steepest fall: {result.suggestion:.2g}"
    )
    ax.axvline(
        result.min_loss_rate / 10,
        color="C1",
        ls=":",
        label=f"minimum / 10: {result.min_loss_rate / 10:.2g}",
    )
    ax.set_xscale("log")
    if len(result.smoothed):  # the blow-up at the end would squash the rest of the curve
        finite = np.concatenate([result.losses[np.isfinite(result.losses)], result.smoothed])
        ax.set_ylim(max(0.0, finite.min() * 0.9), np.percentile(result.smoothed, 95) * 1.2)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_confusion_matrix(
    matrix, class_names=CLASS_NAMES, normalized=False, title=None, save_to=None
):
    """Draws a confusion matrix as a seaborn heatmap with class names.

    Args:
        matrix: `(num_classes, num_classes)`, rows true classes, columns
            predictions (`evaluation.confusion_matrix`).
        class_names: names in label order. Defaults to `CLASS_NAMES`.
        normalized: the rows are shares (formats cells as percentages).
            Defaults to False (counts).
        title: the title. Defaults to None: a description of the matrix.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    import seaborn as sns

    matrix = np.asarray(matrix)
    if (
        matrix.ndim != 2
        or matrix.shape[0] != matrix.shape[1]
        or matrix.shape[0] != len(class_names)
    ):
        raise ValueError(
            f"matrix must be square with one row per class ({len(class_names)}); "
            f"received {matrix.shape}."
        )
    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(
        matrix * 100 if normalized else matrix,
        annot=True,
        fmt=".0f" if normalized else "d",
        cmap="Blues",
        xticklabels=class_names,
        yticklabels=class_names,
        square=True,
        ax=ax,
        cbar_kws={"label": "% of the true class" if normalized else "images"},
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        title
        or ("Confusion matrix, % of each true class" if normalized else "Confusion matrix, counts")
    )
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_misclassified(x, y, probs, indices, class_names=CLASS_NAMES, ncols=6, save_to=None):
    """A gallery of mistakes: each image with its true label, prediction and confidence.

    Args:
        x: the evaluated images, uint8, shape `(N, 32, 32, 3)`.
        y: their labels.
        probs: the model's probabilities, shape `(N, num_classes)`.
        indices: which images to show, in order (`evaluation.misclassified`).
        class_names: names in label order. Defaults to `CLASS_NAMES`.
        ncols: images per row. Defaults to 6.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    y = np.ravel(y)
    probs = np.asarray(probs)
    indices = np.asarray(indices, dtype=int)
    if len(indices) == 0:
        raise ValueError("indices is empty: there is nothing to show.")
    titles = [
        f"true: {class_names[y[i]]}\npred: {class_names[probs[i].argmax()]} {probs[i].max():.0%}"
        for i in indices
    ]
    fig = show_images(np.asarray(x)[indices], titles=titles, ncols=ncols, size=1.9)
    for ax in fig.axes:
        ax.title.set_fontsize(8)
    return _finish(fig, save_to)


def plot_reliability(bins, ece, save_to=None):
    """Reliability diagram: accuracy against confidence per bin, with the ECE.

    Args:
        bins: the DataFrame of `evaluation.calibration`.
        ece: the expected calibration error.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(bins["confidence"], bins["accuracy"], marker="o", label="model")
    ax.fill_between(
        bins["confidence"],
        bins["accuracy"],
        bins["confidence"],
        alpha=0.2,
        color="tab:red",
        label="gap",
    )
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(f"Reliability diagram (ECE = {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax_count.bar(bins["confidence"], bins["count"], width=0.05, color="tab:blue")
    ax_count.set_xlabel("confidence (top probability)")
    ax_count.set_ylabel("predictions")
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_grad_cam(images, heatmaps, titles=None, ncols=4, alpha=0.5, cmap="inferno", save_to=None):
    """Each image beside its Grad-CAM heatmap laid over it, with a colour bar.

    Args:
        images: uint8 images, shape `(N, H, W, 3)`.
        heatmaps: values in [0, 1], shape `(N, H, W)` (`evaluation.grad_cam`).
        titles: optional title per image (shown over the pair). Defaults to None.
        ncols: pairs per row. Defaults to 4.
        alpha: opacity of the heatmap. Defaults to 0.5.
        cmap: a perceptually uniform colour map, so that equal steps of evidence look
            equally different. Defaults to "inferno".
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    images = _check_images(images)
    heatmaps = np.asarray(heatmaps)
    if heatmaps.shape != images.shape[:3]:
        raise ValueError(f"heatmaps must have shape {images.shape[:3]}; received {heatmaps.shape}.")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images; give one per image.")
    ncols = max(1, min(ncols, len(images)))
    nrows = int(np.ceil(len(images) / ncols))
    # Columns: image, overlay, spacer, image, overlay, spacer, ...: each pair sits together.
    fig = plt.figure(figsize=(ncols * 3.1 + 1.0, nrows * 1.95))
    margins = {"left": 0.01, "right": 0.89, "top": 0.9, "bottom": 0.06}  # room for the colour bar
    grid = fig.add_gridspec(
        nrows, 3 * ncols, width_ratios=[1, 1, 0.22] * ncols, wspace=0.04, hspace=0.45, **margins
    )
    shown = None
    for i in range(min(len(images), nrows * ncols)):
        row, col = divmod(i, ncols)
        left, right = fig.add_subplot(grid[row, 3 * col]), fig.add_subplot(grid[row, 3 * col + 1])
        left.imshow(images[i], interpolation="nearest")
        right.imshow(images[i], interpolation="nearest")
        shown = right.imshow(
            heatmaps[i], cmap=cmap, alpha=alpha, vmin=0, vmax=1, interpolation="bilinear"
        )
        for ax, label in ((left, "image"), (right, "Grad-CAM")):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=7, color="0.4", pad=2)
        if titles is not None:  # one title over the pair
            left.text(
                1.02, 1.2, titles[i], transform=left.transAxes, ha="center", va="bottom", fontsize=8
            )
    if shown is not None:
        bar_ax = fig.add_axes((0.91, 0.12, 0.015, 0.72))
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=shown.norm, cmap=cmap), cax=bar_ax)
        bar.set_label(
            "evidence for the predicted class\n(0 none, 1 strongest in the image)", fontsize=8
        )
    return _finish(fig, save_to)


def plot_predictions(images, predictions, titles=None, save_to=None):
    """Each image beside its top-k classes as horizontal confidence bars.

    Args:
        images: the pictures as the model saw them, uint8 `(N, 32, 32, 3)`.
        predictions: one list of `inference.Prediction` per image, most likely
            first (`Classifier.predict`).
        titles: optional caption per image (a file name, say). Defaults to None.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    images = _check_images(images)
    if len(images) != len(predictions) or len(images) == 0:
        raise ValueError(
            f"need one list of predictions per image and at least one image; received "
            f"{len(images)} images and {len(predictions)} prediction lists"
        )
    fig, axes = plt.subplots(
        len(images),
        2,
        figsize=(6.5, 1.5 * len(images)),
        gridspec_kw={"width_ratios": [1, 2.6]},
        squeeze=False,
    )
    for i, (image, preds) in enumerate(zip(images, predictions)):
        axes[i, 0].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axes[i, 0].axis("off")
        if titles is not None:
            axes[i, 0].set_title(titles[i], fontsize=8)
        labels = [p.label for p in preds][::-1]
        values = [p.confidence for p in preds][::-1]
        bars = axes[i, 1].barh(labels, values, color=["#bbb"] * (len(values) - 1) + ["#1f77b4"])
        axes[i, 1].bar_label(bars, labels=[f"{v:.0%}" for v in values], padding=3, fontsize=8)
        axes[i, 1].set_xlim(0, 1.15)
        axes[i, 1].tick_params(labelsize=8)
        axes[i, 1].spines[["top", "right"]].set_visible(False)
    axes[-1, 1].set_xlabel("confidence")
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_export_comparison(table, save_to=None):
    """Bar charts of the export formats: what differs between them.

    File size; the share of images whose top class differs from the reference model
    (1 - agreement: accuracy itself barely moves between formats, so the answers that
    change are what to look at); batched throughput; and the latency of one image.

    Args:
        table: the DataFrame of `export.compare_formats` (with speed columns).
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    columns = [
        ("size_mb", "file size (MB)", "{:.2f}"),
        ("changed_pct", "top class differs from Keras (% of images)", "{:.2f}"),
        ("images_per_second", "images / second (batched)", "{:,.0f}"),
        ("latency_ms", "latency of one image (ms)", "{:.2f}"),
    ]
    needed = ["size_mb", "agreement", "images_per_second", "latency_ms"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(
            f"the table lacks the columns {missing}; use compare_formats(..., speed=True)"
        )
    values = table.assign(changed_pct=100 * (1 - table["agreement"]))
    fig, axes = plt.subplots(1, len(columns), figsize=(15, 3.2))
    names = [str(i) for i in table.index]
    for ax, (column, title, fmt) in zip(axes, columns):
        shown = values[column].to_numpy(dtype=float)[::-1]
        bars = ax.barh(names[::-1], shown, color="#1f77b4")
        ax.bar_label(bars, labels=[fmt.format(v) for v in shown], padding=3, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_xlim(0, max(float(np.nanmax(shown)), 1e-9) * 1.3)  # bars from zero
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    return _finish(fig, save_to)


def _readable_log_axis(axis, values=None):
    """Plain numbers (0.3, 1, 3) on a log axis, no crowded minor labels.

    Ticks at 1-2-5 steps when the data span at most about one and a half decades, at powers
    of ten only when they span more, so labels never run into each other.
    """
    values = np.asarray(values if values is not None else [], dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    wide = values.size > 1 and np.log10(values.max() / values.min()) > 1.5
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def plot_params_vs_flops(stats, save_to=None):
    """Parameters against arithmetic per image, one labelled point per model, log-log.

    Args:
        stats: the DataFrame of `models.model_stats` (index: model names; columns
            "parameters" and "MFLOPs per image").
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    missing = {"parameters", "MFLOPs per image"} - set(stats.columns)
    if missing:
        raise ValueError(f"stats lacks the columns {sorted(missing)}; use models.model_stats().")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    params, flops = stats["parameters"] / 1e6, stats["MFLOPs per image"]
    ax.scatter(params, flops, s=60)
    logs = np.log10(np.column_stack([params, flops]))
    for i, name in enumerate(stats.index):
        # a label goes below its point when a neighbour sits just above it, so they do not collide
        near = np.all(np.abs(logs - logs[i]) < 0.15, axis=1) & (logs[:, 1] > logs[i, 1])
        ax.annotate(
            str(name),
            (params.iloc[i], flops.iloc[i]),
            textcoords="offset points",
            xytext=(6, -13) if near.any() else (6, 4),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(0.15)
    _readable_log_axis(ax.xaxis, params)
    _readable_log_axis(ax.yaxis, flops)
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("MFLOPs per image (log scale)")
    ax.set_title("Size against arithmetic")
    ax.grid(alpha=0.3, which="major")
    fig.tight_layout()
    return _finish(fig, save_to)


def plot_search(
    trials,
    hyperparameters=("learning_rate", "weight_decay", "dropout"),
    color="width",
    save_to=None,
):
    """Validation accuracy of each search trial against each hyperparameter.

    Args:
        trials: the DataFrame of `tuning.search` (one row per trial, "val_accuracy").
        hyperparameters: columns to put on the x axes; "learning_rate" and
            "weight_decay" (sampled on a log scale by `tuning.SEARCH_SPACE`) are drawn on a
            log axis. Defaults to the three continuous ones.
        color: a numeric column that colours the points, explained by a colour bar.
            Defaults to "width".
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    missing = set(hyperparameters) | {"val_accuracy", color}
    missing -= set(trials.columns)
    if missing:
        raise ValueError(f"trials lacks the columns {sorted(missing)}; use tuning.search's table.")
    log_scaled = {"learning_rate", "weight_decay"}
    fig, axes = plt.subplots(
        1,
        len(hyperparameters),
        figsize=(4 * len(hyperparameters) + 1, 3.6),
        sharey=True,
        squeeze=False,
    )
    values = trials[color].astype(float)
    points = None
    for ax, name in zip(axes.flat, hyperparameters):
        points = ax.scatter(
            trials[name],
            trials["val_accuracy"],
            c=values,
            cmap="viridis",
            vmin=values.min(),
            vmax=values.max(),
            s=50,
            edgecolors="0.3",
        )
        ax.set_xlabel(name + (" (log scale)" if name in log_scaled else ""))
        if name in log_scaled:
            ax.set_xscale("log")
            _readable_log_axis(ax.xaxis, trials[name])
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("validation accuracy")
    bar = fig.colorbar(points, ax=list(axes.flat), pad=0.02)
    bar.set_label(color)
    if values.nunique() <= 6:
        bar.set_ticks(sorted(values.unique()))
    fig.suptitle(f"Search results: one point per trial, colour = {color}")
    return _finish(fig, save_to)


def plot_accuracy_vs_time(curves, save_to=None):
    """Validation accuracy against training wall time, one line per model.

    Args:
        curves: a mapping of label to `(seconds, accuracies)`: the training time (wall
            clock, validation passes excluded, as `callbacks.TimeBudget` measures it) at
            each measurement, and the validation accuracy there.
        save_to: optional path to save the figure to. Defaults to None.

    Returns:
        The matplotlib Figure.
    """
    if not curves:
        raise ValueError("curves is empty; give at least one label -> (seconds, accuracies).")
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (seconds, accuracies) in curves.items():
        if len(seconds) != len(accuracies):
            raise ValueError(f"{label!r}: {len(seconds)} times for {len(accuracies)} accuracies.")
        ax.plot(seconds, accuracies, marker=".", label=label)
    ax.set_xlabel("training time (s, wall clock)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Accuracy against training time, same budget for each")
    fig.tight_layout()
    return _finish(fig, save_to)
