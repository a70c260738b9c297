"""Inference speed and accuracy of each export format, against plain Keras, in one run.

    python benchmarks/inference.py [--model models/fast_net.keras] [--ship models]

Exports the model to every format in `cifar_utils.export.EXPORTS` (int8
calibrated on 500 training images, never test images), then measures for each,
through `inference.Classifier`: test accuracy on the offline copy, agreement
with the Keras model, batched throughput (images per second, batches of 256,
best of 3 passes after a warm-up pass) and single-image latency (median of 100
calls). The peer is plain Keras: `model.predict(x, batch_size=256)`, timed the
same way (`timing.best_time`) in the same run, on the same prepared float32
images: ours run through `inference.measure_speed`, which prepares the images
once before timing and then times `Classifier.predict_prepared`, so neither
side pays per-image checks inside the timing. Target (#6): at least 2,000
images per second batched on the CPU for the shipped model, and int8 within
0.5 points of the float accuracy.

Writes benchmarks/results/inference.json and inference.md; `--ship DIR` also
copies the int8 file next to the shipped model (DIR/fast_net_int8.tflite).
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cifar_utils import data, export, reports, storage, timing
from cifar_utils.paths import SHIPPED_MODEL

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_IMAGES_PER_SECOND = 2000
TARGET_INT8_POINTS = 0.5


def keras_peer_speed(model, x, batch_size, repeats=3):
    """Plain Keras `model.predict`, in images per second: best of `repeats` passes.

    Timed exactly as `inference.measure_speed` times our formats: one untimed
    warm-up pass, then the fastest of `repeats` passes (`timing.best_time`)
    over `x`, float32 images prepared before any timing.
    """
    return len(x) / timing.best_time(
        lambda: model.predict(x, batch_size=batch_size, verbose=0), repeats=repeats, warmup=1
    )


def write_int8_card(path, args, result, table):
    """A model card for the shipped int8 file, next to it."""
    run, row = result["run"], table.loc["tflite_int8"]
    storage.atomic_write_text(
        path,
        f"""# fast_net_int8.tflite

The int8 LiteRT (TFLite) export of `{Path(args.model).name}`, for fast CPU inference:
`cifar-predict --model models/fast_net_int8.tflite IMAGE...` or
`cifar-demo --model models/fast_net_int8.tflite`.

| | |
|---|---|
| input | float32 (N, 32, 32, 3), raw pixels 0-255 (normalised inside) |
| output | probabilities over {", ".join(data.CLASS_NAMES)} |
"""
        "| quantisation | weights and activations int8, ranges calibrated on 500 training images "
        f"(seed {args.seed}); float input and output |\n"
        f"| test accuracy ({result['data']}, {result['test_images']:,} images) "
        f"| {row.accuracy:.4f} ({row.accuracy_change:+.2f} points against the Keras model, "
        f"{table.loc['keras', 'accuracy']:.4f}) |\n"
        f"| top-1 agreement with the Keras model | {row.agreement:.4f} |\n"
        f"| speed on {reports.hardware_text(run)} | {row.images_per_second:,.0f} images/s "
        f"in batches of {args.batch_size}; {row.latency_ms:.2f} ms for one image "
        f"(Keras: {table.loc['keras', 'images_per_second']:,.0f} images/s) |\n"
        f"""| file size | {row.size_mb:.2f} MB |
| versions | {reports.versions_text(run)} |
| date | {run["date"]} |

Reproduce: `python benchmarks/inference.py --ship models` (results in
benchmarks/results/inference.md).
""",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=str(SHIPPED_MODEL), help="a .keras model (default: shipped)"
    )
    parser.add_argument(
        "--speed-images", type=int, default=2048, help="images for the throughput (default 2048)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="images per batch (default 256)"
    )
    parser.add_argument(
        "--test-images", type=int, default=10000, help="test images for accuracy (default all)"
    )
    parser.add_argument(
        "--ship", default=None, help="copy the int8 export here as fast_net_int8.tflite"
    )
    parser.add_argument("--seed", type=int, default=0, help="which calibration images (default 0)")
    args = parser.parse_args(argv)

    wall = time.perf_counter()
    (x_train, y_train), (x_test, y_test), source = data.load_cifar10(
        verbose=False, return_source=True
    )
    (x_fit, _), _ = data.split_train_val(x_train, y_train)  # calibrate on training images only
    x_test, y_test = x_test[: args.test_images], y_test[: args.test_images]
    model = storage.load_model(args.model)  # safe mode, custom layers passed explicitly

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export_paths = export.export_all(model, tmp, representative_images=x_fit, seed=args.seed)
        export_s = time.perf_counter() - start
        table = export.compare_formats(
            export_paths, x_test, y_test, speed_images=args.speed_images, batch_size=args.batch_size
        )
        if args.ship:
            shipped = Path(args.ship) / "fast_net_int8.tflite"
            shutil.copyfile(export_paths["tflite_int8"], shipped)
            print("int8 model copied to", shipped)
    # Fair comparison: the peer gets the very float32 array our formats were timed on
    # (measure_speed prepares x_test[:speed_images] once, untimed, then times only the
    # model), with the same warm-up and best-of-3 (timing.best_time).
    peer = keras_peer_speed(model, x_test[: args.speed_images].astype("float32"), args.batch_size)

    int8 = table.loc["tflite_int8"]
    best_format = table["images_per_second"].idxmax()
    result = {
        "benchmark": "inference",
        "model": str(args.model),
        "data": source.variant,  # "offline copy" or "official"
        "test_images": len(x_test),
        "speed_images": args.speed_images,
        "batch_size": args.batch_size,
        "export_s": export_s,
        "formats": table.reset_index().to_dict(orient="records"),
        "peer_keras_predict_images_per_second": peer,
        "targets": {
            "images_per_second": TARGET_IMAGES_PER_SECOND,
            "best_format": best_format,
            "best_images_per_second": float(table["images_per_second"].max()),
            "images_per_second_met": bool(
                table["images_per_second"].max() >= TARGET_IMAGES_PER_SECOND
            ),
            "int8_points": TARGET_INT8_POINTS,
            "int8_accuracy_change": float(int8["accuracy_change"]),
            "int8_met": bool(abs(int8["accuracy_change"]) <= TARGET_INT8_POINTS),
        },
        "run": reports.run_info(seed=args.seed, wall_s=time.perf_counter() - wall),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps(result, indent=2) + "\n")

    run = result["run"]
    lines = [
        "| format | size (MB) | test accuracy | change (points) | top-1 agreement | max prob. diff "
        f"| images/s (batch {args.batch_size}) | latency, 1 image (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fmt, row in table.iterrows():
        lines.append(
            f"| {fmt} | {row.size_mb:.2f} | {row.accuracy:.4f} | {row.accuracy_change:+.2f} "
            f"| {row.agreement:.4f} | {row.max_prob_diff:.3f} | {row.images_per_second:,.0f} "
            f"| {row.latency_ms:.2f} |"
        )
    lines.append(f"| peer: Keras `model.predict` | | | | | | {peer:,.0f} | |")
    lines += [
        "",
        f"Model {Path(args.model).name}; accuracy on {len(x_test):,} test images "
        f"({source.describe_variant()}); "
        f"int8 calibrated on 500 training images (seed {args.seed}). "
        f"{reports.hardware_text(run)}; {reports.versions_text(run)}; "
        f"wall time {run['wall_s']:.0f} s; {run['date']}.",
        "",
        f"Targets: >= {TARGET_IMAGES_PER_SECOND:,} images/s batched: "
        f"{'met' if result['targets']['images_per_second_met'] else 'MISSED'} "
        f"({best_format}, {result['targets']['best_images_per_second']:,.0f}); int8 within "
        f"{TARGET_INT8_POINTS} points: {'met' if result['targets']['int8_met'] else 'MISSED'} "
        f"({int8['accuracy_change']:+.2f}).",
    ]
    (RESULTS / "inference.md").write_text("\n".join(lines) + "\n")
    if args.ship:
        write_int8_card(Path(args.ship) / "fast_net_int8.md", args, result, table)
    print("\n".join(lines))
    return 0 if result["targets"]["images_per_second_met"] and result["targets"]["int8_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
