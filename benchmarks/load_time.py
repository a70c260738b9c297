"""How long loading CIFAR-10 takes, ours against Keras's reader, in the same run.

    python benchmarks/load_time.py [--data-dir DIR] [--repeats 5]

The peer is the body of `keras.datasets.cifar10.load_data()` after its download
step: Keras's own restricted-unpickler `load_batch` over the same six files, then
the same transposition. (`load_data` itself cannot be pointed at a local folder:
it re-extracts its cached archive, checked by hash, on every call.) Target:
`load_cifar10` takes at most 2 s once the files exist.

Writes benchmarks/results/load_time.json and load_time.md.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from keras.src.datasets.cifar import load_batch  # imported here so no timing includes it

from cifar_utils import data, reports, timing

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 2.0


def keras_peer(folder: Path):
    """What keras.datasets.cifar10.load_data() does once the archive is extracted.

    It returns transposed views (not C-contiguous): the NHWC copy is paid later,
    when TensorFlow converts the array. `keras_peer_contiguous` pays it here, as
    `load_cifar10` does.
    """
    x_train = np.empty((50000, 3, 32, 32), dtype="uint8")
    y_train = np.empty((50000,), dtype="uint8")
    for i in range(1, 6):
        s = slice((i - 1) * 10000, i * 10000)
        x_train[s], y_train[s] = load_batch(str(folder / f"data_batch_{i}"))
    x_test, y_test = load_batch(str(folder / "test_batch"))
    return (x_train.transpose(0, 2, 3, 1), y_train.reshape(-1, 1)), (
        x_test.transpose(0, 2, 3, 1),
        np.reshape(y_test, (-1, 1)),
    )


def keras_peer_contiguous(folder: Path):
    (x_train, y_train), (x_test, y_test) = keras_peer(folder)
    return (np.ascontiguousarray(x_train), y_train), (np.ascontiguousarray(x_test), y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="defaults to $CIFAR10_DIR")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1; received {args.repeats}")
    source = data.locate_cifar10(args.data_dir)
    if source.path is None:
        sys.exit("No local CIFAR-10 copy: set CIFAR10_DIR or pass --data-dir.")

    # No warm-up: the first call (cold file cache) is part of the report.
    ours = timing.call_times(
        lambda: data.load_cifar10(source.path, verbose=False), args.repeats, warmup=0
    )
    peer = timing.call_times(lambda: keras_peer(source.path), args.repeats, warmup=0)
    peer_c = timing.call_times(lambda: keras_peer_contiguous(source.path), args.repeats, warmup=0)
    # Same arrays from both readers.
    (a, b), (c, d) = data.load_cifar10(source.path, verbose=False)
    (pa, pb), (pc, pd) = keras_peer(source.path)
    assert all(np.array_equal(u, v) for u, v in ((a, pa), (b, pb), (c, pc), (d, pd)))

    result = {
        "benchmark": "load_time",
        "data": source.variant,  # "offline copy" or "official"
        "repeats": args.repeats,
        "cifar_utils_load_cifar10_s": {
            "first": ours[0],
            "median": statistics.median(ours),
            "all": ours,
        },
        "keras_load_batch_peer_s": {
            "first": peer[0],
            "median": statistics.median(peer),
            "all": peer,
        },
        "keras_load_batch_peer_contiguous_s": {
            "first": peer_c[0],
            "median": statistics.median(peer_c),
            "all": peer_c,
        },
        "target_s": TARGET_S,
        "meets_target": max(ours) <= TARGET_S,
        "run": reports.run_info(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load_time.json").write_text(json.dumps(result, indent=2) + "\n")
    run = result["run"]
    table = "\n".join(
        [
            "| reader | first call (s) | median (s) | max (s) |",
            "|---|---|---|---|",
            f"| cifar_utils.data.load_cifar10 | {ours[0]:.2f} | {statistics.median(ours):.2f} "
            f"| {max(ours):.2f} |",
            f"| Keras load_batch (peer; strided views) | {peer[0]:.2f} "
            f"| {statistics.median(peer):.2f} | {max(peer):.2f} |",
            f"| Keras load_batch (peer) + contiguous copy | {peer_c[0]:.2f} "
            f"| {statistics.median(peer_c):.2f} | {max(peer_c):.2f} |",
            "",
            f"{args.repeats} repeats; data: {result['data']}; {reports.hardware_text(run)}; "
            f"{reports.versions_text(run)}; {run['date']}.",
        ]
    )
    (RESULTS / "load_time.md").write_text(table + "\n")
    print(table)
    print("target (max <= 2 s):", "met" if result["meets_target"] else "MISSED")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
