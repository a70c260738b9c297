"""Installs the course's helper package on Colab, keeping Colab's TensorFlow and Keras.

Run by every notebook's install cell (`scripts/stamp_colab.py` writes it) from inside a clone of
the repository, so that `models/`, `figures/` and the notebooks are there:

    python scripts/colab_setup.py

Colab comes with TensorFlow built for its GPUs. A plain `pip install` of a package with other
TensorFlow bounds would replace it; here the preinstalled TensorFlow and Keras are pinned
(a pip constraint) whenever they are releases the package supports, so pip can only add what
is missing. Where one is older than supported, pip upgrades it and this script says to restart
the runtime. `scripts/colab_rehearsal.sh` rehearses all of this on a machine without Colab.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("tensorflow", "keras")  # what Colab preinstalls and we must not replace
# TensorFlow also comes under other names (TPU and CPU builds, nightlies); pip cannot tell that
# they satisfy `tensorflow`, so with one of them the package is installed without that requirement.
TENSORFLOW_NAMES = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "tf-nightly")
RESTART = 3  # exit status: installed, but the runtime must be restarted


def installed(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_tensorflow() -> tuple:
    """`(distribution name, version)` of the TensorFlow installed, or `("tensorflow", None)`."""
    for name in TENSORFLOW_NAMES:
        version = installed(name)
        if version is not None:
            return name, version
    return "tensorflow", None


def _version(text: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def dependencies() -> list:
    """The package's requirements with its TensorFlow extra, as pyproject.toml lists them."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return project["dependencies"] + project["optional-dependencies"]["tensorflow"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def dependencies_without_tensorflow() -> list:
    """The package's requirements from pyproject.toml, TensorFlow left out."""
    return [r for r in dependencies() if _name(r) != "tensorflow"]


def bounds() -> dict:
    """`{name: (oldest supported, newest tested)}` from pyproject.toml and requirements.txt."""
    lows = {_name(r): re.search(r">=([\d.]+)", r) for r in dependencies()}
    requirements = (ROOT / "requirements.txt").read_text()
    found = {}
    for name in KEPT:
        low = lows.get(name)
        pin = re.search(rf"^{name}==([\d.]+)", requirements, re.MULTILINE)
        if not (low and pin):
            raise SystemExit(
                f"colab_setup: cannot find the {name} bounds in pyproject.toml / requirements.txt"
            )
        found[name] = (low.group(1), pin.group(1))
    return found


def plan(have: dict, supported: dict) -> tuple:
    """What to keep and what to say, for installed versions `have` and `bounds()`.

    Returns:
        `(constraints, messages, restart)`: pip constraint lines pinning what is kept, one line
        per package for the user, and whether the runtime must be restarted afterwards.
    """
    constraints, messages, restart = [], [], False
    for name, (oldest, newest) in supported.items():
        version = have.get(name)
        if version is None:
            messages.append(f"{name}: not installed; pip installs the newest release it can.")
        elif _version(version) < _version(oldest):
            messages.append(
                f"{name} {version} is older than {oldest}, the oldest this course supports: "
                "pip upgrades it."
            )
            restart = True
        else:
            constraints.append(f"{name}=={version}")
            note = (
                ""
                if _version(version) <= _version(newest)
                else f" (newer than {newest}, the newest tested)"
            )
            messages.append(f"{name} {version}: kept{note}.")
    return constraints, messages, restart


def main() -> int:
    tf_name, tf_version = installed_tensorflow()
    before = {"tensorflow": tf_version, "keras": installed("keras")}
    constraints, messages, restart = plan(before, bounds())
    print("\n".join(messages))
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if tf_name != "tensorflow" and not restart:
        # pip would add a second TensorFlow beside tensorflow-tpu & co.: install around it.
        print(
            f"TensorFlow is installed as {tf_name}: the package is installed without its "
            "tensorflow requirement."
        )
        steps = [dependencies_without_tensorflow(), ["--no-deps", "-e", str(ROOT)]]
        constraints = [c for c in constraints if not c.startswith("tensorflow==")]
    else:
        steps = [["-e", f"{ROOT}[tensorflow]"]]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(constraints) + "\n")
    try:
        print("$ pip install -e", ROOT.name, "with", ", ".join(constraints) or "no pins")
        for step in steps:
            result = subprocess.run(pip + ["-c", f.name] + step)
            if result.returncode != 0:
                print(
                    "colab_setup: pip could not install the package; its message is above.",
                    file=sys.stderr,
                )
                return result.returncode
    finally:
        os.unlink(f.name)
    after = {"tensorflow": installed_tensorflow()[1], "keras": installed("keras")}
    print(" | ".join(f"{name} {before[name]} -> {after[name]}" for name in KEPT))
    if restart:
        print(
            "Restart the runtime (Runtime -> Restart session), then run the notebook again: "
            "the running kernel still has the old TensorFlow or Keras loaded."
        )
        return RESTART
    if shutil.which("nvidia-smi") is None:
        print(
            "No GPU in this runtime: notebooks 04 and 06 took about 20 and 22 minutes on 2 CPU "
            "cores (measured on an Intel Xeon); pick Runtime -> Change runtime type -> GPU "
            "for them."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
