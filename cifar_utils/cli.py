"""The `cifar-train` command: train a recipe, and optionally ship its model.

    cifar-train --recipe fast --budget-min 10 --ship models
    python -m cifar_utils.cli --recipe fast          # the same without the console script

It parses its arguments, calls `training.train` (and `shipping.ship_model`), and turns a
bad argument or a diverged run into one line on stderr and an exit status (2: bad
arguments; 1: the run diverged), never a traceback. The other two commands live beside
what they run: `cifar-predict` is `inference.main`, `cifar-demo` is `web.main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifar_utils import data, device, paths, repro
from cifar_utils.budget import check_budget_min
from cifar_utils.recipes import RECIPES, get_recipe
from cifar_utils.runs import RunInUse, RunSettingsChanged
from cifar_utils.shipping import ship_model
from cifar_utils.training import TrainingDiverged, train


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cifar-train", description="Train a CIFAR-10 recipe.")
    parser.add_argument("--recipe", default="fast", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument(
        "--budget-min",
        type=float,
        default=None,
        metavar="N",
        help="train for at most N minutes: measure this machine on the first steps, "
        "then choose epochs (and the fast network's widths) to fit",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--data-dir", default=None, help="defaults to $CIFAR10_DIR, then Keras")
    parser.add_argument(
        "--output-dir",
        default=None,
        help="defaults to RUNS/RECIPE, RUNS being $CIFAR_OUTPUT_DIR or the repository's runs/",
    )
    parser.add_argument(
        "--ship",
        default=None,
        metavar="DIR",
        help="copy the final model to DIR/ARCH.keras with a model card, "
        "after one evaluation on the test set",
    )
    return parser


def train_main(argv=None) -> int:
    """`cifar-train`: train a recipe from the command line, optionally ship the model."""
    parser = _train_parser()
    args = parser.parse_args(argv)
    if args.budget_min is not None and args.epochs is not None:
        parser.error(
            "--budget-min chooses the epochs itself; pass --epochs or --budget-min, not both"
        )
    if not 0 < args.val_fraction < 1:
        parser.error(
            f"--val-fraction must be between 0 and 1 (exclusive); received {args.val_fraction}"
        )
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    output_dir = Path(args.output_dir) if args.output_dir else paths.runs_dir() / args.recipe
    try:
        recipe = get_recipe(args.recipe, **({} if args.epochs is None else {"epochs": args.epochs}))
        repro.check_seed(args.seed, "--seed")
        if args.budget_min is not None:
            check_budget_min(args.budget_min)  # now, not after loading the data
        output_dir.mkdir(parents=True, exist_ok=True)  # a file in the way, no permission
        # First, before any other TensorFlow work: a TF_CONFIG cluster's strategy must start first.
        setup = device.setup_devices()
    except ValueError as err:
        parser.error(str(err))
    except OSError as err:
        parser.error(f"cannot write the run into {output_dir}: {err.strerror or err}")
    try:
        (x, y), (x_test, y_test), source = data.load_cifar10(args.data_dir, return_source=True)
    except data.CIFAR10DataError as err:
        parser.exit(2, f"cifar-train: error: {err}\n")
    (x_train, y_train), (x_val, y_val) = data.split_train_val(
        x, y, args.val_fraction, seed=args.seed
    )
    try:
        result = train(
            recipe,
            x_train,
            y_train,
            x_val,
            y_val,
            output_dir=output_dir,
            seed=args.seed,
            setup=setup,
            budget_min=args.budget_min,
        )
    except TrainingDiverged as err:
        print(f"cifar-train: {err}", file=sys.stderr)
        return 1
    except (RunInUse, RunSettingsChanged) as err:  # the folder is busy, or holds another run
        parser.exit(2, f"cifar-train: error: {err}\n")
    except OSError as err:  # a full disk, a folder gone: the backup so far is kept
        print(f"cifar-train: {err.strerror or err}", file=sys.stderr)
        return 1
    print(
        f"trained {recipe.name}: best validation accuracy {result.run['best_val_accuracy']:.4f}, "
        f"{result.run['train_seconds']:.0f} s; files in {result.output_dir}"
    )
    if args.ship and not device.worker_folder(setup.strategy):  # across machines, the chief ships
        command = " ".join(["cifar-train"] + list(argv if argv is not None else sys.argv[1:]))
        target = ship_model(
            result.model,
            args.ship,
            x_test,
            y_test,
            source.variant,
            command,
            run_dir=result.output_dir,
            x_val=x_val,
            y_val=y_val,
        )
        print(f"shipped {target}; see {target.parent / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
