"""The committed notebooks' outputs are clean: no log lines, no warnings, no machine paths.

These read the outputs stored in `notebooks/*.ipynb` (a full run's, committed), so a rerun
that lets TensorFlow's start-up lines, a library warning or a local path into a notebook
fails here before it is committed. `cifar_utils.tf_logs` is what keeps them out
(tests/test_tf_logs.py).
"""

import json
import os
import re
from pathlib import Path

import pytest
from test_tf_logs import (
    NOISE_SAMPLES,
)  # the harmless lines the filter drops: the scanner catches each

ROOT = Path(__file__).resolve().parent.parent
# scripts/test_backends.sh points this at notebooks it has just run under JAX, to judge them alike.
CHECKED = os.environ.get("CIFAR_CHECK_NOTEBOOKS_DIR")
NOTEBOOKS = sorted(Path(CHECKED or ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

LOG_LINES = re.compile(
    "|".join(
        (
            r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]",  # absl/TensorFlow C++ log line
            r"absl::InitializeLog",
            r"cpu_feature_guard|rebuild TensorFlow with the appropriate compiler flags",
            r"cuInit|cudart_stub|Could not find cuda drivers",
            r"oneDNN custom operations",
            r"^(INFO|WARNING|ERROR):tensorflow:",  # TensorFlow's Python logger
            # TFLite converter/runtime
            r"^fully_quantize:|TensorFlow Lite XNNPACK delegate|^INFO: ",
            r"\b\w*Warning: ",  # any Python warning
            r"will be ignored",
        )
    )
)
MACHINE_PATHS = re.compile(
    "|".join(
        (
            r"(?<![\w.~])/(home|Users|tmp|work|root|var|opt|usr|mnt|content|private)/",
            r"site-packages|\.venv/|[A-Za-z]:\\\\",
            re.escape(str(ROOT)),
            re.escape(str(Path.home())) + r"(?=/)",
        )
    )
)


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
    return [
        f"{nb.name} cell {i}: {line[:160]}"
        for nb in NOTEBOOKS
        for i, line in _output_lines(nb)
        if pattern.search(line)
    ]


def test_there_are_notebooks_with_outputs():
    assert len(NOTEBOOKS) == (7 if CHECKED is None else len(list(Path(CHECKED).glob("*.ipynb"))))
    assert NOTEBOOKS
    for nb in NOTEBOOKS:
        assert any(True for _ in _output_lines(nb)), f"{nb.name} has no committed outputs"


def test_no_log_lines_or_warnings_in_committed_outputs():
    bad = _offending(LOG_LINES)
    assert not bad, "log lines or warnings in committed outputs:\n" + "\n".join(bad)


def test_no_paths_of_the_machine_that_ran_them():
    bad = _offending(MACHINE_PATHS)
    assert not bad, "machine paths in committed outputs:\n" + "\n".join(bad)


def test_no_error_outputs_committed():
    bad = [
        f"{nb.name} cell {i}"
        for nb in NOTEBOOKS
        for i, c in enumerate(json.loads(nb.read_text())["cells"])
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not bad, f"cells that raised: {bad}"


# The scanner itself must catch what it is for (each line as TensorFlow 2.21 printed it here).
@pytest.mark.parametrize(
    "line",
    NOISE_SAMPLES
    + [
        "W0000 00:00:1795832880.703725    8897 some_file.cc:12] anything",
        "INFO:tensorflow:Assets written to: ../runs/exports/sm/assets",
        "/x/lib/python3.11/site-packages/keras/src/trainers/epoch_iterator.py:74: UserWarning: "
        "`shuffle=True` was passed, but will be ignored",
    ],
)
def test_scanner_catches_log_lines(line):
    assert LOG_LINES.search(line)


@pytest.mark.parametrize(
    "line",
    [
        "CIFAR-10 loaded from $CIFAR10_DIR: /work/main/.cache/cifar10/cifar-10-batches-py",
        "saved to /home/someone/runs/fast",
        "written to /tmp/tmpab12/model.keras",
        f"run folder {ROOT / 'runs'}",
    ],
)
def test_scanner_catches_machine_paths(line):
    assert MACHINE_PATHS.search(line)


@pytest.mark.parametrize(
    "line",
    [
        "CIFAR-10 loaded from $CIFAR10_DIR: ../.cache/cifar10/cifar-10-batches-py (offline copy)",
        "fine-tuning the model trained by notebook 04 (../runs/fast/best.keras)",
        "val accuracy 0.8228 at lr 0.02/0.375",
    ],
)
def test_scanner_lets_clean_lines_pass(line):
    assert not LOG_LINES.search(line) and not MACHINE_PATHS.search(line)


@pytest.mark.skipif(CHECKED is not None, reason="judges the committed full run of notebook 06")
def test_committed_notebook_06_shows_transfer_results():
    """Issue #26: the committed run shows transfer learning's numbers, not a skipped section."""
    lines = [line for _, line in _output_lines(ROOT / "notebooks" / "06_fine_tuning.ipynb")]
    text = "\n".join(lines)
    rows = {  # the row of the table's accuracy column: name, validation accuracy, seconds
        name: re.search(rf"^{re.escape(name)}\s+(0\.\d+)\s+\d+\.\d+\s*$", text, re.MULTILINE)
        for name in ("phase 1: base frozen, new head", "phase 2: top of base unfrozen")
    }
    missing = [name for name, match in rows.items() if match is None]
    assert not missing, f"notebook 06's committed outputs lack the transfer rows {missing}"
    assert any("from scratch" in line for line in lines)
