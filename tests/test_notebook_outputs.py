"""The committed notebooks' outputs are clean: no log lines, no warnings, no machine paths.

These read the outputs stored in `notebooks/*.ipynb` (a full run's, committed), so a rerun
that lets TensorFlow's start-up lines, a library warning or a local path into a notebook
fails here before it is committed. `cifar_utils.tf_logs` is what keeps them out.
"""

import json
import os
import re
from pathlib import Path

import pytest

from cifar_utils import tf_logs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

LOG_LINES = re.compile("|".join((
    r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]",  # absl/TensorFlow C++ log line
    r"absl::InitializeLog",
    r"cpu_feature_guard|rebuild TensorFlow with the appropriate compiler flags",
    r"cuInit|cudart_stub|Could not find cuda drivers",
    r"oneDNN custom operations",
    r"^(INFO|WARNING|ERROR):tensorflow:",  # TensorFlow's Python logger
    r"^fully_quantize:|TensorFlow Lite XNNPACK delegate|^INFO: ",  # TFLite converter/runtime
    r"\b\w*Warning: ",  # any Python warning
    r"will be ignored",
)))
MACHINE_PATHS = re.compile("|".join((
    r"(?<![\w.~])/(home|Users|tmp|work|root|var|opt|usr|mnt|content|private)/",
    r"site-packages|\.venv/|[A-Za-z]:\\\\",
    re.escape(str(ROOT)),
    re.escape(str(Path.home())) + r"(?=/)",
)))


def _output_lines(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")]
            texts += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
            texts += output.get("traceback", [])
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                for line in text.splitlines():
                    yield index, line


def _offending(pattern):
    return [f"{nb.name} cell {i}: {line[:160]}"
            for nb in NOTEBOOKS for i, line in _output_lines(nb) if pattern.search(line)]


def test_there_are_notebooks_with_outputs():
    assert len(NOTEBOOKS) == 7
    for nb in NOTEBOOKS:
        assert any(True for _ in _output_lines(nb)), f"{nb.name} has no committed outputs"


def test_no_log_lines_or_warnings_in_committed_outputs():
    bad = _offending(LOG_LINES)
    assert not bad, "log lines or warnings in committed outputs:\n" + "\n".join(bad)


def test_no_paths_of_the_machine_that_ran_them():
    bad = _offending(MACHINE_PATHS)
    assert not bad, "machine paths in committed outputs:\n" + "\n".join(bad)


def test_no_error_outputs_committed():
    bad = [f"{nb.name} cell {i}" for nb in NOTEBOOKS
           for i, c in enumerate(json.loads(nb.read_text())["cells"])
           for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not bad, f"cells that raised: {bad}"


# The scanner itself must catch what it is for (each line as TensorFlow 2.21 printed it here).
@pytest.mark.parametrize("line", [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795832878.367533    8897 port.cc:153] oneDNN custom operations are on.",
    "E0000 00:00:1795832880.703725    8897 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "W0000 00:00:1795832880.703725    8897 some_file.cc:12] anything",
    "INFO:tensorflow:Assets written to: ../runs/exports/sm/assets",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "/x/lib/python3.11/site-packages/keras/src/trainers/epoch_iterator.py:74: UserWarning: "
    "`shuffle=True` was passed, but will be ignored",
])
def test_scanner_catches_log_lines(line):
    assert LOG_LINES.search(line)


@pytest.mark.parametrize("line", [
    "CIFAR-10 loaded from $CIFAR10_DIR: /work/main/.cache/cifar10/cifar-10-batches-py",
    "saved to /home/someone/runs/fast",
    "written to /tmp/tmpab12/model.keras",
    f"run folder {ROOT / 'runs'}",
])
def test_scanner_catches_machine_paths(line):
    assert MACHINE_PATHS.search(line)


@pytest.mark.parametrize("line", [
    "CIFAR-10 loaded from $CIFAR10_DIR: ../.cache/cifar10/cifar-10-batches-py (offline copy)",
    "fine-tuning the model trained by notebook 04 (../runs/fast/best.keras)",
    "val accuracy 0.8228 at lr 0.02/0.375",
])
def test_scanner_lets_clean_lines_pass(line):
    assert not LOG_LINES.search(line) and not MACHINE_PATHS.search(line)


# The filter that keeps them out.
@pytest.mark.parametrize("line", [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795832878.367533    8897 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1795979609.957626    4865 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other "
    "operations, rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1795832880.703725    8897 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1795856163.766012   23272 node_def_util.cc:682] NodeDef mentions attribute "
    "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset>",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "W0000 00:00:1795983189.555340   19721 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
    # TensorFlow 2.18's format (the Colab rehearsal's oldest supported release)
    "2026-11-29 21:08:06.857015: E external/local_xla/xla/stream_executor/cuda/cuda_driver.cc:152] "
    "failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "2026-11-29 21:08:06.857015: I tensorflow/core/util/port.cc:153] oneDNN custom operations are on.",
    "W0000 00:00:1795983189.555397   19721 tf_tfl_flatbuffer_helpers.cc:367] Ignored drop_control_dependency.",
    "W0000 00:00:1795983191.729732   19721 flatbuffer_export.cc:3851] Skipping runtime version metadata "
    "in the model. This will be generated by the exporter.",
])
def test_filter_drops_known_noise(line):
    assert tf_logs.is_noise(line) and tf_logs.is_noise(line + "\n")


@pytest.mark.parametrize("line", [
    "E0000 00:00:1795832880.703725    8897 cuda_platform.cc:52] failed call to cuInit: "
    "CUDA_ERROR_OUT_OF_MEMORY (2)",  # a real GPU problem stays visible
    "E0000 00:00:1795856163.766012   23272 some_kernel.cc:1] OOM when allocating tensor",
    "W0000 00:00:1795856163.766012   23272 some_file.cc:1] a warning",
    "I0000 00:00:1795856163.766012   23272 other_file.cc:1] an INFO line the user asked for",
    "Traceback (most recent call last):",
    "ValueError: something a learner must see",
])
def test_filter_passes_everything_else(line):
    assert not tf_logs.is_noise(line)


def test_filter_forwards_lines_in_order_and_drops_noise():
    read_fd, write_fd = os.pipe()
    out_read, out_write = os.pipe()
    os.write(write_fd, b"first\nI0000 00:00:1.2    1 port.cc:153] oneDNN\nsecond\nlast, no newline")
    os.close(write_fd)
    tf_logs._forward(read_fd, out_write)
    os.close(out_write)
    with os.fdopen(out_read, "rb") as f:
        assert f.read() == b"first\nsecond\nlast, no newline"


def test_filter_joins_a_line_split_across_reads_and_passes_a_partial_line_when_idle():
    import threading
    import time

    read_fd, write_fd = os.pipe()
    out_read, out_write = os.pipe()
    thread = threading.Thread(target=tf_logs._forward, args=(read_fd, out_write, 0.05))
    thread.start()
    os.write(write_fd, b"I0000 00:00:1.2    1 por")
    time.sleep(0.01)
    os.write(write_fd, b"t.cc:153] oneDNN\nkept\nprompt> ")  # noise split in two, then a partial line
    time.sleep(0.3)  # idle: the partial line must come through without a newline or EOF
    os.set_blocking(out_read, False)
    assert os.read(out_read, 1000) == b"kept\nprompt> "
    os.close(write_fd)
    thread.join(timeout=2)
    assert not thread.is_alive()
    os.close(out_write)
    os.close(out_read)


def test_filter_drains_and_ends_when_its_output_is_gone():
    import threading

    read_fd, write_fd = os.pipe()
    out_read, out_write = os.pipe()
    os.close(out_read)  # writing to out_write now fails (EPIPE)
    thread = threading.Thread(target=tf_logs._forward, args=(read_fd, out_write, 0.05))
    saved = os.dup(2)
    try:
        thread.start()
        os.write(write_fd, b"a line\n" * 10)
        os.close(write_fd)
        thread.join(timeout=2)
        assert not thread.is_alive()  # no hang, no exception
    finally:
        os.dup2(saved, 2)  # the filter gave fd 2 back to its (broken) target; restore ours
        os.close(saved)
        os.close(out_write)


def test_quiet_tensorflow_keeps_a_log_level_the_user_set(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    tf_logs.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    monkeypatch.setenv(tf_logs.SHOW_ALL_ENV_VAR, "1")
    tf_logs.quiet_tensorflow()
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.delenv(tf_logs.SHOW_ALL_ENV_VAR)
    tf_logs.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
