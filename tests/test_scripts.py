"""The shell scripts a learner runs first (issue 23, item 12: lab.sh as root)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_lab_sh_as_root_says_so_and_starts_jupyterlab_with_allow_root(tmp_path):
    """JupyterLab stops as root without --allow-root; in a container root is the only user."""
    venv = Path(sys.prefix)
    stamp = venv / ".cifar_requirements.sha256"
    if not stamp.exists():
        pytest.skip("runs in the virtual environment scripts/setup.sh made")
    env = {
        **os.environ,
        "CIFAR_VENV": str(venv),
        "CIFAR10_DIR": str(tmp_path),  # set: setup.sh builds no data
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lab.sh"), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "running as root" in proc.stderr and "--allow-root" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1][0].isdigit()  # jupyter lab --version ran
