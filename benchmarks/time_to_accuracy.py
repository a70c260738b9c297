"""Test accuracy against wall time: our fast recipe, the TensorFlow tutorial CNN and airbench,
one run.

    python benchmarks/time_to_accuracy.py                      # every run, about 2.5 hours, 2 cores
    python benchmarks/time_to_accuracy.py --runs peer,fast-peer-time --results-dir runs/partial
    python benchmarks/time_to_accuracy.py --quick              # a smoke run in a few minutes

The runs, in order, each in its own process (so its peak memory is its own):

- `peer`: the model of TensorFlow's "Convolutional Neural Network" tutorial
  exactly as published: Conv 32/64/64 (3x3, ReLU) with 2x2 max pooling, Dense
  64, Dense 10 logits, Adam, batch 32, 10 epochs, pixels / 255.
- `fast-peer-time`: our fast recipe given the peer's measured wall time as its
  budget (`training.train(budget_min=...)` chooses width and epochs).
- `airbench`: the anchor, the published `airbench` package (PyPI, PyTorch),
  `train94()` as published, on this machine's CPU: its `.cuda()` and `.half()`
  calls are mapped to the CPU in float32, CUDA timing events to the wall clock,
  and `torchvision` (used for `Normalize` and a download it skips when its
  `train.pt`/`test.pt` cache exists) to a small stand-in when it is not
  installed. Its code is otherwise unchanged. Needs `pip install -e .[bench]`;
  without it the run is skipped with that message.
- `fast-10`: our fast recipe as it is, 10 epochs at airbench94's widths: its
  accuracy against airbench's epoch for epoch.
- `fast-half-anchor`: our fast recipe with half the anchor's wall time as budget.
- `fast-60`: our fast recipe with a budget of 60 minutes.

Every run trains on all 50,000 training images (no validation split, no
checkpoints: a timed run skips both). The benchmark measures test accuracy
(without TTA) after every epoch on the 10,000 test images and on the first 1,000
official test images in lossless form (`data.load_lossless_test_sample`),
outside the timed part: wall time runs from the start of the worker (data
loading included) to the end of each epoch, leaving out these evaluations. Our
runs keep each epoch's weights on disk and are evaluated after training (their
last epoch is the model `train` returned), so that `train`'s budget, a
wall-clock deadline, is spent on training alone; airbench and the peer are
evaluated as they go, their clocks stopped meanwhile. At the end of each run it
also measures the recipe's own TTA (airbench: its multi-crop TTA). A budgeted
run's `train_call_seconds` is the whole `train` call, to compare with its budget.
Results go to benchmarks/results/time_to_accuracy.{json,md,png}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
INSTALL_HINT = "pip install -e .[bench]  (PyTorch's CPU build and airbench 0.1.8)"
HOUR = 3600.0

# name -> how to train it. "budget": seconds, or the name of an earlier run whose wall time
# (times "share") is the budget.
RUNS = {
    "peer": {"kind": "peer", "epochs": 10},
    "fast-peer-time": {"kind": "recipe", "recipe": "fast", "budget": "peer", "share": 1.0},
    "airbench": {"kind": "airbench"},
    # The fast recipe's own 10 epochs at airbench94's widths: accuracy epoch for epoch.
    "fast-10": {"kind": "recipe", "recipe": "fast"},
    "fast-half-anchor": {"kind": "recipe", "recipe": "fast", "budget": "airbench", "share": 0.5},
    "fast-60": {"kind": "recipe", "recipe": "fast", "budget": HOUR},
}
QUICK_RUNS = {
    "peer": {"kind": "peer", "epochs": 1},
    "fast-peer-time": {
        "kind": "recipe",
        "recipe": "fast",
        "budget": "peer",
        "share": 1.0,
        "overrides": {"model_kwargs": {"widths": [16, 32, 32]}},
    },
    "airbench": {"kind": "airbench", "epochs": 1},
}
QUICK_IMAGES = 2000


def _peak_rss_mb() -> float:
    """This worker's own peak resident memory: VmHWM, which starts afresh at exec (Linux's
    ru_maxrss also keeps the peak of the process that forked it)."""
    try:
        with open("/proc/self/status") as status:
            line = next(ln for ln in status if ln.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Progress:
    """Per-epoch test accuracies, the clock with evaluations left out, written after each epoch."""

    def __init__(self, name, spec, out_path, tests):
        self.t0 = time.perf_counter()
        self.eval_seconds = 0.0
        self.out_path = out_path
        self.tests = tests  # {"offline": (x, y), "lossless": (x, y)}
        self.state = {
            "name": name,
            "spec": spec,
            "epochs": [],
            "train_images": 0,
            "test_images": {k: len(v[1]) for k, v in tests.items()},
        }

    def seconds(self):
        return time.perf_counter() - self.t0 - self.eval_seconds

    def timed(self, fn):
        """Runs `fn()` with its time left out of the clock."""
        start = time.perf_counter()
        result = fn()
        self.eval_seconds += time.perf_counter() - start
        return result

    def on_test_sets(self, accuracy_fn):
        """`accuracy_fn(x, y) -> float` on every test set, as a dict."""
        return {k: float(accuracy_fn(x, y)) for k, (x, y) in self.tests.items()}

    def epoch(self, number, accuracies):
        """Records epoch `number`: the clock now, then `accuracies()` (a dict), not timed."""
        seconds = self.seconds()
        self.record(number, seconds, self.timed(accuracies))

    def record(self, number, seconds, acc):
        """Records epoch `number`, ended at `seconds` on the clock, with test accuracies `acc`."""
        self.state["epochs"].append({"epoch": number, "seconds": seconds, "test_accuracy": acc})
        print(
            f"{self.state['name']}: epoch {number} at {seconds:.0f} s, test accuracy "
            + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()),
            flush=True,
        )
        self.save()

    def save(self):
        self.state["peak_rss_mb"] = _peak_rss_mb()
        Path(self.out_path).write_text(json.dumps(self.state))


def _load(quick, seed):
    from cifar_utils import data

    (x_train, y_train), (x_test, y_test), source = data.load_cifar10(
        verbose=False, return_source=True
    )
    tests = {"offline": (x_test, y_test)}
    try:
        tests["lossless"] = (data.load_lossless_test_sample(), y_test[: data.LOSSLESS_SAMPLE_SIZE])
    except data.CIFAR10DataError as err:
        print(f"no lossless test sample: {err}", flush=True)
    if source.variant != data.OFFLINE_COPY:
        tests = {"official": tests["offline"]}  # the lossless sample is part of it
    if quick:
        x_train, y_train = data.stratified_subset(x_train, y_train, QUICK_IMAGES, seed=seed)
        tests = {k: (x[:500], y[:500]) for k, (x, y) in tests.items()}
    return (x_train, y_train), tests, source


def _peer_worker(progress, spec, x_train, y_train):
    import keras

    from cifar_utils import evaluation

    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # The tutorial's pixels / 255; the argmax of its logits is that of its probabilities.
            progress.epoch(
                epoch + 1,
                lambda: progress.on_test_sets(
                    lambda x, y: evaluation.accuracy(self.model, x / 255.0, y)
                ),
            )

    model.fit(
        x_train / 255.0,
        y_train,
        epochs=spec["epochs"],
        batch_size=32,
        verbose=0,
        callbacks=[Recorder()],
    )


def _recipe_worker(progress, spec, x_train, y_train, budget_seconds, seed):
    import keras
    import numpy as np

    from cifar_utils import evaluation, training
    from cifar_utils.recipes import get_recipe

    recipe = get_recipe(spec["recipe"], **spec.get("overrides", {}))
    snapshots = []  # (epoch, seconds on the clock, weights file)

    class Snapshot(keras.callbacks.Callback):
        """Keeps each epoch's weights on disk, off the clock: the test sets are evaluated
        after training, so that train()'s budget, a wall-clock deadline, is spent on the
        run alone, and the evaluations do not add to the run's peak memory."""

        def on_epoch_end(self, epoch, logs=None):
            seconds = progress.seconds()
            path = Path(tmp) / f"epoch{epoch + 1}.npz"
            progress.timed(lambda: np.savez(path, *self.model.get_weights()))
            snapshots.append((epoch + 1, seconds, path))

    # The budget counts from the worker's start, data loading included.
    budget_min = (
        None if budget_seconds is None else max(budget_seconds - progress.seconds(), 1.0) / 60
    )
    with tempfile.TemporaryDirectory() as tmp:
        train_start = progress.seconds()
        result = training.train(
            recipe,
            x_train,
            y_train,
            None,
            None,
            output_dir=Path(tmp) / "run",
            seed=seed,
            verbose=0,
            callbacks=[Snapshot()],
            checkpoints=False,
            budget_min=budget_min,
        )
        progress.state["wall_seconds"] = progress.seconds()
        progress.state["train_call_seconds"] = progress.state["wall_seconds"] - train_start
        progress.state["recipe"] = result.recipe.to_dict()
        progress.state["budget"] = result.run.get("budget")
        progress.state["precision"] = result.run.get("precision")
        model, tta = result.model, result.recipe.tta

        def on_test_sets(**kwargs):
            return progress.timed(
                lambda: progress.on_test_sets(
                    lambda x, y: evaluation.accuracy(model, x, y, **kwargs)
                )
            )

        # The last epoch is the model train() returned (with lookahead's last average).
        final = on_test_sets()
        progress.state["final_tta"] = {"kind": str(tta), "test_accuracy": on_test_sets(tta=tta)}
        if tta != "multicrop":  # also airbench's TTA, for comparison (JSON only)
            progress.state["final_multicrop"] = on_test_sets(tta="multicrop")
        if spec.get("save_dir"):
            from cifar_utils import storage

            target = Path(spec["save_dir"]) / f"{progress.state['name']}.keras"
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.atomic_save_model(model, target)
            progress.state["saved_model"] = str(target)
        for number, seconds, path in snapshots[:-1]:
            with np.load(path) as weights:
                model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
            progress.record(number, seconds, on_test_sets())
        number, seconds, _ = snapshots[-1]
        progress.record(number, seconds, final)


def _torchvision_stand_in(torch):
    """`torchvision.transforms.Normalize`, the one piece of torchvision airbench uses here."""

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.as_tensor(mean), torch.as_tensor(std)

        def __call__(self, x):
            mean = self.mean.to(x.dtype).view(-1, 1, 1)
            std = self.std.to(x.dtype).view(-1, 1, 1)
            return (x - mean) / std

    def no_download(*args, **kwargs):
        raise RuntimeError(
            "airbench tried to download CIFAR-10; the benchmark writes train.pt/test.pt first."
        )

    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Normalize = Normalize
    tv.datasets = types.SimpleNamespace(CIFAR10=no_download)
    return tv


def _map_airbench_to_cpu(torch):
    """airbench calls .cuda(), .half() and CUDA events; on a CPU: float32, the wall clock.

    (Its data loader's device, `gpu=0`, is set to "cpu" in `_airbench_worker`.)
    """

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.half = lambda self, *args, **kwargs: self.float()
    torch.nn.Module.half = lambda self: self.float()

    class WallClockEvent:
        def __init__(self, enable_timing=True):
            self.t = None

        def record(self, *args):
            self.t = time.perf_counter()

        def elapsed_time(self, end):
            return (end.t - self.t) * 1000.0  # milliseconds, as CUDA events report

    torch.cuda.Event = WallClockEvent
    torch.cuda.synchronize = lambda *args, **kwargs: None
    load = torch.load
    torch.load = lambda *args, **kwargs: load(*args, **{**kwargs, "map_location": "cpu"})


def _airbench_worker(progress, spec, x_train, y_train, seed):
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("airbench") is None:
        progress.state["skipped"] = f"PyTorch or airbench is not installed: {INSTALL_HINT}"
        print(f"airbench: skipped. {progress.state['skipped']}", flush=True)
        return
    import numpy as np
    import torch

    from cifar_utils import data

    if importlib.util.find_spec("torchvision") is None:
        tv = _torchvision_stand_in(torch)
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms
    _map_airbench_to_cpu(torch)
    torch.manual_seed(seed)
    import airbench
    import airbench.utils as ab

    progress.state["versions"] = {
        "torch": torch.__version__,
        "airbench": getattr(airbench, "__version__", None) or _dist_version("airbench"),
    }
    progress.state["train_images"] = len(x_train)
    classes = list(data.CLASS_NAMES)  # airbench's loader wants the names, in this order
    folder = Path(tempfile.mkdtemp()) / "cifar10"
    folder.mkdir()
    offline_x, offline_y = next(iter(progress.tests.values()))
    for name, (x, y) in (("train.pt", (x_train, y_train)), ("test.pt", (offline_x, offline_y))):
        torch.save(
            {
                "images": torch.tensor(np.asarray(x)),
                "labels": torch.tensor(np.ravel(y).astype(np.int64)),
                "classes": classes,
            },
            folder / name,
        )
    os.chdir(folder.parent)  # airbench reads ./cifar10/{train,test}.pt

    class Loader:  # what airbench's infer() reads of a CifarLoader
        def __init__(self, x, y):
            self.images = torch.tensor(np.asarray(x)).float().div(255).permute(0, 3, 1, 2)
            self.labels = torch.tensor(np.ravel(y).astype(np.int64))
            self.normalize = ab.T.Normalize(ab.CIFAR_MEAN, ab.CIFAR_STD)

    loaders = {k: Loader(x, y) for k, (x, y) in progress.tests.items()}
    original_evaluate = ab.evaluate
    epochs_done = [0]

    def evaluate(model, loader, tta_level=0):
        """airbench calls this after every epoch (tta_level 0) and once at the end (its TTA
        level)."""

        def on_test_sets():
            return {
                k: float(original_evaluate(model, test, tta_level)) for k, test in loaders.items()
            }

        if tta_level == 0:
            epochs_done[0] += 1
            progress.epoch(epochs_done[0], on_test_sets)
            return progress.state["epochs"][-1]["test_accuracy"][next(iter(loaders))]
        progress.state["wall_seconds"] = progress.seconds()
        acc = progress.timed(on_test_sets)
        progress.state["final_tta"] = {
            "kind": f"airbench tta_level={tta_level}",
            "test_accuracy": acc,
        }
        progress.save()
        return acc[next(iter(loaders))]

    ab.evaluate = evaluate
    # CifarLoader puts its tensors on torch.device(gpu), gpu=0 by default: the CPU instead.
    defaults = list(ab.CifarLoader.__init__.__defaults__)
    defaults[-1] = "cpu"
    ab.CifarLoader.__init__.__defaults__ = tuple(defaults)
    airbench.train94(**({"epochs": spec["epochs"]} if "epochs" in spec else {}))


def _dist_version(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _worker(name, spec, seed, quick, out_path, budget_seconds, save_dir):
    from cifar_utils import reports, repro

    progress = _Progress(name, spec, out_path, {})
    (x_train, y_train), tests, source = _load(quick, seed)
    progress.tests = tests
    progress.state.update(
        data=source.variant,
        train_images=len(x_train),
        test_images={k: len(v[1]) for k, v in tests.items()},
        budget_seconds=budget_seconds,
    )
    progress.save()
    repro.set_seed(seed)
    if spec["kind"] == "peer":
        _peer_worker(progress, spec, x_train, y_train)
        progress.state["wall_seconds"] = progress.state["epochs"][-1]["seconds"]
    elif spec["kind"] == "recipe":
        _recipe_worker(
            progress, {**spec, "save_dir": save_dir}, x_train, y_train, budget_seconds, seed
        )
    else:
        _airbench_worker(progress, spec, x_train, y_train, seed)
    progress.state["run"] = reports.run_info(seed=seed)
    progress.state["finished"] = "skipped" not in progress.state
    progress.save()


def _at(epochs, seconds=None, epoch=None):
    """Test accuracies of the last epoch finished by `seconds` (or of epoch `epoch`), or None."""
    if epoch is not None:
        done = [e for e in epochs if e["epoch"] == epoch]
    else:
        done = [e for e in epochs if e["seconds"] <= seconds]
    return done[-1]["test_accuracy"] if done else None


def _first_time(epochs, test, level):
    for e in epochs:
        if e["test_accuracy"].get(test, -1) >= level:
            return e["seconds"]
    return None


def _fmt(acc, tests):
    if not acc:
        return "-"
    return " / ".join(f"{acc[t]:.4f}" if t in acc else "-" for t in tests)


def report(results, quick=False, results_dir=RESULTS):
    """Writes the table, the targets and the plot of a benchmark's results; returns the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cifar_utils.reports import hardware_text, versions_text
    from cifar_utils.storage import atomic_write_json, atomic_write_text

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    tests = []
    for r in results.values():
        tests += [t for t in r.get("test_images", {}) if t not in tests]
    peer = results.get("peer", {})
    peer_time = peer.get("wall_seconds")
    anchor = results.get("airbench", {})
    heading = " / ".join(tests) or "test"
    rows = [
        f"| run | epochs | wall time (s) | at the peer's time ({heading}) | at 10 epochs "
        f"| at 60 min | final, with TTA (kind) | peak memory (GiB) | training images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ep = r.get("epochs", [])
        if r.get("skipped"):
            rows.append(f"| {name} | skipped: {r['skipped']} | | | | | | | |")
            continue
        if not ep:
            rows.append(f"| {name} | 0 (failed or stopped) | - | - | - | - | - | - | - |")
            continue
        wall = r.get("wall_seconds", ep[-1]["seconds"])
        speed = r["train_images"] * ep[-1]["epoch"] / ep[-1]["seconds"]
        final = r.get("final_tta")
        final_text = f"{_fmt(final['test_accuracy'], tests)} ({final['kind']})" if final else "-"
        rows.append(
            f"| {name} | {ep[-1]['epoch']}{'' if r.get('finished') else ' (stopped)'} | {wall:.0f} "
            f"| {_fmt(_at(ep, seconds=peer_time), tests) if peer_time else '-'} "
            f"| {_fmt(_at(ep, epoch=10), tests)} | {_fmt(_at(ep, seconds=HOUR), tests)} "
            f"| {final_text} "
            f"| {r.get('peak_rss_mb', 0) / 1024:.2f} | {speed:.0f} |"
        )
    run = next((r["run"] for r in results.values() if "run" in r), {})
    variant = next((r["data"] for r in results.values() if "data" in r), "?")
    sizes = next((r["test_images"] for r in results.values() if r.get("test_images")), {})
    lines = rows + [
        "",
        f"Test accuracy without TTA after each epoch, on the {variant}: "
        + ", ".join(
            f"{k} = {n:,} images"
            + (" (the first official test images, lossless)" if k == "lossless" else "")
            for k, n in sizes.items()
        )
        + '. "At" a time: the last epoch finished by then. Wall time runs '
        "from the start of the worker (data loading included) to the end of each epoch, leaving "
        "out the benchmark's own test evaluations (of our runs: after training, from each "
        "epoch's weights kept on disk). Every run trains on all training images, "
        "without validation or checkpoints.",
        f"Hardware: {hardware_text(run)}; {versions_text(run)}; seed {run.get('seed')}; "
        f"{run.get('date')}.",
    ]
    if "versions" in anchor:
        lines.append(
            f"airbench: {anchor['versions']}, float32 on the CPU (its half precision needs a GPU)."
        )
    for name, r in results.items():
        if r.get("budget"):
            kept = ""
            if r.get("train_call_seconds") is not None:
                call, budget = r["train_call_seconds"], r["budget"]["minutes"] * 60
                kept = (
                    f" The train() call took {call:.0f} s of its {budget:.0f} s "
                    f"({'within' if call <= budget else 'over'} budget)."
                )
            lines.append(f"{name}: {r['budget']['plan']}.{kept}")
    lines += ["", "Targets:"] + [f"- {t}" for t in targets(results, tests)]
    text = "\n".join(lines) + "\n"
    atomic_write_text(results_dir / f"time_to_accuracy{suffix}.md", text)
    atomic_write_json(results_dir / f"time_to_accuracy{suffix}.json", {"runs": results})

    fig, axes = plt.subplots(
        1, max(len(tests), 1), figsize=(6 * max(len(tests), 1), 4), squeeze=False
    )
    for ax, test in zip(axes[0], tests):
        for name, r in results.items():
            ep = [e for e in r.get("epochs", []) if test in e["test_accuracy"]]
            if ep:
                ax.plot(
                    [e["seconds"] for e in ep],
                    [e["test_accuracy"][test] for e in ep],
                    marker="o",
                    markersize=3,
                    label=name,
                )
        if peer_time:
            ax.axvline(peer_time, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("wall time (s, log scale)")
        ax.set_ylabel(f"test accuracy ({test})")
        ax.legend()
    fig.suptitle("Time to accuracy, same machine, same run")
    fig.tight_layout()
    fig.savefig(results_dir / f"time_to_accuracy{suffix}.png", dpi=150)
    plt.close(fig)
    print(text)
    return text


def targets(results, tests):
    """The issue's targets, each as met or not with the numbers."""
    ours = {
        k: v
        for k, v in results.items()
        if v.get("spec", {}).get("kind") == "recipe" and v.get("epochs")
    }
    out = []
    peer = results.get("peer", {})
    peer_time = peer.get("wall_seconds")
    first = tests[0] if tests else "offline"
    if peer_time and ours:
        best = max(
            ((_at(v["epochs"], seconds=peer_time) or {}).get(first, 0), k) for k, v in ours.items()
        )
        verdict = "met" if best[0] >= 0.85 else "not met"
        out.append(
            f"at least 85% (aim 88%) at the peer's {peer_time:.0f} s: {verdict}, {best[0]:.4f} "
            f"({best[1]}; the peer: {peer['epochs'][-1]['test_accuracy'].get(first, 0):.4f})"
        )
    anchor = results.get("airbench", {})
    if anchor.get("epochs") and ours:
        goal = anchor["epochs"][-1]["test_accuracy"][first]
        half = anchor["wall_seconds"] / 2
        times = [(_first_time(v["epochs"], first, goal), k) for k, v in ours.items()]
        times = [t for t in times if t[0] is not None]
        fastest = min(times) if times else None
        verdict = "met" if fastest and fastest[0] <= half else "not met"
        out.append(
            f"the anchor's final accuracy without TTA ({goal:.4f} in "
            f"{anchor['wall_seconds']:.0f} s) within half its time ({half:.0f} s): {verdict}"
            + (
                f", first reached at {fastest[0]:.0f} s by {fastest[1]}"
                if fastest
                else ", never reached"
            )
        )
    for test, level in (("offline", 0.915), ("lossless", 0.93)):
        if test not in tests or not ours:
            continue
        best = max(
            ((_at(v["epochs"], seconds=HOUR) or {}).get(test, 0), k) for k, v in ours.items()
        )
        verdict = "met" if best[0] >= level else "not met"
        out.append(
            f"at least {level:.1%} on {test} within 60 minutes: {verdict}, {best[0]:.4f} "
            f"({best[1]})"
        )
    over = [k for k, v in ours.items() if v.get("peak_rss_mb", 0) > 2.5 * 1024]
    peak = max((v.get("peak_rss_mb", 0) / 1024 for v in ours.values()), default=0)
    out.append(
        f"peak memory at most 2.5 GiB: {'not met, ' + ', '.join(over) if over else 'met'} "
        f"(largest {peak:.2f} GiB)"
    )
    return out


def _budget_for(spec, results):
    budget = spec.get("budget")
    if budget is None or isinstance(budget, (int, float)):
        return budget
    source = results.get(budget, {})
    if "wall_seconds" not in source:
        return None
    return source["wall_seconds"] * spec.get("share", 1.0)


def ship(name, save_dir, ship_to, results_dir=RESULTS):
    """Ships run `name`'s saved model as the project's model, with a model card from this benchmark.

    The model is `SAVE_DIR/NAME.keras`, saved by a full run with `--save-dir`; its facts
    (recipe, epochs, wall time, precision, hardware, versions, seed) come from that run's
    entry in `results_dir/time_to_accuracy.json`. The test sets are measured here again on
    the float32 copy that is shipped.

    Args:
        name: a recipe run of `RUNS`, e.g. "fast-60".
        save_dir: the `--save-dir` of the benchmark run.
        ship_to: folder of the shipped model and MODEL_CARD.md, e.g. "models".
        results_dir: folder of time_to_accuracy.json. Defaults to benchmarks/results.

    Returns:
        The shipped model's path.
    """
    from cifar_utils import data, load_model, shipping

    results_path = Path(results_dir) / "time_to_accuracy.json"
    if not results_path.exists():
        raise ValueError(
            f"no benchmark results at {results_path}: run the full benchmark with --save-dir first."
        )
    entry = json.loads(results_path.read_text())["runs"].get(name)
    if not entry or "recipe" not in entry or not entry.get("finished"):
        raise ValueError(
            f"{results_path.name} has no finished recipe run {name!r}; recipe runs: "
            f"{', '.join(n for n, s in RUNS.items() if s['kind'] == 'recipe')}."
        )
    source = Path(save_dir) / f"{name}.keras"
    if not source.exists():
        raise ValueError(
            f"{source} does not exist: the benchmark saves it when run with --save-dir {save_dir}."
        )
    run = {
        **entry["run"],
        "val_images": 0,
        "train_images": entry["train_images"],
        "epochs": len(entry["epochs"]),
        "train_seconds": entry["wall_seconds"],
        "precision": entry.get("precision"),
    }
    command = (
        f"python benchmarks/time_to_accuracy.py --save-dir {save_dir} (its {name} run), then "
        f"python benchmarks/time_to_accuracy.py --ship {name} --save-dir {save_dir} "
        f"--ship-to {ship_to}"
    )
    (_, _), (x_test, y_test), source_data = data.load_cifar10(verbose=False, return_source=True)
    target = shipping.ship_model(
        load_model(source, compile=False),
        ship_to,
        x_test,
        y_test,
        source_data.variant,
        command,
        saved={"run": run, "recipe": entry["recipe"]},
    )
    print(f"shipped {source} as {target} with its model card")
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", default=None, help="comma-separated names from: " + ", ".join(RUNS)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_IMAGES:,} images, 1 epoch: a smoke run"
    )
    parser.add_argument(
        "--save-dir", default=None, help="keep each recipe run's final model as SAVE_DIR/NAME.keras"
    )
    parser.add_argument(
        "--ship",
        default=None,
        metavar="NAME",
        help="instead of running: ship SAVE_DIR/NAME.keras of an earlier full run with a model "
        "card",
    )
    parser.add_argument("--ship-to", default="models", help="folder for --ship. Defaults to models")
    parser.add_argument(
        "--results-dir",
        default=str(RESULTS),
        help="folder for time_to_accuracy.{json,md,png}; give a partial run its own, to keep "
        "the committed full run. Defaults to benchmarks/results",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--budget-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    table = QUICK_RUNS if args.quick else RUNS
    if args.ship:
        if not args.save_dir:
            parser.error("--ship needs the --save-dir of the run that saved the model")
        try:
            ship(args.ship, args.save_dir, args.ship_to, args.results_dir)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.worker:
        _worker(
            args.worker,
            table[args.worker],
            args.seed,
            args.quick,
            args.out,
            args.budget_seconds,
            args.save_dir,
        )
        return 0
    names = args.runs.split(",") if args.runs else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; choose from {', '.join(table)}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        # With --save-dir each run's record is kept there as NAME.json, beside its model, so
        # that an invocation cut off before its end still leaves its finished runs to read.
        records = Path(args.save_dir) if args.save_dir else Path(tmp)
        records.mkdir(parents=True, exist_ok=True)
        for name in names:
            spec = table[name]
            budget = _budget_for(spec, results)
            if spec.get("budget") is not None and budget is None:
                print(
                    f"{name}: skipped, its budget comes from the {spec['budget']!r} run, "
                    "which has no wall time"
                )
                results[name] = {
                    "name": name,
                    "spec": spec,
                    "epochs": [],
                    "skipped": f"needs the {spec['budget']} run's time",
                }
                continue
            out = records / f"{name}.json"
            out.unlink(missing_ok=True)  # a record left by an earlier invocation is not this run's
            command = [
                sys.executable,
                __file__,
                "--worker",
                name,
                "--out",
                str(out),
                "--seed",
                str(args.seed),
            ]
            command += ["--quick"] if args.quick else []
            command += ["--save-dir", args.save_dir] if args.save_dir else []
            command += ["--budget-seconds", str(budget)] if budget is not None else []
            # A run past its budget by half is stuck: stop it and keep its finished epochs.
            limit = None if budget is None else budget * 1.5 + 300
            try:
                subprocess.run(command, timeout=limit, check=True)
            except subprocess.TimeoutExpired:
                print(f"{name}: stopped after {limit:.0f} s; epochs finished so far are kept")
            except subprocess.CalledProcessError as err:
                print(f"{name}: failed with exit status {err.returncode}")
            results[name] = (
                json.loads(out.read_text())
                if out.exists()
                else {"name": name, "spec": spec, "epochs": []}
            )
    report(results, args.quick, args.results_dir)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
