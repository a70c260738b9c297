"""Device placement: one code path for the CPU, one GPU or several GPUs, on every backend.

`setup_devices()` is the one call a notebook makes before building a model.
On TensorFlow it turns on GPU memory growth, picks a `tf.distribute` strategy
(`MirroredStrategy` over several GPUs, the default strategy otherwise), and
chooses mixed precision where the hardware computes it natively: GPUs with
tensor cores, and CPUs with bfloat16 instructions (AVX512_BF16 or AMX), where
oneDNN's bfloat16 convolutions train the fast recipe about 1.5 times faster
at the same accuracy (`benchmarks/recipe_ablation.py`). Other CPUs stay
float32. XLA stays off on CPUs. With a `TF_CONFIG`
cluster of several workers it trains across machines
(`MultiWorkerMirroredStrategy`). Every GPU setting can be forced on the CPU
(`mixed_precision="mixed_float16"`, `jit_compile=True`), which is how the
tests rehearse the GPU path on machines without one.

On JAX and PyTorch (`KERAS_BACKEND`, see `cifar_utils.backend`) it finds the GPUs
through that library, chooses the same mixed precision for them, and trains on one
device (`SingleDevice`: Keras places everything on the first GPU, or the CPU).
JAX compiles every step with XLA; PyTorch runs eagerly by default (its
`torch.compile` is opt-in: `jit_compile=True`). The CPU's bfloat16 is chosen on
TensorFlow only: the measured speed-up is oneDNN's (README, "Backends").
`tf.distribute` (several GPUs, `TF_CONFIG` clusters, TPUs) needs TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
from dataclasses import dataclass

import keras

from cifar_utils import backend, paths


class SingleDevice:
    """The "strategy" of JAX and PyTorch: one device, chosen by the backend.

    It has what the course uses of a `tf.distribute.Strategy`: `scope()` (which
    does nothing) and `num_replicas_in_sync` (1).
    """

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


@dataclass(frozen=True)
class DeviceSetup:
    """What `setup_devices` chose.

    Attributes:
        strategy: the `tf.distribute.Strategy` to build and fit models under
            (`SingleDevice` on JAX and PyTorch).
        precision_policy: the Keras dtype policy now global ("float32",
            "mixed_float16" or "mixed_bfloat16").
        jit_compile: whether to compile models with XLA (True on one GPU).
        description: one line naming the devices, for printing.
        augment_in_model: whether `train` runs the fast recipe's augmentation inside
            the model, compiled with the step (`augment.build_augmentation`), instead
            of in the data pipeline. Defaults to False.
    """

    strategy: object
    precision_policy: str
    jit_compile: bool
    description: str
    augment_in_model: bool = False

    @property
    def num_replicas(self) -> int:
        """Number of devices a batch is split across."""
        return self.strategy.num_replicas_in_sync


def physical_gpus() -> list:
    """The GPUs the backend can use: TensorFlow's physical devices, JAX's devices, or
    PyTorch's device indices."""
    current = backend.name()
    if current == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    if current == "torch":
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    if current != "tensorflow":
        return []  # Keras's NumPy backend: the CPU only
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _gpu_details(gpu) -> dict:
    """`{"device_name": ..., "compute_capability": (major, minor)}` as far as known."""
    current = backend.name()
    if current == "jax":
        capability = str(getattr(gpu, "compute_capability", ""))  # "9.0" on CUDA
        details = {"device_name": gpu.device_kind}
        if capability.replace(".", "").isdigit():  # not ROCm's "gfx90a"
            details["compute_capability"] = tuple(int(p) for p in capability.split("."))
        return details
    if current == "torch":
        import torch

        return {
            "device_name": torch.cuda.get_device_name(gpu),
            "compute_capability": tuple(torch.cuda.get_device_capability(gpu)),
        }
    import tensorflow as tf

    try:
        return tf.config.experimental.get_device_details(gpu)
    except (ValueError, RuntimeError):  # no details for this device type
        return {}


def gpu_names(with_capability=False) -> list:
    """The names of the GPUs the backend can use, one per GPU.

    Args:
        with_capability: add each GPU's compute capability, as in
            "NVIDIA H100 (compute 9.0)". Defaults to False.

    Returns:
        A list of strings; empty without a GPU.
    """
    names = []
    for gpu in physical_gpus():
        details = _gpu_details(gpu)
        name = details.get("device_name", getattr(gpu, "name", str(gpu)))
        cc = details.get("compute_capability")
        names.append(f"{name} (compute {cc[0]}.{cc[1]})" if cc and with_capability else name)
    return names


def describe_devices() -> str:
    """Returns one line naming the CPU, the GPUs the backend can use, and the backend.

    Example: `"CPU: 2 cores (x86_64) | GPU: none | TensorFlow 2.21.0, Keras 3.15.1"`.
    """
    cpu = f"CPU: {os.cpu_count()} cores ({platform.machine()})"
    names = gpu_names(with_capability=True)
    if names:
        gpu_text = f"GPU: {len(names)} x " + ", ".join(sorted(set(names)))
    else:
        gpu_text = "GPU: none"
    return f"{cpu} | {gpu_text} | {backend.describe()}, Keras {keras.__version__}"


def enable_memory_growth() -> int:
    """Lets TensorFlow take GPU memory as needed instead of all at start-up.

    Must run before the GPUs are first used; afterwards TensorFlow refuses and
    the setting is left as it was. JAX and PyTorch manage their own memory (JAX:
    `XLA_PYTHON_CLIENT_PREALLOCATE=false` before it starts): nothing is done there.

    Returns:
        The number of GPUs now set to grow their memory.
    """
    if not backend.is_tensorflow():
        return 0
    import tensorflow as tf

    done = 0
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            done += 1
        except RuntimeError:  # GPUs already initialised
            pass
    return done


# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic: AVX-512 BF16 (Zen 4,
# Cooper Lake and later Xeons) and AMX (Sapphire Rapids and later).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> frozenset:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo; empty elsewhere.

    Returns:
        A frozenset of flag names such as "avx512f" or "avx512_bf16".
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:  # not Linux, or /proc not mounted
        pass
    return frozenset()


def cpu_bfloat16_flags() -> list:
    """The flags of `BF16_CPU_FLAGS` this CPU has, e.g. ["avx512_bf16"] (reads /proc/cpuinfo)."""
    flags = cpu_flags()
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def cpu_has_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512_BF16 or AMX): mixed_bfloat16 pays off."""
    return bool(cpu_bfloat16_flags())


def mixed_precision_policy(gpus=None, cpu_bf16=None) -> str:
    """Chooses the dtype policy the hardware supports best.

    Args:
        gpus: the physical GPUs to choose for. Defaults to None: those
            the backend lists (`physical_gpus`).
        cpu_bf16: the CPU's bfloat16 flags, consulted only without GPUs.
            Defaults to None: `cpu_bfloat16_flags()` on TensorFlow, none on JAX and
            PyTorch (README, "Backends").

    Returns:
        With GPUs: "mixed_bfloat16" where every GPU has compute capability 8.0
        or more (Ampere, Hopper: bfloat16 needs no loss scaling),
        "mixed_float16" on 7.x (Volta, Turing tensor cores), "float32" below.
        On the CPU alone: "mixed_bfloat16" where it has AVX512_BF16 or AMX
        (`cpu_has_bfloat16`), "float32" otherwise (emulated bfloat16 is slower).
    """
    if gpus is None:
        gpus = physical_gpus()
    if gpus:
        lowest = min(_gpu_details(g).get("compute_capability", (0, 0)) for g in gpus)
        if lowest >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if lowest >= (7, 0) else "float32"
    if cpu_bf16 is None:  # the CPU's bfloat16 pays off through TensorFlow's oneDNN
        cpu_bf16 = cpu_bfloat16_flags() if backend.is_tensorflow() else ()
    return "mixed_bfloat16" if cpu_bf16 else "float32"


def choose_strategy(devices=None):
    """Picks a distribution strategy (TensorFlow; `SingleDevice` on other backends).

    Args:
        devices: device names to replicate over, e.g. `["/gpu:0", "/gpu:1"]`.
            Defaults to None: every logical GPU.

    Returns:
        A `MirroredStrategy` over two or more devices (the same object on every
        call with the same devices), a `OneDeviceStrategy` for one explicitly
        named device, or the default strategy otherwise (one GPU or the CPU,
        placed by TensorFlow). On JAX and PyTorch, `SingleDevice()` for no or one
        device; several devices need TensorFlow (ValueError).
    """
    if not backend.is_tensorflow():
        if devices is not None and len(list(devices)) > 1:
            raise ValueError(
                f"training over several devices ({list(devices)}) uses tf.distribute, and Keras "
                f"runs on {backend.name()} (one device, the first GPU): run with "
                "KERAS_BACKEND=tensorflow."
            )
        return SingleDevice()
    import tensorflow as tf

    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if len(devices) < 2:
            return tf.distribute.get_strategy()
    devices = list(devices)
    if len(devices) == 0:
        raise ValueError("devices must name at least one device; received an empty list.")
    if len(devices) == 1:
        return tf.distribute.OneDeviceStrategy(devices[0])
    return _mirrored_strategy(tuple(devices))


# One strategy per process and set of devices. A second MirroredStrategy over the same devices
# starts its collective keys where the first did, and its all-reduces then fail ("Shape mismatch
# in the collective instance") once a notebook trains a second model; TensorFlow also allows only
# one MultiWorkerMirroredStrategy per process.
@functools.cache
def _mirrored_strategy(devices: tuple):
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices=list(devices))


@functools.cache
def _multi_worker_strategy():
    if not backend.is_tensorflow():
        raise ValueError(
            f"TF_CONFIG names a cluster of several workers, which needs tf.distribute, and Keras "
            f"runs on {backend.name()}; run with KERAS_BACKEND=tensorflow, or unset TF_CONFIG."
        )
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def cluster_workers() -> int:
    """Number of workers, a chief included, in the `TF_CONFIG` cluster of this process.

    `TF_CONFIG` is the JSON that `tf.distribute` reads to train across
    machines, e.g. `{"cluster": {"worker": ["host1:12345", "host2:12345"]},
    "task": {"type": "worker", "index": 0}}` (README, "Several machines").

    Returns:
        The number of "chief" and "worker" tasks it lists; 0 when
        `TF_CONFIG` is unset or names none.

    Raises:
        ValueError: when `TF_CONFIG` is not such a JSON object.
    """
    raw = paths.tf_config()
    if not raw:
        return 0
    try:
        config = json.loads(raw)
        cluster = config.get("cluster", {})
        workers = cluster.get("chief", []) + cluster.get("worker", [])
        task = config.get("task", {})
    except (ValueError, AttributeError, TypeError) as err:
        raise ValueError(
            'TF_CONFIG must be a JSON object like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}; received {raw[:200]!r} ({err}).'
        ) from None
    if not isinstance(workers, list) or (workers and not isinstance(task, dict)):
        raise ValueError(
            f"TF_CONFIG: cluster.worker must be a list and task an object; received {raw[:200]!r}."
        )
    return len(workers)


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` trains across several machines (a `TF_CONFIG` cluster)."""
    if not backend.is_tensorflow():
        return False
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(cluster.get("chief", [])) + len(cluster.get("worker", [])) > 1


def worker_folder(strategy) -> str:
    """The sub-folder a worker of a cluster writes its files into; "" for the chief.

    The chief is the "chief" task, or worker 0 in a cluster without one; on
    one machine (any other strategy) the process is its own chief.
    """
    if not is_multi_worker(strategy):
        return ""
    resolver = strategy.cluster_resolver
    has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
    if resolver.task_type == "chief" or (not has_chief and resolver.task_id == 0):
        return ""
    return f"{resolver.task_type}{resolver.task_id}"


def setup_devices(
    mixed_precision="auto",
    memory_growth=True,
    devices=None,
    jit_compile="auto",
    strategy=None,
    augment_in_model="auto",
    verbose=True,
):
    """Configures Keras's backend for the hardware at hand.

    Args:
        mixed_precision: "auto" (the policy of `mixed_precision_policy()`),
            True (same, but insist: ValueError without a suitable GPU), False
            (float32), or a Keras policy name. Defaults to "auto". A policy
            name forces it anywhere, the CPU included: the tests rehearse
            the GPU path this way.
        memory_growth: enable GPU memory growth. Defaults to True.
        devices: passed to `choose_strategy`. Defaults to None (all GPUs).
        jit_compile: compile with XLA: "auto" (TensorFlow: on one GPU only:
            XLA is slower on CPUs, where it skips oneDNN's convolutions, and
            cannot compile a step that spans several replicas; JAX: always, as
            JAX compiles every step; PyTorch: off, torch.compile is opt-in),
            True (ValueError with several replicas) or False. Defaults to "auto".
        strategy: a `tf.distribute.Strategy` to use as it is, e.g. a
            `TPUStrategy` (README, "TPUs"). Defaults to None: a
            `MultiWorkerMirroredStrategy` when `TF_CONFIG` lists two or more
            workers (call this first thing in the program then, before any
            other TensorFlow work), else `choose_strategy(devices)`.
        augment_in_model: where `train` augments the fast recipe's images: "auto"
            (inside the model, compiled with the step, on a GPU under JAX or PyTorch,
            whose pipeline is NumPy on the CPU and would keep the GPU waiting; in the
            pipeline otherwise: `tf.data` on TensorFlow, and on a CPU, where the
            pipeline keeps airbench's alternating flip), True or False. Defaults to "auto".
        verbose: print the chosen setup. Defaults to True.

    Returns:
        A `DeviceSetup` with the strategy, the dtype policy (also set as Keras's
        global policy), whether to use XLA, and a one-line description.
    """
    for name, value in (("jit_compile", jit_compile), ("augment_in_model", augment_in_model)):
        if value not in ("auto", True, False):
            raise ValueError(f"{name} must be 'auto', True or False; received {value!r}.")
    workers = cluster_workers() if strategy is None else 0  # a bad TF_CONFIG changes nothing
    if workers >= 2 and not backend.is_tensorflow():
        _multi_worker_strategy()  # refuses, before the global policy changes
    if devices is not None and strategy is None and not backend.is_tensorflow():
        choose_strategy(devices)  # refuses what this backend cannot do, before the policy changes
    if memory_growth:
        enable_memory_growth()
    gpus = physical_gpus()
    # /proc/cpuinfo read once per call; the CPU's bfloat16 pays off through TensorFlow's oneDNN
    cpu_bf16 = [] if gpus or not backend.is_tensorflow() else cpu_bfloat16_flags()
    policy = _precision_policy(mixed_precision, gpus, cpu_bf16)
    keras.mixed_precision.set_global_policy(policy)
    if strategy is None:
        strategy = _multi_worker_strategy() if workers >= 2 else choose_strategy(devices)
    jit_compile = _use_xla(jit_compile, strategy, gpus)
    description = describe_devices()
    if policy == "mixed_bfloat16" and cpu_bf16:
        description += " | bfloat16: the CPU has " + ", ".join(f.upper() for f in cpu_bf16)
    if augment_in_model == "auto":
        augment_in_model = bool(gpus) and not backend.is_tensorflow()
    setup = DeviceSetup(strategy, policy, jit_compile, description, augment_in_model)
    if verbose:
        where = "in the model" if augment_in_model else "in the pipeline"
        print(
            f"{setup.description}\nStrategy: {type(strategy).__name__} "
            f"({setup.num_replicas} replica(s)) | precision: {policy} | XLA: {setup.jit_compile}"
            f" | augmentation: {where}"
        )
    return setup


def _precision_policy(mixed_precision, gpus, cpu_bf16) -> str:
    """The policy `setup_devices(mixed_precision=...)` sets, for these GPUs and CPU flags."""
    if mixed_precision is True:  # insists on a GPU's mixed precision: the CPU's does not count
        policy = mixed_precision_policy(gpus, cpu_bf16=())
        if policy == "float32":
            raise ValueError(
                "mixed_precision=True needs a GPU with compute capability 7.0 or more; "
                f"received devices: {describe_devices()}. Use mixed_precision='auto'."
            )
        return policy
    if mixed_precision is False:
        return "float32"
    if mixed_precision == "auto":
        return mixed_precision_policy(gpus, cpu_bf16)
    if isinstance(mixed_precision, str):  # a Keras policy name, forced anywhere
        return mixed_precision
    raise ValueError(
        "mixed_precision must be 'auto', True, False or a policy name; "
        f"received {mixed_precision!r}."
    )


def _use_xla(jit_compile, strategy, gpus) -> bool:
    """Whether `setup_devices(jit_compile=...)` compiles with XLA under `strategy`."""
    # Keras compiles the whole step, all replicas included, as one XLA program, and XLA
    # cannot reach variables on other devices: XLA needs a single replica.
    single = strategy.num_replicas_in_sync == 1
    if jit_compile is True and not single:
        raise ValueError(
            f"jit_compile=True needs one replica; received a {type(strategy).__name__} with "
            f"{strategy.num_replicas_in_sync}. XLA compiles Keras's whole training step and cannot "
            "use variables on several devices: use jit_compile='auto' (off with several replicas)."
        )
    if jit_compile == "auto":
        if backend.name() == "jax":
            return True  # JAX compiles every step with XLA; without it each op runs alone
        if backend.name() == "torch":
            return False  # torch.compile recompiles per batch shape; opt in with True
        return single and bool(gpus)  # XLA is slower on CPUs: on one GPU only
    return jit_compile


@contextlib.contextmanager
def dtype_policy_scope(setup=None):
    """Runs a block under a device setup's dtype policy, then puts Keras's global policy back.

    Args:
        setup: a `DeviceSetup`. Defaults to None: `setup_devices(verbose=False)`,
            called inside the scope (it sets the global policy itself).

    Yields:
        The `DeviceSetup` in use.
    """
    previous = keras.config.dtype_policy()
    try:
        setup = setup or setup_devices(verbose=False)
        keras.config.set_dtype_policy(setup.precision_policy)
        yield setup
    finally:
        keras.config.set_dtype_policy(previous)
