"""cifar_utils.device on the CPU, the MirroredStrategy path with two logical CPUs."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_utils import custom_objects, device  # noqa: F401  registers ScaledBias for loading

NO_GPU = not tf.config.list_physical_devices("GPU")


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_description_is_one_line():
    text = device.describe_devices()
    assert "\n" not in text and text.startswith("CPU: ") and f"TensorFlow {tf.__version__}" in text


NO_BF16 = frozenset({"fpu", "sse2", "avx2", "avx512f"})
WITH_BF16 = NO_BF16 | {"avx512_bf16"}


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
def test_cpu_only_setup_stays_float32_without_xla(capsys, monkeypatch):
    monkeypatch.setattr(device, "cpu_flags", lambda: NO_BF16)
    setup = device.setup_devices()
    assert "GPU: none" in setup.description
    assert setup.precision_policy == "float32" and not setup.jit_compile
    assert setup.num_replicas == 1
    assert keras.mixed_precision.global_policy().name == "float32"
    assert "Strategy: " in capsys.readouterr().out
    assert device.mixed_precision_policy() == "float32"
    assert device.enable_memory_growth() == 0


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_cpu_with_bfloat16_instructions_trains_in_mixed_bfloat16(capsys, monkeypatch, flag):
    monkeypatch.setattr(device, "cpu_flags", lambda: NO_BF16 | {flag})
    assert device.cpu_has_bfloat16()
    assert device.mixed_precision_policy() == "mixed_bfloat16"
    setup = device.setup_devices()
    assert (
        setup.precision_policy == "mixed_bfloat16" and not setup.jit_compile
    )  # XLA stays off on CPUs
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert (
        f"bfloat16: the CPU has {flag.upper()}" in setup.description
        and "\n" not in setup.description
    )
    assert "precision: mixed_bfloat16" in capsys.readouterr().out
    # False still means float32, and True still insists on a GPU.
    assert device.setup_devices(mixed_precision=False, verbose=False).precision_policy == "float32"
    with pytest.raises(ValueError, match="compute capability 7.0"):
        device.setup_devices(mixed_precision=True, verbose=False)


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
def test_setup_reads_the_cpu_flags_once(monkeypatch):
    reads = []
    monkeypatch.setattr(device, "cpu_flags", lambda: reads.append(1) or WITH_BF16)
    setup = device.setup_devices(verbose=False)
    assert setup.precision_policy == "mixed_bfloat16" and "AVX512_BF16" in setup.description
    assert len(reads) == 1


def test_mixed_precision_policy_chooses_for_the_hardware_it_is_given(monkeypatch):
    """One precision choice: setup_devices hands it the GPUs and CPU flags it already read."""
    monkeypatch.setattr(device, "cpu_flags", lambda: pytest.fail("/proc/cpuinfo read again"))
    gpus = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
    choices = [((9, 0), "mixed_bfloat16"), ((7, 5), "mixed_float16"), ((6, 1), "float32")]
    for capability, policy in choices:
        details = {"compute_capability": capability}
        monkeypatch.setattr(device, "_gpu_details", lambda gpu, d=details: d)
        assert device.mixed_precision_policy(gpus) == policy
        assert device.mixed_precision_policy(gpus, cpu_bf16=["amx_bf16"]) == policy  # GPUs decide
    assert device.mixed_precision_policy([], cpu_bf16=["amx_bf16"]) == "mixed_bfloat16"
    assert device.mixed_precision_policy([], cpu_bf16=[]) == "float32"


def test_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    flags = device.cpu_flags()
    assert isinstance(flags, frozenset)
    if os.path.exists("/proc/cpuinfo"):
        assert "fpu" in flags or "fp" in flags or flags  # x86 lists fpu; other CPUs list theirs
    assert device.cpu_has_bfloat16() == bool(flags & set(device.BF16_CPU_FLAGS))
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert device.cpu_flags() == frozenset() and not device.cpu_has_bfloat16()


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
def test_insisting_on_mixed_precision_without_gpu_is_an_error():
    with pytest.raises(ValueError, match="compute capability 7.0"):
        device.setup_devices(mixed_precision=True, verbose=False)


def test_explicit_policy_and_bad_value():
    setup = device.setup_devices(mixed_precision="mixed_bfloat16", verbose=False)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert setup.precision_policy == "mixed_bfloat16"
    with pytest.raises(ValueError, match="received 3"):
        device.setup_devices(mixed_precision=3, verbose=False)


def test_one_named_device_and_empty_list():
    assert isinstance(device.choose_strategy(["/cpu:0"]), tf.distribute.OneDeviceStrategy)
    with pytest.raises(ValueError, match="empty list"):
        device.choose_strategy([])


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    """Logical devices must be configured before TensorFlow starts: run in a fresh process."""
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from cifar_utils import data, device
        setup = device.setup_devices(devices=["/cpu:0", "/cpu:1"], verbose=False)
        assert isinstance(setup.strategy, tf.distribute.MirroredStrategy), setup.strategy
        assert setup.num_replicas == 2
        x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
        y = np.arange(32) % 10
        with setup.strategy.scope():
            model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                                      keras.layers.Dense(10)])
            model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(data.make_dataset(x, y, batch_size=8), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        print("replicas", setup.num_replicas)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout


@pytest.mark.slow
def test_two_workers_train_to_identical_weights(tmp_path):
    """A TF_CONFIG cluster of two worker processes on this machine (loopback ports) trains the
    fast recipe for a few steps, as `cifar-train` does on several machines."""
    from cifar_utils.web import free_port

    script = textwrap.dedent(
        """
        import sys
        from cifar_utils import device, recipes, training
        setup = device.setup_devices()  # first: the cluster's strategy starts before other work
        import numpy as np
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8)
        y = np.arange(160) % 10
        recipe = recipes.get_recipe(
            "fast", epochs=2, batch_size=32, model_kwargs={"widths": [16, 32, 32]}
        )
        training.train(
            recipe, x[:128], y[:128], x[128:], y[128:],
            output_dir=sys.argv[1], setup=setup, verbose=0,
        )
        """
    )
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script, str(tmp_path / "run")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    first = keras.saving.load_model(tmp_path / "run" / "final.keras", safe_mode=True, compile=False)
    second = keras.saving.load_model(
        tmp_path / "run" / "worker1" / "final.keras", safe_mode=True, compile=False
    )
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved["run"]["replicas"] == 2
    assert saved["history"]["epoch"] == [0, 1] and np.all(np.isfinite(saved["history"]["loss"]))
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    kernel = first.get_layer("group1_conv1").get_weights()[0]
    assert np.abs(kernel).sum() > 0


def test_tf_config_that_is_not_json_is_refused(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: nope")
    with pytest.raises(ValueError, match="TF_CONFIG must be a JSON object"):
        device.cluster_workers()
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}),
    )
    assert device.cluster_workers() == 2
    chief = {
        "cluster": {"chief": ["a:1"], "worker": ["b:2"]},
        "task": {"type": "worker", "index": 0},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(chief))
    assert device.cluster_workers() == 2  # the chief is a worker too
    monkeypatch.delenv("TF_CONFIG")
    assert device.cluster_workers() == 0
    assert device.worker_folder(tf.distribute.get_strategy()) == ""  # one machine: its own chief


def test_gpu_names_with_and_without_compute_capability(monkeypatch):
    """The one place GPU names are read: run facts, model cards and describe_devices all use it."""
    gpus = [
        tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
        tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU"),
    ]
    details = {
        gpus[0].name: {"device_name": "NVIDIA H100", "compute_capability": (9, 0)},
        gpus[1].name: {},
    }
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else []
    )
    monkeypatch.setattr(device, "_gpu_details", lambda gpu: details[gpu.name])
    assert device.gpu_names() == [
        "NVIDIA H100",
        "/physical_device:GPU:1",
    ]  # no details: the device's name
    assert device.gpu_names(with_capability=True) == [
        "NVIDIA H100 (compute 9.0)",
        "/physical_device:GPU:1",
    ]
    assert "NVIDIA H100 (compute 9.0)" in device.describe_devices()
