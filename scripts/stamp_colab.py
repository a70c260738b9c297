"""Stamps the course's public address into every notebook's Colab badge and install cell.

The address is kept in one place, `[tool.cifar_utils] repository` in pyproject.toml. While it is
empty (not known yet) the notebooks carry no badge, and their install cell tells a Colab user in
one sentence what to do instead. A GitHub address also gets an "Open in Colab" badge.

    python scripts/stamp_colab.py           # rewrite the notebooks from the setting
    python scripts/stamp_colab.py --check   # exit 1 and name each notebook that disagrees

The install cell is the code cell tagged `colab-setup`; its text is `install_cell()` below, and it
is shown collapsed (Colab's form view, JupyterLab's hidden source): the first code a learner
reads is the lesson's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SETUP_TAG = "colab-setup"
BADGE_PREFIX = "[![Open In Colab]"
BRANCH = "main"  # the branch Colab opens the notebooks from
GITHUB = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")


def repository(pyproject=ROOT / "pyproject.toml") -> str:
    """The course's public git address from pyproject.toml ("" while unknown)."""
    with open(pyproject, "rb") as f:
        value = tomllib.load(f).get("tool", {}).get("cifar_utils", {}).get("repository", "")
    if not isinstance(value, str):
        raise ValueError(f"[tool.cifar_utils] repository must be a string; received {value!r}.")
    return value.strip()


def badge(repo: str, notebook: str) -> str | None:
    """The Colab badge line for a notebook, or None (no address, or not on GitHub)."""
    match = GITHUB.match(repo)
    if not match:
        return None
    owner, name = match.groups()
    url = f"https://colab.research.google.com/github/{owner}/{name}/blob/{BRANCH}/notebooks/{notebook}"
    return f"{BADGE_PREFIX}(https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def install_cell(repo: str) -> str:
    """The source of every notebook's install cell, with `repo` as the address."""
    return (
        f'''\
# @title Set-up on Colab (elsewhere it does nothing): fetch the course, install its package
# Collapsed on purpose: plumbing, not the lesson. On Colab it clones the course (notebooks,
# shipped model) and runs scripts/colab_setup.py, which installs the helper package and keeps
# Colab's own TensorFlow. Locally, `pip install -e .[tensorflow]` (or .[jax], .[torch]) did this.
import os
import subprocess
import sys

REPOSITORY = {json.dumps(repo)}  # stamped from pyproject.toml by scripts/stamp_colab.py
if "google.colab" in sys.modules:
    if os.path.isdir("cifar_utils") and os.path.isdir("notebooks"):
        os.chdir("notebooks")  # started in the course's root folder
    if not os.path.isdir("../cifar_utils"):  # not in the course's notebooks/ folder yet
        REPOSITORY = os.environ.get("CIFAR_REPOSITORY", REPOSITORY)  # a local clone, in rehearsals
        if not REPOSITORY:
            raise SystemExit(
                "This copy does not know the course's public address: upload or clone the "
                "repository, `%cd` into its notebooks/ folder, and run this cell again."
            )
        clone = os.path.basename(REPOSITORY.rstrip("/")).removesuffix(".git")
        if not os.path.isdir(clone):
            command = ["git", "clone", "--depth", "1", "--branch", "{BRANCH}", REPOSITORY, clone]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"git clone {{REPOSITORY}} failed: {{done.stderr.strip()}}")
        os.chdir(os.path.join(clone, "notebooks"))
    # Colab shows only what Python prints, not a child process's output: print it here.
'''
        '    done = subprocess.run([sys.executable, "../scripts/colab_setup.py"], '
        "capture_output=True, text=True)\n"
        """    print(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit("Stopped: do what the message above says, then run this cell again.")
    import site

    for folder in site.getsitepackages():
        site.addsitedir(folder)  # lets this running kernel import the fresh editable install"""
    )


def stamp(notebook: dict, name: str, repo: str) -> dict:
    """`notebook` with its badge and install cell set for `repo` (a new dict)."""
    notebook = json.loads(json.dumps(notebook))
    cells = notebook["cells"]
    title = cells[0]
    if title["cell_type"] != "markdown":
        raise ValueError(
            f"{name}: the first cell must be the markdown title; "
            f"received a {title['cell_type']} cell."
        )
    lines = "".join(title["source"]).split("\n")
    lines = [line for line in lines if not line.startswith(BADGE_PREFIX)]
    # One blank line between the title and the overview, the badge (if any) between them.
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    line = badge(repo, name)
    if line:
        head, _, rest = text.partition("\n\n")
        text = f"{head}\n\n{line}\n\n{rest}"
    title["source"] = _as_source(text)
    setup = [c for c in cells if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
    if len(setup) != 1:
        raise ValueError(
            f"{name}: expected one code cell tagged {SETUP_TAG!r}; found {len(setup)}."
        )
    setup[0]["source"] = _as_source(install_cell(repo))
    # Shown collapsed: Colab draws a form cell as its @title line, JupyterLab hides the source.
    setup[0]["metadata"]["cellView"] = "form"
    setup[0]["metadata"].setdefault("jupyter", {})["source_hidden"] = True
    return notebook


def _as_source(text: str) -> list:
    """Text as a notebook cell's list of lines (each but the last ending in a newline)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on any difference")
    args = parser.parse_args(argv)
    try:
        repo = repository()
        stale = []
        for path in NOTEBOOKS:
            notebook = json.loads(path.read_text())
            stamped = stamp(notebook, path.name, repo)
            if stamped != notebook:
                stale.append(path)
                if not args.check:
                    path.write_text(
                        json.dumps(stamped, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
                    )
    except (OSError, ValueError) as err:
        print(f"stamp_colab: {err}", file=sys.stderr)
        return 2
    where = f"repository = {repo!r}" if repo else "no repository address yet"
    if args.check:
        for path in stale:
            print(
                f"stamp_colab: {path.relative_to(ROOT)} disagrees with pyproject.toml ({where}); "
                "run python scripts/stamp_colab.py"
            )
        return 1 if stale else 0
    print(f"stamp_colab: {len(stale)} of {len(NOTEBOOKS)} notebooks updated ({where}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
