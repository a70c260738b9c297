"""The fast recipe on a GPU under JAX, beside airbench94 on the same machine and data.

    KERAS_BACKEND=jax python benchmarks/gpu_time_to_accuracy.py \\
        --anchor ../shared/gpu/anchor_gpu.py --anchor-runs 5
    KERAS_BACKEND=jax python benchmarks/gpu_time_to_accuracy.py --quick --no-anchor  # CPU rehearsal

Made for the GPU machine this project can borrow (one NVIDIA H200; PyTorch and JAX, no
TensorFlow: README, "Backends"). Our run is `training.train` on the fast recipe as it is
(airbench94's widths 64/256/256, 10 epochs, on all 50,000 training images, seed 0),
under `device.setup_devices()`'s choice for the GPU (mixed_bfloat16, XLA, airbench's shifts
and random flips inside the model: `augment.build_augmentation`). Recorded: each
epoch's wall time (the clock stops while the test set is evaluated after every epoch),
the compilation time (the first epoch's time less the median of the others: JAX compiles
the training step during its first batch), training time with and without it, and test
accuracy per epoch on the offline copy (no TTA), then flip and multicrop TTA and the
lossless first 1,000. The anchor is run by its own script (`--anchor`, airbench 0.1.8's code
unchanged, `../shared/gpu/anchor_gpu.py`), in its own process, and its JSON lines are kept.
Results go to benchmarks/results/gpu_time_to_accuracy{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def fast_run(quick: bool, seed: int) -> dict:
    """Trains the fast recipe, evaluating the test set after every epoch off the clock."""
    import keras

    from cifar_utils import data, device, evaluation, reports, training
    from cifar_utils.recipes import get_recipe

    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = data.load_cifar10()
    recipe = get_recipe("fast")
    if quick:  # a rehearsal: a small network on a slice of the data
        recipe = get_recipe(
            "fast", epochs=2, model_kwargs={**recipe.model_kwargs, "widths": [16, 32, 32]}
        )
        x_train, y_train, x_test, y_test = (
            x_train[:2048],
            y_train[:2048],
            x_test[:1000],
            y_test[:1000],
        )
    # The augmentation in the model, compiled with the step, as train() does on a GPU under
    # JAX (asked for, so that the CPU rehearsal runs the same path).
    setup = device.setup_devices(verbose=False, augment_in_model=True)
    epochs, paused = [], [0.0]

    class PerEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.began
            stop = time.perf_counter()
            accuracy = evaluation.accuracy(self.model, x_test, y_test, batch_size=2000)
            paused[0] += time.perf_counter() - stop
            epochs.append(
                {
                    "epoch": epoch + 1,
                    "seconds": round(seconds, 3),
                    "test_accuracy": round(accuracy, 4),
                }
            )
            print(f"gpu: epoch {epoch + 1}: {seconds:.2f} s, {accuracy:.4f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        train_start = time.perf_counter()
        result = training.train(
            recipe,
            x_train,
            y_train,
            None,
            None,
            output_dir=Path(tmp) / "run",
            seed=seed,
            setup=setup,
            verbose=0,
            callbacks=[PerEpoch()],
            checkpoints=False,
        )
        train_call = time.perf_counter() - train_start - paused[0]
    model = result.model
    seconds = [e["seconds"] for e in epochs]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    compile_seconds = max(seconds[0] - steady, 0.0)
    lossless = data.load_lossless_test_sample()
    return {
        "name": "fast (Keras on JAX)",
        "device": setup.description,
        "precision": setup.precision_policy,
        "jit_compile": setup.jit_compile,
        "augmentation_in_model": result.run["augmentation_in_model"],
        "recipe": result.recipe.to_dict(),
        "epochs": epochs,
        "compile_seconds": round(compile_seconds, 2),
        "training_seconds": round(sum(seconds), 2),
        "training_seconds_without_compile": round(sum(seconds) - compile_seconds, 2),
        "train_call_seconds": round(train_call, 2),
        "test_accuracy": epochs[-1]["test_accuracy"],
        "flip_tta": round(evaluation.accuracy(model, x_test, y_test, tta=True), 4),
        "multicrop_tta": round(evaluation.accuracy(model, x_test, y_test, tta="multicrop"), 4),
        "lossless_accuracy": round(evaluation.accuracy(model, lossless, y_test[:1000]), 4),
        "lossless_flip_tta": round(
            evaluation.accuracy(model, lossless, y_test[:1000], tta=True), 4
        ),
        "whole_run_seconds": round(time.perf_counter() - start - paused[0], 1),
        "run": reports.run_info(seed=seed, data="offline copy"),
    }


def anchor_runs(script: Path, runs: int) -> list:
    """airbench's own script on this machine: its JSON lines (training time, accuracies)."""
    from cifar_utils import data, paths

    batches, png = data.locate_cifar10().path, paths.lossless_sample()
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, str(script), str(batches), str(png), str(runs)],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def report(fast: dict, anchor: list) -> str:
    lines = [
        f"Fast recipe, Keras {fast['run']['keras']} on {fast['run'].get('backend')} "
        f"{fast['run'].get('backend_version')}, {fast['device']}, {fast['precision']}, "
        f"XLA {fast['jit_compile']}, augmentation in the model "
        f"{fast.get('augmentation_in_model')}; seed {fast['run']['seed']}; {fast['run']['date']}.",
        "",
        "| epoch | seconds | test accuracy (offline copy) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {e['epoch']} | {e['seconds']:.2f} | {e['test_accuracy']:.4f} |" for e in fast["epochs"]
    ]
    lines += [
        "",
        f"Compilation {fast['compile_seconds']:.1f} s; training {fast['training_seconds']:.1f} s "
        f"({fast['training_seconds_without_compile']:.1f} s without compilation); the whole run "
        f"{fast['whole_run_seconds']:.1f} s (evaluations excluded). "
        f"Flip TTA {fast['flip_tta']:.4f}, multicrop {fast['multicrop_tta']:.4f}; "
        "lossless first 1,000 "
        f"{fast['lossless_accuracy']:.4f} (flip TTA {fast['lossless_flip_tta']:.4f}).",
    ]
    if anchor:
        lines += ["", "airbench on the same machine (its script's JSON lines):", ""]
        lines += [f"    {json.dumps(a)}" for a in anchor]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small rehearsal (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anchor", type=Path, help="airbench's script (anchor_gpu.py)")
    parser.add_argument("--anchor-runs", type=int, default=5)
    parser.add_argument("--no-anchor", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.no_anchor and (args.anchor is None or not args.anchor.exists()):
        parser.error("give airbench's script with --anchor PATH, or --no-anchor")
    fast = fast_run(args.quick, args.seed)
    anchor = [] if args.no_anchor else anchor_runs(args.anchor, args.anchor_runs)
    from cifar_utils.storage import atomic_write_json, atomic_write_text

    suffix = "_quick" if args.quick else ""
    args.results_dir.mkdir(parents=True, exist_ok=True)
    text = report(fast, anchor)
    atomic_write_text(args.results_dir / f"gpu_time_to_accuracy{suffix}.md", text)
    atomic_write_json(
        args.results_dir / f"gpu_time_to_accuracy{suffix}.json", {"fast": fast, "anchor": anchor}
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
