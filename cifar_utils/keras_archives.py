"""Checks a `.keras` file before Keras reads it, so that a small hostile file cannot exhaust
memory or disk.

Keras's safe mode refuses code hidden in a model file, but not size: a 200 KB file whose
`config.json` holds a 200 MB layer name, a weights member of almost 4 GiB, extra members
that Keras extracts to the temporary folder, or a 3 KB configuration that declares a
3072 x 100,000 Dense layer all make `keras.saving.load_model` allocate gigabytes.
`check_keras_archive` reads only the zip directory and the small JSON members, and refuses
such a file in one line that names it and the limit, before anything is extracted:

    check_keras_archive("models/fast_net.keras")   # raises ValueError, or returns None

`storage.load_model` calls it. The limits are far above what the course's models need (the
shipped model: 28 KB of configuration, 8 MB of weights, 2.1 million parameters).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

# The members Keras 3 writes for a model without assets; nothing else is accepted.
MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
MAX_MEMBER_BYTES = {  # uncompressed
    "metadata.json": 64 * 2**10,
    "config.json": 4 * 2**20,
    "model.weights.h5": 512 * 2**20,
}
MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights; the shipped model has 2.1 million
MAX_JSON_DEPTH = 200  # nesting of the configuration (a functional model inside one: about 12)


def check_keras_archive(path) -> None:
    """Refuses a `.keras` file that is not a model of sane size, before Keras opens it.

    Checks, from the zip's directory: exactly the members `MEMBERS`, each within its
    `MAX_MEMBER_BYTES`, with intact checksums; then from `config.json`: JSON nested at most
    `MAX_JSON_DEPTH` deep, declaring at most `MAX_PARAMETERS` weights.

    Args:
        path: the `.keras` file.

    Raises:
        ValueError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_members(path, infos)
            bad = archive.testzip()  # reads each member once, within the sizes checked above
            if bad is not None:
                raise ValueError(f"{path}: member {bad} is damaged (bad checksum)")
            config = archive.read("config.json")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as err:
        raise ValueError(
            f"{path} is not a readable .keras file ({type(err).__name__}: {err})"
        ) from None
    config = _parse_config(path, config)
    try:
        parameters = count_declared_parameters(config)
    except ValueError as err:
        raise ValueError(f"{path}: {err}; refusing to build it") from None
    if parameters > MAX_PARAMETERS:
        raise ValueError(
            f"{path}: its configuration declares about {parameters:,} weights, over the limit of "
            f"{MAX_PARAMETERS:,} (keras_archives.MAX_PARAMETERS); refusing to build it"
        )


def _check_members(path, infos):
    names = [info.filename for info in infos]
    unexpected = sorted(set(names) - set(MEMBERS))
    if unexpected or len(names) != len(set(names)):
        shown = ", ".join(repr(n[:80]) for n in unexpected[:3]) or "a duplicated member"
        raise ValueError(
            f"{path}: not a .keras model file: it holds {shown}; expected {', '.join(MEMBERS)}"
        )
    missing = [name for name in MEMBERS if name not in names]
    if missing:
        raise ValueError(f"{path}: not a .keras model file: {', '.join(missing)} missing")
    for info in infos:
        limit = MAX_MEMBER_BYTES[info.filename]
        if info.file_size > limit:
            raise ValueError(
                f"{path}: {info.filename} is {info.file_size:,} bytes uncompressed, over the "
                f"limit of {limit:,} (keras_archives.MAX_MEMBER_BYTES)"
            )


def _parse_config(path, raw: bytes):
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path}: config.json is not valid JSON ({type(err).__name__})") from None
    if _depth(config) > MAX_JSON_DEPTH:
        raise ValueError(f"{path}: config.json is nested over {MAX_JSON_DEPTH} levels deep")
    return config


def _depth(node) -> int:
    """The nesting depth of parsed JSON, without recursion (json.loads has its own limit)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


# Weights per (inputs + units + 1) x units of a recurrent layer: one set per gate.
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1, "ConvLSTM2D": 4}


def count_declared_parameters(config) -> int:
    """An estimate of the weights a Keras model configuration declares.

    Every layer configuration counts by the input size Keras will build it for, its
    `build_config`'s last dimension: a layer with `units`, `filters` or `output_dim`
    `prod(kernel_size) x inputs x width x depth_multiplier + width` (a recurrent layer its
    gates times `(inputs + width + 1) x width`), a layer without one (normalisation) four
    weights per input channel. `input_dim` (Embedding) counts as the inputs.

    Raises:
        ValueError: a layer declares a width but no input size: Keras would take it from a
            tensor this estimate cannot see, so the file is refused (Keras 3 writes
            `build_config` for every layer it has built).
    """
    total, stack = 0, [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        layer = node.get("config")
        if "class_name" not in node or not isinstance(layer, dict):
            continue
        total += _layer_weights(node, layer)
    return total


def _layer_weights(node, layer) -> int:
    width = _number(layer.get("units") or layer.get("filters") or layer.get("output_dim"))
    inputs = _number(layer.get("input_dim")) or _built_inputs(node)
    if not width:
        return 4 * inputs  # normalisation: scale, shift, mean and variance per channel
    if not inputs:
        raise ValueError(
            f"layer {str(layer.get('name'))[:80]!r} ({str(node.get('class_name'))[:40]}) declares "
            f"{width:,} units but not the input size it is built for"
        )
    gates = RECURRENT_GATES.get(str(node.get("class_name")))
    if gates:
        return gates * (inputs + width + 1) * width
    kernel = layer.get("kernel_size", 1)
    if isinstance(kernel, list):
        kernel = math.prod(max(_number(k), 1) for k in kernel)
    multiplier = max(_number(layer.get("depth_multiplier", 1)), 1)
    return max(_number(kernel), 1) * inputs * width * multiplier + width


def _built_inputs(node) -> int:
    shape = (node.get("build_config") or {}).get("input_shape")
    if isinstance(shape, list) and shape and isinstance(shape[0], list):
        shape = shape[0]  # a layer of several inputs: the first one's
    return _number(shape[-1]) if isinstance(shape, list) and shape else 0


def _number(value) -> int:
    """A non-negative whole number from JSON, else 0 (a crafted config may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(int(value), 0)
