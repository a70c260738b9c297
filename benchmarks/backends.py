"""Which Keras backend trains the fast recipe fastest on this machine, and to what accuracy.

    python benchmarks/backends.py              # TensorFlow, JAX, PyTorch; about 20 min, 2 cores
    python benchmarks/backends.py --quick      # a smoke run in a few minutes
    python benchmarks/backends.py --runs tensorflow,jax --python jax=/path/to/python

Every run is the same call, `training.train` on the fast recipe at widths 32/128/128 for
2 epochs (seed 0, 45,000 training images, 5,000 held out for validation), each in its own
process with its own Python: TensorFlow from this one; JAX and PyTorch from the
environments without TensorFlow that `scripts/test_backends.sh` makes (.cache/venv-jax,
.cache/venv-torch), or the `--python NAME=PATH` given. Each backend takes the precision
and compilation `device.setup_devices()` chooses for it (TensorFlow: mixed_bfloat16 on a CPU
with AVX512_BF16 or AMX; JAX: float32 with XLA; PyTorch: float32, eager); `jax-bfloat16`
forces mixed_bfloat16 on JAX, to see whether the CPU's bfloat16 pays there too;
`tensorflow-in-model` moves the augmentation into the model as `train` does on a GPU under
JAX or PyTorch (random flips in place of alternating flip), to measure what that costs:

    python benchmarks/backends.py --runs tensorflow,tensorflow-in-model \
        --results-name backends_augment_in_model

Recorded per run: the whole train() call's wall time, each epoch's seconds (the first
includes tracing or compilation), validation accuracy, test accuracy on the offline copy
and on the lossless first 1,000 official test images (no TTA), and peak memory (VmHWM).
Results go to benchmarks/results/backends{,_quick}.{json,md} (or `--results-name`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# run name -> (KERAS_BACKEND, forced precision or None: setup_devices' choice, augmentation
# inside the model (random flips, as on a GPU) instead of the pipeline's alternating flip)
RUNS = {
    "tensorflow": ("tensorflow", None, False),
    "jax": ("jax", None, False),
    "torch": ("torch", None, False),
    "jax-bfloat16": ("jax", "mixed_bfloat16", False),
    "tensorflow-in-model": ("tensorflow", None, True),
}
RECIPE = {"name": "fast", "widths": [32, 128, 128], "epochs": 2}
QUICK = {"name": "fast", "widths": [16, 32, 32], "epochs": 1, "images": 2_000}
RUN_TIMEOUT = 1_800  # seconds: a backend slower than this is recorded as such


def _peak_memory_gib() -> float:
    """This process's peak resident memory (VmHWM), in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def worker(run: str, quick: bool, seed: int, out: Path) -> None:
    """Trains the recipe on this process's backend and writes the record to `out`."""
    start = time.perf_counter()
    import keras

    from cifar_utils import data, device, evaluation, reports, training
    from cifar_utils.recipes import get_recipe

    spec = QUICK if quick else RECIPE
    fast = get_recipe("fast")
    recipe = get_recipe(
        spec["name"],
        epochs=spec["epochs"],
        model_kwargs={**fast.model_kwargs, "widths": spec["widths"]},
    )
    (x, y), (x_test, y_test) = data.load_cifar10()
    if quick:
        x, y, x_test, y_test = (
            x[: spec["images"]],
            y[: spec["images"]],
            x_test[:1000],
            y_test[:1000],
        )
    (x_train, y_train), (x_val, y_val) = data.split_train_val(x, y, seed=seed)
    _, precision, in_model = RUNS[run]
    setup = device.setup_devices(
        mixed_precision=precision if precision else "auto", augment_in_model=in_model, verbose=False
    )
    epochs = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epochs.append(round(time.perf_counter() - self.began, 2))

    with tempfile.TemporaryDirectory() as tmp:
        train_start = time.perf_counter()
        result = training.train(
            recipe,
            x_train,
            y_train,
            x_val,
            y_val,
            output_dir=Path(tmp) / "run",
            seed=seed,
            setup=setup,
            verbose=0,
            callbacks=[EpochClock()],
            checkpoints=False,
        )
        train_seconds = time.perf_counter() - train_start
    model = result.model
    lossless = data.load_lossless_test_sample()
    record = {
        "name": run,
        "backend": keras.backend.backend(),
        "precision": setup.precision_policy,
        "jit_compile": setup.jit_compile,
        "augmentation_in_model": result.run["augmentation_in_model"],
        "recipe": result.recipe.to_dict(),
        "train_call_seconds": round(train_seconds, 1),
        "epoch_seconds": epochs,
        "val_accuracy": round(float(result.history["val_accuracy"][-1]), 4),
        "test_accuracy": round(evaluation.accuracy(model, x_test, y_test), 4),
        "lossless_accuracy": round(
            evaluation.accuracy(model, lossless, y_test[: len(lossless)]), 4
        ),
        "peak_memory_gib": round(_peak_memory_gib(), 2),
        "worker_seconds": round(time.perf_counter() - start, 1),
        "run": reports.run_info(seed=seed, epochs=spec["epochs"], data="offline copy"),
    }
    out.write_text(json.dumps(record))


def _python_for(backend: str, given: dict) -> str | None:
    """The Python that runs `backend`: given, this one (TensorFlow), or its test environment."""
    if backend in given:
        return given[backend]
    if backend == "tensorflow":
        return sys.executable
    candidate = ROOT / ".cache" / f"venv-{backend}" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def report(results: list, quick: bool) -> str:
    """The Markdown table of the runs, with their facts."""
    lines = [
        "| run | backend | precision | XLA | train() s | epoch s (first includes compiling) "
        "| validation | test (offline copy) | lossless first 1,000 | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} | | | | | | | | |")
            continue
        epochs = ", ".join(f"{s:.0f}" for s in r["epoch_seconds"])
        lines.append(
            f"| {r['name']} | {r['backend']} | {r['precision']} | {r['jit_compile']} "
            f"| {r['train_call_seconds']:.0f} | {epochs} "
            f"| {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | {r['lossless_accuracy']:.4f} "
            f"| {r['peak_memory_gib']:.2f} |"
        )
    done = [r for r in results if "error" not in r]
    spec = QUICK if quick else RECIPE
    text = "\n".join(lines) + "\n\n"
    text += (
        f"The fast recipe at widths {spec['widths']}, {spec['epochs']} epoch(s), one process per "
        "run, one after the other; each backend with setup_devices' choice of precision and XLA "
        "unless the run's name says otherwise.\n"
    )
    if done:
        from cifar_utils import reports

        run = done[0]["run"]
        text += f"Hardware: {reports.hardware_text(run)}; seed {run['seed']}; {run['date']}.\n"
        for r in done:
            text += f"- {r['name']}: {reports.versions_text(r['run'])}\n"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="tensorflow,jax,torch,jax-bfloat16")
    parser.add_argument("--quick", action="store_true", help="a smoke run in a few minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--python", action="append", default=[], metavar="BACKEND=PATH")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--results-name", default="backends", help="file name of the results (default backends)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.quick, args.seed, args.out)
        return 0
    if not args.results_name or Path(args.results_name).name != args.results_name:
        parser.error(
            f"--results-name must be a file name, no folders; received {args.results_name!r}"
        )
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; known: {', '.join(RUNS)}")
    given = dict(item.split("=", 1) for item in args.python if "=" in item)
    results = []
    for run in runs:
        backend = RUNS[run][0]
        python = _python_for(backend, given)
        if python is None:
            results.append(
                {
                    "name": run,
                    "error": f"no Python with {backend}: run "
                    f"scripts/test_backends.sh {backend} first, or pass --python",
                }
            )
            print(f"backends: {run}: skipped ({results[-1]['error']})", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "record.json"
            command = [
                python,
                __file__,
                "--worker",
                run,
                "--out",
                str(out),
                "--seed",
                str(args.seed),
            ] + (["--quick"] if args.quick else [])
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
            print(f"backends: {run} ...", flush=True)
            try:
                subprocess.run(command, env=env, check=True, timeout=RUN_TIMEOUT)
                results.append(json.loads(out.read_text()))
            except subprocess.TimeoutExpired:
                results.append({"name": run, "error": f"did not finish in {RUN_TIMEOUT} s"})
            except subprocess.CalledProcessError as err:
                results.append({"name": run, "error": f"failed (exit {err.returncode})"})
        print(f"backends: {run}: {json.dumps(results[-1])[:300]}", flush=True)
    from cifar_utils.storage import atomic_write_json, atomic_write_text

    suffix = "_quick" if args.quick else ""
    args.results_dir.mkdir(parents=True, exist_ok=True)
    text = report(results, args.quick)
    atomic_write_text(args.results_dir / f"{args.results_name}{suffix}.md", text)
    atomic_write_json(args.results_dir / f"{args.results_name}{suffix}.json", {"runs": results})
    print(text)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
