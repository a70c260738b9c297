r"""What each airbench change to the fast recipe is worth here: validation accuracy and wall time.

    python benchmarks/recipe_ablation.py                  # half width, 4 epochs per run (~20 min)
    python benchmarks/recipe_ablation.py --epochs 2 --runs base,init
    python benchmarks/recipe_ablation.py --runs lookahead --epochs 5 \
        --out-name recipe_ablation_relu5

Each run adds one change to the one before it (cumulative), trains the fast
recipe on the 45,000-image training split and measures accuracy on the
5,000 validation images taken from the training set (never the test set).
"multicrop" re-evaluates the previous run's model with airbench's multi-crop
TTA; "gelu" and "float32" each change one thing of the "lookahead" run (which is
the fast recipe as it was), and the runs from "whiten-bias" on add, one at a time,
what airbench94's source has that the recipe lacked:

    python benchmarks/recipe_ablation.py --runs lookahead,gelu,whiten-bias,bias-decay,bn-eps,\
        batch-1024 --out-name recipe_ablation_airbench94
Results go to benchmarks/results/recipe_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (the run it changes, recipe overrides it adds, dtype policy). Applied in order.
RUNS = {
    "base": (
        None,
        {
            "augmentation": "standard",
            "lookahead_steps": 0,
            "tta": True,
            "model_kwargs": {"init": "keras", "dirac": False, "activation": "relu"},
        },
    ),
    "init": ("base", {"model_kwargs": {"init": "pytorch", "dirac": True}}),
    "airbench-aug": ("init", {"augmentation": "airbench"}),
    "lookahead": ("airbench-aug", {"lookahead_steps": 5}),
    "multicrop": ("lookahead", {"tta": "multicrop"}),  # evaluation only: same model
    "gelu": ("lookahead", {"model_kwargs": {"activation": "gelu"}}),
    "float32": ("lookahead", {}),
    # What airbench94 has that the fast recipe lacked (a line-by-line reading of its source),
    # each added to the one before, from "gelu":
    # its whitening layer's bias, trained for the first 3 of 9.9 epochs (here the same
    # share of --epochs: WHITENING_BIAS_SHARE), then frozen;
    "whiten-bias": ("gelu", {"whitening_bias_epochs": None}),
    # weight decay on batch-norm shifts and that bias too, at the weights' rate;
    "bias-decay": ("whiten-bias", {"decay_biases": True}),
    # batch norm's epsilon of 1e-12 instead of 1e-5;
    "bn-eps": ("bias-decay", {"model_kwargs": {"batch_norm_epsilon": 1e-12}}),
    # batches of 1,024 with the learning rate scaled by 4 (airbench's batch; a quarter of
    # the steps).
    "batch-1024": ("bn-eps", {"batch_size": 1024, "learning_rate": 1.5}),
}
WHITENING_BIAS_SHARE = 3 / 9.9  # airbench94 trains the whitening bias for 3 of its 9.9 epochs


def _overrides(name):
    parent, changes = RUNS[name]
    merged = _overrides(parent) if parent else {}
    kwargs = {**merged.get("model_kwargs", {}), **changes.get("model_kwargs", {})}
    return {**merged, **changes, "model_kwargs": kwargs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", default=",".join(RUNS), help="comma-separated names from: " + ", ".join(RUNS)
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--widths", default="32,128,128", help="channels of the three groups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out-name",
        default="recipe_ablation",
        help="results file name (without suffix) in benchmarks/results",
    )
    args = parser.parse_args(argv)
    names = args.runs.split(",")
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; choose from {', '.join(RUNS)}")
    widths = [int(w) for w in args.widths.split(",")]

    import keras

    from cifar_utils import data, device, evaluation, reports, training
    from cifar_utils.recipes import get_recipe
    from cifar_utils.storage import atomic_write_json, atomic_write_text

    (x, y), _, source = data.load_cifar10(verbose=False, return_source=True)
    (x_train, y_train), (x_val, y_val) = data.split_train_val(x, y, 0.1, seed=args.seed)
    results, models = {}, {}
    for name in names:
        overrides = _overrides(name)
        overrides["model_kwargs"]["widths"] = widths
        if overrides.get("whitening_bias_epochs", 0) is None:
            overrides["whitening_bias_epochs"] = max(1, round(WHITENING_BIAS_SHARE * args.epochs))
        recipe = get_recipe("fast", epochs=args.epochs, **overrides)
        policy = "float32" if name == "float32" else "mixed_bfloat16"
        if name == "multicrop" and "lookahead" in models:
            model, seconds = models["lookahead"], results["lookahead"]["train_seconds"]
        else:
            keras.backend.clear_session()
            setup = device.setup_devices(mixed_precision=policy, verbose=False)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                result = training.train(
                    recipe,
                    x_train,
                    y_train,
                    x_val,
                    y_val,
                    output_dir=tmp,
                    seed=args.seed,
                    setup=setup,
                    verbose=0,
                )
                seconds = time.perf_counter() - start
            model = models[name] = result.model
        changes = dict(RUNS[name][1])
        if "whitening_bias_epochs" in changes:  # the epochs it resolved to
            changes["whitening_bias_epochs"] = recipe.whitening_bias_epochs
        results[name] = {
            "changes": changes,
            "precision": policy,
            "train_seconds": seconds,
            "val_accuracy": evaluation.accuracy(model, x_val, y_val),
            "val_accuracy_tta": evaluation.accuracy(model, x_val, y_val, tta=recipe.tta),
            "tta": recipe.tta,
            "recipe": recipe.to_dict(),
        }
        print(
            f"{name}: {seconds:.0f} s, validation {results[name]['val_accuracy']:.4f}, "
            f"with {recipe.tta} TTA {results[name]['val_accuracy_tta']:.4f}",
            flush=True,
        )
    run = reports.run_info(seed=args.seed, epochs=args.epochs)
    rows = [
        "| run | adds | precision | wall time (s) | validation accuracy | with TTA (kind) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        adds = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
        rows.append(
            f"| {name} | {adds} | {r['precision']} | {r['train_seconds']:.0f} "
            f"| {r['val_accuracy']:.4f} | {r['val_accuracy_tta']:.4f} ({r['tta']}) |"
        )
    lines = rows + [
        "",
        f"Fast recipe at widths {widths}, {args.epochs} epochs, {len(x_train):,} training images, "
        f"accuracy on the {len(x_val):,} validation images split from the {source.variant}'s "
        "training set. Each run adds its change to the run it names; wall time is the whole "
        "train() call.",
        f"Hardware: {reports.hardware_text(run)}; {reports.versions_text(run)}; seed {args.seed}; "
        f"{run.get('date')}.",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.out_name}.md", "\n".join(lines) + "\n")
    atomic_write_json(
        RESULTS / f"{args.out_name}.json", {"run": run, "widths": widths, "results": results}
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
