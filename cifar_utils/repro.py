"""Reproducibility: seeds, quick mode, and the facts recorded next to a result.

Every number the project reports carries the hardware, library versions,
seed and wall time it came from; `run_info()` gathers them in one dict.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys

QUICK_ENV_VAR = "CIFAR_QUICK"


def is_quick_mode() -> bool:
    """Returns True when `CIFAR_QUICK=1` asks for a small, fast run.

    Quick mode makes each notebook use a small subset and few epochs so that
    it finishes in minutes on two CPU cores while running every code path.
    """
    value = os.environ.get(QUICK_ENV_VAR, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{QUICK_ENV_VAR} must be 1 or 0; received {os.environ[QUICK_ENV_VAR]!r}.")


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras in one call.

    Args:
        seed: the seed.
        deterministic: also make TensorFlow's ops deterministic, so two runs
            on the same machine give identical weights (slightly slower on
            a GPU). Defaults to True.
    """
    import keras
    import tensorflow as tf

    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; received {seed!r}.")
    keras.utils.set_random_seed(seed)  # seeds `random`, NumPy, TensorFlow and Keras
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_info(seed=None, **extra) -> dict:
    """Collects the facts to record next to a measured number.

    Args:
        seed: the seed of the run. Defaults to None.
        **extra: further fields (epochs, wall time, data variant...).

    Returns:
        A JSON-serialisable dict: date, hardware (CPU model and cores, GPUs),
        Python, TensorFlow, Keras and NumPy versions, seed, and `extra`.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            gpus.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except (ValueError, RuntimeError):
            gpus.append(gpu.name)
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "gpus": gpus,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "seed": seed,
    }
    info.update(extra)
    return info
