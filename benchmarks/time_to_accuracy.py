"""Test accuracy against wall time: our recipes and the TensorFlow tutorial CNN, one run.

    python benchmarks/time_to_accuracy.py                      # peer, fast, fast-short
    python benchmarks/time_to_accuracy.py --runs peer,fast --budget-min 80
    python benchmarks/time_to_accuracy.py --quick              # a smoke run in a minute

The peer is the model of TensorFlow's "Convolutional Neural Network" tutorial
exactly as published: Conv 32/64/64 (3x3, ReLU) with 2x2 max pooling, Dense 64,
Dense 10 logits, Adam, batch 32, 10 epochs, pixels / 255, trained on all 50,000
training images. Our recipes train on the 45,000-image training split (their
validation images come from the training set, never the test set).

Each run trains in its own process (so its peak memory is its own) and,
after every epoch, the test accuracy is measured outside the timed part:
the wall time counts building, training and validation, not the benchmark's
test evaluation. Results go to benchmarks/results/time_to_accuracy.{json,md,png}.
Accuracies are on the offline copy when CIFAR10_DIR points at it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# name -> how to train it. "recipe" runs cifar_utils.training.train with overrides.
RUNS = {
    "peer": {"kind": "peer", "epochs": 10},
    # The full fast recipe: the aims are 90% within the peer's time and 94% within 60 minutes.
    "fast": {"kind": "recipe", "recipe": "fast", "overrides": {}},
    # The fast recipe at half width for 4 epochs (notebook 04's full run): a shorter curve.
    "fast-short": {"kind": "recipe", "recipe": "fast",
                   "overrides": {"epochs": 4, "model_kwargs": {"widths": [32, 128, 128]}}},
}
QUICK_RUNS = {
    "peer": {"kind": "peer", "epochs": 1},
    "fast": {"kind": "recipe", "recipe": "fast",
             "overrides": {"epochs": 1, "model_kwargs": {"widths": [16, 32, 32]}}},
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _worker(name, spec, seed, quick, out_path, save_dir=None):
    """Trains one run in this process, writing its progress to `out_path` after each epoch."""
    import keras

    from cifar_utils import data, evaluation, reports, repro, training
    from cifar_utils.recipes import get_recipe

    t0 = time.perf_counter()
    (x_train, y_train), (x_test, y_test), source = data.load_cifar10(verbose=False, return_source=True)
    variant = source.variant
    if quick:
        x_train, y_train = data.stratified_subset(x_train, y_train, 2000, seed=seed)
        x_test, y_test = x_test[:1000], y_test[:1000]
    state = {"name": name, "spec": spec, "data": variant, "epochs": [], "train_images": 0,
             "test_images": len(x_test)}
    tta = False

    class Recorder(keras.callbacks.Callback):
        """Test accuracy after every epoch, with the evaluation's own time left out."""

        def __init__(self):
            super().__init__()
            self.eval_seconds = 0.0

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - t0 - self.eval_seconds
            start = time.perf_counter()
            acc = evaluation.accuracy(self.model, x_test, y_test, tta=tta)
            self.eval_seconds += time.perf_counter() - start
            state["epochs"].append({"epoch": epoch + 1, "seconds": seconds, "test_accuracy": acc})
            state["peak_rss_mb"] = _peak_rss_mb()
            Path(out_path).write_text(json.dumps(state))
            print(f"{name}: epoch {epoch + 1} at {seconds:.0f} s, test accuracy {acc:.4f}", flush=True)

    repro.set_seed(seed)
    if spec["kind"] == "peer":
        state["train_images"] = len(x_train)
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
        # The tutorial's pixels / 255. Its probabilities are softmax(logits), so the
        # argmax of the logits gives the same accuracy; evaluation divides as well.
        x_scaled = x_train / 255.0
        x_test = x_test / 255.0
        model.fit(x_scaled, y_train, epochs=spec["epochs"], batch_size=32, verbose=0,
                  callbacks=[Recorder()])
    else:
        recipe = get_recipe(spec["recipe"], **spec.get("overrides", {}))
        tta = recipe.tta
        (x_tr, y_tr), (x_val, y_val) = data.split_train_val(x_train, y_train, 0.1, seed=seed)
        state["train_images"] = len(x_tr)
        state["recipe"] = recipe.to_dict()
        with tempfile.TemporaryDirectory() as tmp:
            output_dir = Path(save_dir) / name if save_dir else Path(tmp)
            training.train(recipe, x_tr, y_tr, x_val, y_val, output_dir=output_dir, seed=seed,
                           verbose=0, callbacks=[Recorder()])
    state["run"] = reports.run_info(seed=seed)
    state["peak_rss_mb"] = _peak_rss_mb()
    state["finished"] = True
    Path(out_path).write_text(json.dumps(state))


def _time_to(epochs, target):
    for e in epochs:
        if e["test_accuracy"] >= target:
            return e["seconds"]
    return None


def _report(results, budget_s, quick):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cifar_utils.reports import hardware_text, versions_text
    from cifar_utils.storage import atomic_write_json, atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    peer = results.get("peer")
    peer_time = peer["epochs"][-1]["seconds"] if peer and peer["epochs"] else None
    rows = [
        "| run | epochs | wall time (s) | final test accuracy | time to 90% (s) | time to 94% (s) "
        "| peak memory (GB) | training images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ep = r["epochs"]
        if not ep:
            rows.append(f"| {name} | 0 | - | - | - | - | - | - |")
            continue
        t90, t94 = _time_to(ep, 0.90), _time_to(ep, 0.94)
        speed = r["train_images"] * len(ep) / ep[-1]["seconds"]
        rows.append(
            f"| {name} | {len(ep)}{'' if r.get('finished') else ' (stopped)'} | {ep[-1]['seconds']:.0f} "
            f"| {ep[-1]['test_accuracy']:.4f} | {'-' if t90 is None else round(t90)} "
            f"| {'-' if t94 is None else round(t94)} | {r['peak_rss_mb'] / 1024:.2f} | {speed:.0f} |"
        )
    run = next((r["run"] for r in results.values() if "run" in r), {})
    variant = next((r["data"] for r in results.values() if "data" in r), "?")
    n_test = next((r["test_images"] for r in results.values() if "test_images" in r), 0)
    lines = rows + [
        "",
        f"Test accuracy on the {variant} ({n_test:,} test images; recipes with tta=True use flip TTA). "
        "Wall time runs from the start of the worker (data loading included) to the end of each "
        "epoch, leaving out the benchmark's own test evaluations.",
        f"Hardware: {hardware_text(run)}; {versions_text(run)}; seed {run.get('seed')}; "
        f"{run.get('date')}; budget {budget_s / 60:.0f} min.",
    ]
    targets = []
    fast = {k: v for k, v in results.items() if k != "peer"}
    if peer_time is not None:
        hit = [k for k, v in fast.items() if (_time_to(v["epochs"], 0.90) or 1e18) <= peer_time]
        targets.append(
            f"90% within the peer's {peer_time:.0f} s: {'met by ' + ', '.join(hit) if hit else 'not met'}"
        )
    hit94 = [k for k, v in fast.items() if (_time_to(v["epochs"], 0.94) or 1e18) <= 3600]
    targets.append(f"94% within 60 minutes: {'met by ' + ', '.join(hit94) if hit94 else 'not met'}")
    over = [k for k, v in fast.items() if v.get("peak_rss_mb", 0) > 2.5 * 1024]
    targets.append(f"peak memory at most 2.5 GB: {'exceeded by ' + ', '.join(over) if over else 'met'}")
    lines += ["", "Targets: " + "; ".join(targets) + "."]
    atomic_write_text(RESULTS / f"time_to_accuracy{suffix}.md", "\n".join(lines) + "\n")
    atomic_write_json(RESULTS / f"time_to_accuracy{suffix}.json",
                      {"budget_s": budget_s, "targets": targets, "runs": results})

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        if r["epochs"]:
            ax.plot([e["seconds"] for e in r["epochs"]], [e["test_accuracy"] for e in r["epochs"]],
                    marker="o", label=name)
    for level in (0.90, 0.94):
        ax.axhline(level, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel(f"test accuracy ({variant})")
    ax.set_title("Time to accuracy, same machine, same run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"time_to_accuracy{suffix}.png", dpi=150)
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=None, help="comma-separated names from: " + ", ".join(RUNS))
    parser.add_argument("--budget-min", type=float, default=90.0, help="wall-time budget for all runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 images, 1 epoch each: a smoke run")
    parser.add_argument("--save-dir", default=None,
                        help="keep each recipe run's models and history in SAVE_DIR/NAME")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    table = QUICK_RUNS if args.quick else RUNS
    if args.worker:
        _worker(args.worker, table[args.worker], args.seed, args.quick, args.out, args.save_dir)
        return 0
    names = args.runs.split(",") if args.runs else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; choose from {', '.join(table)}")
    if args.budget_min <= 0:
        parser.error(f"--budget-min must be positive; received {args.budget_min}")
    deadline = time.monotonic() + args.budget_min * 60
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"{name}: skipped, the budget is spent")
                break
            try:
                subprocess.run(
                    [sys.executable, __file__, "--worker", name, "--out", str(out), "--seed", str(args.seed)]
                    + (["--quick"] if args.quick else [])
                    + (["--save-dir", args.save_dir] if args.save_dir else []),
                    timeout=left, check=True,
                )
            except subprocess.TimeoutExpired:
                print(f"{name}: stopped at the budget; epochs finished so far are kept")
            except subprocess.CalledProcessError as err:
                print(f"{name}: failed with exit status {err.returncode}")
            results[name] = json.loads(out.read_text()) if out.exists() else {"epochs": [], "name": name}
    _report(results, args.budget_min * 60, args.quick)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
