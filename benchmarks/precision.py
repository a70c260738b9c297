"""Training step time of the fast recipe by precision on this machine: float32, mixed_bfloat16,
oneDNN's rewrite.

    python benchmarks/precision.py          # about 3 minutes on 2 cores

Three ways to run the same steps (batch 256, the fast recipe's optimiser and
augmentation), each in its own process:

- `float32`: Keras's float32 policy.
- `mixed_bfloat16`: Keras's mixed policy (bfloat16 arithmetic, float32 weights):
  what `device.setup_devices()` chooses on CPUs with AVX512_BF16 or AMX.
- `onednn-auto-bf16`: the float32 model, with TensorFlow's graph rewrite that
  lets oneDNN run eligible ops in bfloat16 by itself
  (`auto_mixed_precision_onednn_bfloat16`).

Accuracy at equal wall time is in `recipe_ablation.md` (runs "lookahead" and
"float32"). Results go to benchmarks/results/precision.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("float32", "mixed_bfloat16", "onednn-auto-bf16")
WIDTHS = {"full": [64, 256, 256], "half": [32, 128, 128]}


def _worker(mode, steps):
    import numpy as np
    import tensorflow as tf

    from cifar_utils import budget, device
    from cifar_utils.recipes import get_recipe

    if mode == "onednn-auto-bf16":
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    policy = "mixed_bfloat16" if mode == "mixed_bfloat16" else "float32"
    setup = device.setup_devices(mixed_precision=policy, verbose=False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2048, 32, 32, 3), dtype=np.uint8)
    y = np.arange(2048) % 10
    out = {}
    for name, widths in WIDTHS.items():
        recipe = get_recipe("fast", model_kwargs={"widths": widths})
        out[name] = budget.measure_step_seconds(recipe, x, y, setup=setup, steps=steps, warmup=3)
    print(json.dumps(out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per width (median kept)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.steps)
        return 0
    from cifar_utils import device, reports
    from cifar_utils.storage import atomic_write_json, atomic_write_text

    results = {}
    for mode in MODES:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", mode, "--steps", str(args.steps)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            results[mode] = {
                "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
            }
        else:
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(mode, results[mode], flush=True)
    run = reports.run_info()
    base = results.get("float32", {})
    rows = [
        "| precision | full width: ms per step (images/s) | half width: ms per step (images/s) "
        "| speed-up, full / half |",
        "|---|---|---|---|",
    ]
    for mode, r in results.items():
        if "error" in r:
            rows.append(f"| {mode} | failed: {r['error']} | | |")
            continue
        cells = [f"{r[w] * 1000:.0f} ({256 / r[w]:.0f})" for w in WIDTHS]
        speed = " / ".join(f"{base[w] / r[w]:.2f}x" if w in base else "-" for w in WIDTHS)
        rows.append(f"| {mode} | {cells[0]} | {cells[1]} | {speed} |")
    flags = sorted(f for f in device.cpu_flags() if "bf16" in f or f.startswith("amx"))
    lines = rows + [
        "",
        f"The fast recipe's training step (batch 256, median of {args.steps} after 3 warm-up "
        f"steps), by precision. CPU bfloat16 flags: {', '.join(flags) or 'none'}.",
        f"Hardware: {reports.hardware_text(run)}; {reports.versions_text(run)}; {run.get('date')}.",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "precision.md", "\n".join(lines) + "\n")
    atomic_write_json(
        RESULTS / "precision.json", {"run": run, "steps": args.steps, "results": results}
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
