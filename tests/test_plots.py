"""cifar_utils.plots: each figure draws, returns a Figure and saves when asked."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cifar_utils import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), np.arange(60) % 10


def test_samples_by_class(images, tmp_path):
    x, y = images
    fig = plots.plot_samples_by_class(x, y, per_class=4, save_to=tmp_path / "sub" / "grid.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 40
    assert fig.axes[0].get_ylabel() == "airplane" and fig.axes[36].get_ylabel() == "truck"
    assert (tmp_path / "sub" / "grid.png").read_bytes()[:8] == PNG_MAGIC


def test_class_distribution_counts_bars(images, tmp_path):
    _, y = images
    fig = plots.plot_class_distribution({"train": y, "test": y[:20]}, save_to=tmp_path / "d.png")
    heights = sorted(p.get_height() for p in fig.axes[0].patches if p.get_height() > 0)
    assert heights == [2] * 10 + [6] * 10
    assert (tmp_path / "d.png").exists()
    assert len(plots.plot_class_distribution(y).axes[0].patches) >= 10


def test_channel_histograms(images, tmp_path):
    x, _ = images
    fig = plots.plot_channel_histograms(x, bins=16, save_to=tmp_path / "h.png")
    labels = [line.get_label() for line in fig.axes[0].patches]
    assert labels == ["red", "green", "blue"]
    assert (tmp_path / "h.png").exists()


def test_show_images(images):
    x, _ = images
    fig = plots.show_images(x[:3], titles=["a", "b", "c"], ncols=2)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        plots.show_images(x[:3], titles=["a", "b"])


def test_bad_image_shape():
    with pytest.raises(ValueError, match=r"received \(5, 32, 32\)"):
        plots.plot_samples_by_class(np.zeros((5, 32, 32), np.uint8), np.zeros(5))


def test_augmentation_figures(images, tmp_path):
    x, y = images
    fig = plots.plot_augmentations(
        x, y, ["none", "cutout", "mixup"], image_index=2, n=3, save_to=tmp_path / "a.png"
    )
    assert len(fig.axes) == 3 * 4
    assert [fig.axes[i].get_ylabel() for i in (0, 4, 8)] == ["none", "cutout", "mixup"]
    assert fig.axes[1].get_title() == "bird"  # 'none' keeps the label of image 2
    assert (tmp_path / "a.png").exists()
    grid = plots.plot_augmented_grid(x, y, "standard", n=6, ncols=3)
    # rows alternate: originals (class names), then their augmented copies, 2 blocks of 3
    assert len(grid.axes) == 4 * 3
    assert [ax.get_title() for ax in grid.axes[:3]] == ["airplane", "automobile", "bird"]
    assert [grid.axes[i].get_ylabel() for i in (0, 3, 6, 9)] == ["original", "augmented"] * 2
    np.testing.assert_array_equal(grid.axes[0].images[0].get_array(), x[0])
    none = plots.plot_augmented_grid(x, y, "none", n=3, ncols=3)  # 'none' copies the originals
    np.testing.assert_allclose(none.axes[3].images[0].get_array(), x[0] / 255.0)
    with pytest.raises(ValueError, match="received 60"):
        plots.plot_augmentations(x, y, ["none"], image_index=60)


def test_mixed_label_text():
    weights = np.zeros(10)
    weights[[3, 5]] = [0.25, 0.75]
    assert plots._label_text(weights, plots.CLASS_NAMES) == "dog .75\ncat .25"


def test_training_figures(tmp_path):
    history = {
        "loss": [2.0, 1.5],
        "accuracy": [0.3, 0.5],
        "val_loss": [1.8, 1.6],
        "val_accuracy": [0.35, 0.45],
    }
    fig = plots.plot_history(history, title="t", save_to=tmp_path / "h.png")
    assert [len(ax.lines) for ax in fig.axes] == [2, 2] and (tmp_path / "h.png").exists()
    with pytest.raises(ValueError, match="lacks \\['accuracy'\\]"):
        plots.plot_history({"loss": [1.0]})
    fig = plots.plot_schedules({"a": lambda s: 0.1 * s, "b": 0.5}, total_steps=10)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata()[-1], 1.0)
    # one panel per schedule, each drawn over its own steps only
    fig = plots.plot_schedules(
        {"long": lambda s: 0.01, "short": lambda s: 0.2}, total_steps={"long": 100, "short": 20}
    )
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["long", "short"]
    assert [ax.lines[0].get_xdata()[-1] for ax in fig.axes] == [100, 20]
    assert [ax.get_xlim()[1] for ax in fig.axes] == [100, 20]
    with pytest.raises(ValueError, match=r"no entry for \['short'\]"):
        plots.plot_schedules({"long": 0.1, "short": 0.2}, total_steps={"long": 5})
    curves = {"a": ([10, 20], [0.3, 0.5]), "b": ([5, 25, 40], [0.2, 0.4, 0.6])}
    fig = plots.plot_accuracy_vs_time(curves, save_to=tmp_path / "t.png")
    assert [line.get_xdata()[-1] for line in fig.axes[0].lines] == [20, 40]
    assert fig.axes[0].get_ylim() == (0, 1)
    with pytest.raises(ValueError, match="2 times for 1 accuracies"):
        plots.plot_accuracy_vs_time({"a": ([1, 2], [0.5])})


def test_evaluation_figures(images, tmp_path):
    import pandas as pd

    x, y = images
    counts = np.diag(np.full(10, 5))
    fig = plots.plot_confusion_matrix(counts, save_to=tmp_path / "c.png")
    assert fig.axes[0].get_xlabel() == "predicted class" and (tmp_path / "c.png").exists()
    with pytest.raises(ValueError, match=r"received \(3, 3\)"):
        plots.plot_confusion_matrix(np.eye(3))
    probs = np.eye(10)[(y + 1) % 10]
    fig = plots.plot_misclassified(x, y, probs, [0, 1], ncols=2)
    assert fig.axes[0].get_title() == "true: airplane\npred: automobile 100%"
    with pytest.raises(ValueError, match="nothing to show"):
        plots.plot_misclassified(x, y, probs, [])
    bins = pd.DataFrame({"confidence": [0.55, 0.95], "accuracy": [0.5, 0.9], "count": [10, 30]})
    fig = plots.plot_reliability(bins, 0.05)
    assert "ECE = 0.050" in fig.axes[0].get_title()
    fig = plots.plot_grad_cam(x[:2], np.zeros((2, 32, 32)), titles=["a", "b"], ncols=2)
    # each image beside its overlay, then a colour bar: 2 pairs + 1 bar
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "Grad-CAM"] * 2
    assert [t.get_text() for ax in fig.axes[:4:2] for t in ax.texts] == ["a", "b"]
    assert len(fig.axes[0].images) == 1 and len(fig.axes[1].images) == 2  # original; overlay
    assert fig.axes[1].images[1].get_cmap().name == "inferno"
    assert "evidence" in fig.axes[4].get_ylabel()
    with pytest.raises(ValueError, match="3 titles for 2 images"):
        plots.plot_grad_cam(x[:2], np.zeros((2, 32, 32)), titles=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"received \(2, 8, 8\)"):
        plots.plot_grad_cam(x[:2], np.zeros((2, 8, 8)))


def test_deployment_figures(images, tmp_path):
    import pandas as pd

    from cifar_utils.inference import Prediction

    x, _ = images
    preds = [
        [Prediction("cat", 3, 0.7), Prediction("dog", 5, 0.2)],
        [Prediction("ship", 8, 0.9), Prediction("car", 1, 0.05)],
    ]
    fig = plots.plot_predictions(
        x[:2], preds, titles=["a.png", "b.jpg"], save_to=tmp_path / "p.png"
    )
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "a.png"
    bar_widths = [p.get_width() for p in fig.axes[1].patches]
    assert bar_widths == [0.2, 0.7]  # most likely on top
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="one list of predictions per image"):
        plots.plot_predictions(x[:3], preds)

    table = pd.DataFrame(
        {
            "size_mb": [8.0, 2.0],
            "accuracy": [0.88, 0.879],
            "agreement": [1.0, 0.985],
            "images_per_second": [900.0, 3000.0],
            "latency_ms": [3.0, 0.5],
        },
        index=pd.Index(["keras", "tflite_int8"], name="format"),
    )
    fig = plots.plot_export_comparison(table, save_to=tmp_path / "c.png")
    assert [ax.get_title() for ax in fig.axes] == [
        "file size (MB)",
        "top class differs from Keras (% of images)",
        "images / second (batched)",
        "latency of one image (ms)",
    ]
    assert [p.get_width() for p in fig.axes[2].patches] == [3000.0, 900.0]
    assert [p.get_width() for p in fig.axes[1].patches] == pytest.approx([1.5, 0.0])
    assert [ax.get_xlim()[0] for ax in fig.axes] == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="images_per_second"):
        plots.plot_export_comparison(table.drop(columns="images_per_second"))


def test_search_and_size_figures(tmp_path):
    import pandas as pd

    trials = pd.DataFrame(
        {
            "learning_rate": [1e-3, 3e-3, 5e-4],
            "weight_decay": [1e-4, 1e-3, 1e-5],
            "dropout": [0.1, 0.2, 0.3],
            "width": [16, 32, 48],
            "val_accuracy": [0.4, 0.5, 0.3],
        }
    )
    fig = plots.plot_search(trials, save_to=tmp_path / "s.png")
    assert len(fig.axes) == 4 and fig.axes[3].get_ylabel() == "width"  # the colour bar
    assert [ax.get_xscale() for ax in fig.axes[:3]] == ["log", "log", "linear"]
    fig.canvas.draw()
    # weight decay spans 2 decades: ticks at powers of ten only, so labels cannot collide
    low, high = fig.axes[1].get_xlim()
    shown = [
        t.get_text()
        for t in fig.axes[1].get_xticklabels()
        if t.get_text() and low <= t.get_position()[0] <= high
    ]
    assert shown == ["1e-05", "0.0001", "0.001"], shown  # data from 1e-5 to 1e-3
    with pytest.raises(ValueError, match="lacks the columns \\['val_accuracy'\\]"):
        plots.plot_search(trials.drop(columns="val_accuracy"))
    stats = pd.DataFrame(
        {"parameters": [3e5, 2e6, 6e6], "MFLOPs per image": [20.0, 300.0, 750.0]},
        index=["a", "b", "c"],
    )
    fig = plots.plot_params_vs_flops(stats, save_to=tmp_path / "p.png")
    fig.canvas.draw()
    labels = [
        t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_visible() and t.get_text()
    ]
    assert labels and not [t for t in labels if "times" in t or "^" in t], labels  # plain numbers
    assert [t.get_text() for t in fig.axes[0].get_xticklabels(minor=True) if t.get_text()] == []
