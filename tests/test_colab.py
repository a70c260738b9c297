"""The Colab path: one setting for the public address, stamped into every notebook; the install
cell and scripts/colab_setup.py. The full rehearsal (a fresh environment with the oldest
supported TensorFlow, the install cell run, notebooks 01 and 05) is scripts/colab_rehearsal.sh,
which CI runs after these tests."""

import importlib.util
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stamp_colab = _load("stamp_colab")
colab_setup = _load("colab_setup")


def test_every_notebook_agrees_with_the_setting():
    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "stamp_colab.py", "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_address_we_do_not_own_anywhere():
    """Only the setting may name the course's address, and while it is empty nothing does."""
    repo = stamp_colab.repository()
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    # github.com/OWNER/NAME and Colab's colab.research.google.com/github/OWNER/NAME; the
    # upstream projects we cite by number (Keras, TensorFlow) are theirs, not made up.
    pattern = re.compile(
        r"(?:github\.com|google\.com/github)/(?!(?:keras-team|tensorflow)/)[\w.-]+/[\w.-]+", re.I
    )
    found = []
    for name in tracked:
        path = ROOT / name
        # This file names made-up addresses on purpose, to test the stamping with them.
        if (
            path.suffix in (".keras", ".tflite", ".png")
            or not path.is_file()
            or path == Path(__file__)
        ):
            continue
        text = path.read_text(errors="ignore")
        found += [
            f"{name}: {m.group(0)}"
            for m in pattern.finditer(text)
            if not (repo and repo in m.group(0))
        ]
    assert not found, found


@pytest.mark.parametrize("notebook", stamp_colab.NOTEBOOKS, ids=lambda p: p.name[:2])
def test_each_notebook_opens_with_run_time_and_runtime_to_pick(notebook):
    title = "".join(json.loads(notebook.read_text())["cells"][0]["source"])
    assert re.search(r"\*\*Run time:\*\* \d+ s .*on 2 CPU cores", title), title[:400]
    assert "**On Colab:**" in title


def test_stamping_a_github_address_adds_badge_and_cell(tmp_path):
    notebook = json.loads(stamp_colab.NOTEBOOKS[0].read_text())
    name = stamp_colab.NOTEBOOKS[0].name
    stamped = stamp_colab.stamp(notebook, name, "https://github.com/someone/course.git")
    title = "".join(stamped["cells"][0]["source"])
    assert (
        f"](https://colab.research.google.com/github/someone/course/blob/main/notebooks/{name})"
        in title.split("\n")[2]
    )
    cell = next(c for c in stamped["cells"] if "colab-setup" in c["metadata"].get("tags", []))
    assert 'REPOSITORY = "https://github.com/someone/course.git"' in "".join(cell["source"])
    # shown collapsed: Colab's form view (its @title line) and JupyterLab's hidden source
    assert cell["source"][0].startswith("# @title ")
    assert cell["metadata"]["cellView"] == "form" and cell["metadata"]["jupyter"]["source_hidden"]
    # Stamping again changes nothing; stamping the empty address takes the badge away again.
    assert stamp_colab.stamp(stamped, name, "https://github.com/someone/course.git") == stamped
    cleared = stamp_colab.stamp(stamped, name, "")
    assert stamp_colab.BADGE_PREFIX not in "".join(cleared["cells"][0]["source"])
    assert cleared == stamp_colab.stamp(notebook, name, "")
    # An address Colab cannot open from (not GitHub): the cell uses it, no badge.
    other = stamp_colab.stamp(notebook, name, "https://example.org/course.git")
    assert stamp_colab.BADGE_PREFIX not in "".join(other["cells"][0]["source"])


def test_install_cell_without_an_address_says_what_to_do(tmp_path, monkeypatch):
    """The Colab branch of the cell with no address: one sentence, not a made-up URL."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFAR_REPOSITORY", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(SystemExit, match="upload or clone the repository"):
        exec(compile(stamp_colab.install_cell(""), "install cell", "exec"), {})
    assert list(tmp_path.iterdir()) == []  # nothing cloned, nothing installed


def test_install_cell_from_the_course_root_installs_without_cloning(tmp_path, monkeypatch):
    """Started in the course's root folder: no nested clone; colab_setup's output is printed
    (Colab shows only what Python prints) and a failure stops the cell with a sentence."""
    for folder in ("cifar_utils", "notebooks", "scripts"):
        (tmp_path / folder).mkdir()
    setup = tmp_path / "scripts" / "colab_setup.py"
    setup.write_text("import sys\nprint('setup ran')\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    printed = []
    with pytest.raises(SystemExit, match="do what the message above says"):
        exec(
            compile(stamp_colab.install_cell(""), "install cell", "exec"), {"print": printed.append}
        )
    assert Path.cwd() == tmp_path / "notebooks" and "setup ran" in printed[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar_utils", "notebooks", "scripts"]


def test_install_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(
        compile(
            stamp_colab.install_cell("https://github.com/someone/course"), "install cell", "exec"
        ),
        {},
    )
    assert list(tmp_path.iterdir()) == []


def test_colab_setup_keeps_supported_versions_and_upgrades_old_ones():
    supported = {"tensorflow": ("2.18.1", "2.21.0"), "keras": ("3.15.0", "3.15.1")}
    constraints, messages, restart = colab_setup.plan(
        {"tensorflow": "2.19.0", "keras": "3.15.1"}, supported
    )
    assert constraints == ["tensorflow==2.19.0", "keras==3.15.1"] and not restart
    constraints, messages, restart = colab_setup.plan(
        {"tensorflow": "2.23.0", "keras": "3.10.0"}, supported
    )
    assert constraints == ["tensorflow==2.23.0"] and restart
    assert "newer than 2.21.0" in messages[0] and "older than 3.15.0" in messages[1]
    constraints, messages, restart = colab_setup.plan(
        {"tensorflow": None, "keras": None}, supported
    )
    assert constraints == [] and "not installed" in messages[0]


def test_colab_setup_installs_around_other_tensorflow_builds():
    """tensorflow-tpu & co. satisfy the package, but pip cannot know: leave tensorflow out."""
    deps = colab_setup.dependencies_without_tensorflow()
    assert deps and not any(
        d.lower().startswith("tensorflow") and not d.lower().startswith("tensorboard") for d in deps
    )
    assert any(d.startswith("keras>=") for d in deps)


def test_colab_setup_reads_the_bounds_the_package_declares():
    bounds = colab_setup.bounds()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"tensorflow>={bounds["tensorflow"][0]}"' in pyproject
    assert f'"keras>={bounds["keras"][0]}"' in pyproject
    import keras
    import tensorflow as tf

    # Whatever runs these tests lies in the range: requirements.txt's newest tested set here,
    # the oldest supported set in scripts/colab_rehearsal.sh --with-tests.
    for name, running in (("tensorflow", tf.__version__), ("keras", keras.__version__)):
        oldest, newest = bounds[name]
        assert (
            colab_setup._version(oldest)
            <= colab_setup._version(running)
            <= colab_setup._version(newest)
        )
