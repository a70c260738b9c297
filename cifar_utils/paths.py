"""Every environment variable the project reads, and every default folder.

One home for "where": the data, training runs, figures and the shipped model. Default
folders are resolved from the repository root (the folder above this package), not from
where Python was started, so a notebook in `notebooks/`, `cifar-train` started at the
repository root and a test in a temporary folder all agree. A package installed without
the repository (a wheel) has no repository root: its defaults are below the working
directory instead.

| variable | read by | meaning |
|---|---|---|
| `CIFAR10_DIR` | `data.locate_cifar10` | folder of the CIFAR-10 python-version files |
| `CIFAR10_LOSSLESS` | `data.load_lossless_test_sample` | the PNG of the first 1,000 official test images (default: `official_test_first_1000.png` beside `$CIFAR10_DIR`'s folder) |
| `KERAS_HOME` | `data.locate_cifar10` | Keras's own folder (default `~/.keras`), for its dataset cache |
| `CIFAR_OUTPUT_DIR` | `runs_dir()` | where training runs are written (default `runs/`) |
| `CIFAR_FIGURES_DIR` | `figures_dir()` | where notebooks save figures (default `figures/`) |
| `CIFAR_QUICK` | `is_quick_mode()` | "1": small subsets and few epochs, for tests |
| `CIFAR_TF_LOGS` | `tf_logs.quiet_tensorflow` | "1": show all of TensorFlow's log lines |
| `TF_CONFIG` | `device.cluster_workers` | TensorFlow's own: the workers of a multi-machine run |

Outside the package, the scripts and tests read a few more: `CIFAR_VENV` and
`CIFAR10_BUILD_DIR` (`scripts/setup.sh`: where the virtual environment and the offline copy
go), `CIFAR_REPOSITORY` (the notebooks' Colab cell and `scripts/stamp_colab.py`: a local
clone in rehearsals), `CIFAR_REQUIRE_REAL_DATA` and `CIFAR_REQUIRE_BROWSER` (tests: fail
instead of skip).

Only the standard library is imported here: `tf_logs` reads its variable before
TensorFlow loads.
"""  # noqa: E501 (a Markdown table above: its rows cannot wrap)

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV_VAR = "CIFAR10_DIR"
LOSSLESS_ENV_VAR = "CIFAR10_LOSSLESS"
LOSSLESS_FILE = "official_test_first_1000.png"
KERAS_HOME_ENV_VAR = "KERAS_HOME"  # Keras's own variable
TF_CONFIG_ENV_VAR = "TF_CONFIG"  # TensorFlow's own variable
OUTPUT_ENV_VAR = "CIFAR_OUTPUT_DIR"
FIGURES_ENV_VAR = "CIFAR_FIGURES_DIR"
QUICK_ENV_VAR = "CIFAR_QUICK"
TF_LOGS_ENV_VAR = "CIFAR_TF_LOGS"

PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout this package was installed from (`pip install -e .`), or None for a wheel.
REPO_ROOT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None
# The fast-recipe model committed to the repository (see models/MODEL_CARD.md).
SHIPPED_MODEL = PACKAGE_DIR.parent / "models" / "fast_net.keras"
# The search order of `find_trained_model` below a runs folder: the fast recipe first.
TRAINED_RUNS = ("fast", "baseline_cnn")


def _default_folder(name: str) -> Path:
    """`name` below the repository root, said relative to the working directory when that is
    inside the repository (`../runs` from `notebooks/`, `runs` from the root), so that paths
    printed in notebooks and commands carry no machine-specific prefix; else absolute. Without
    a repository (a wheel), `name` below the working directory."""
    if REPO_ROOT is None:
        return Path.cwd() / name
    folder, cwd = REPO_ROOT / name, Path.cwd().resolve()
    return Path(os.path.relpath(folder, cwd)) if cwd.is_relative_to(REPO_ROOT) else folder


def env(name: str) -> str | None:
    """The value of one of the project's environment variables, or None when unset or blank.

    Args:
        name: one of the `*_ENV_VAR` names of this module.
    """
    value = os.environ.get(name, "").strip()
    return value or None


def data_dir() -> Path | None:
    """`$CIFAR10_DIR` as a path, or None when unset."""
    value = env(DATA_DIR_ENV_VAR)
    return Path(value).expanduser() if value else None


def lossless_sample() -> Path | None:
    """The PNG of the first 1,000 official test images: `$CIFAR10_LOSSLESS`, else the file
    `official_test_first_1000.png` in the folder that holds `$CIFAR10_DIR` (where
    `scripts/setup.sh` puts it), else None."""
    value = env(LOSSLESS_ENV_VAR)
    if value:
        return Path(value).expanduser()
    folder = data_dir()
    return None if folder is None else folder.parent / LOSSLESS_FILE


def keras_home() -> Path:
    """Keras's folder, where its downloads are cached: `$KERAS_HOME`, else `~/.keras`."""
    value = env(KERAS_HOME_ENV_VAR)
    return Path(value).expanduser() if value else Path.home() / ".keras"


def tf_config() -> str:
    """`$TF_CONFIG` (TensorFlow's description of a multi-machine cluster), or "" when unset."""
    return env(TF_CONFIG_ENV_VAR) or ""


def runs_dir() -> Path:
    """Where training runs are written and looked for: `$CIFAR_OUTPUT_DIR`, else `runs/`.

    `runs/` is the repository's (or, for a package installed without the repository,
    the working directory's), given relative to the working directory when that is
    inside the repository (`../runs` in a notebook). Notebook 04 and `cifar-train` both write
    here, and notebooks 05-07, `cifar-predict` and `cifar-demo` find the trained model here.
    """
    value = env(OUTPUT_ENV_VAR)
    return Path(value).expanduser() if value else _default_folder("runs")


def figures_dir() -> Path:
    """Where notebooks save figures: `$CIFAR_FIGURES_DIR`, else the repository's `figures/`.

    Tests set the variable to a temporary folder, so that quick runs do not overwrite
    the committed full-run figures.
    """
    value = env(FIGURES_ENV_VAR)
    return Path(value).expanduser() if value else _default_folder("figures")


def is_quick_mode() -> bool:
    """True when `CIFAR_QUICK=1` asks for a small, fast run.

    Quick mode makes each notebook use a small subset and few epochs so that it
    finishes in minutes on two CPU cores while running every code path.

    Raises:
        ValueError: the variable holds something other than 1/0, true/false, yes/no.
    """
    value = (env(QUICK_ENV_VAR) or "").lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(
        f"{QUICK_ENV_VAR} must be 1 or 0 (or true/false, yes/no); "
        f"received {os.environ[QUICK_ENV_VAR]!r}."
    )


def show_all_tf_logs() -> bool:
    """True when `CIFAR_TF_LOGS=1` asks to see every line TensorFlow prints."""
    return env(TF_LOGS_ENV_VAR) == "1"


_default_runs_dir = runs_dir  # the parameter below shadows the function's name


def find_trained_model(runs_dir=None, prefer="shipped"):
    """The model later notebooks and tools should use, and where it came from.

    Two places hold one: the model shipped in the repository's `models/` (what every
    learner has, on Colab too) and the runs folder, where notebook 04 or `cifar-train`
    saved theirs (`runs/fast/best.keras`, else the baseline's). `prefer` says which
    place to look in first; the other is the fallback.

    Args:
        runs_dir: the runs folder. Defaults to None: `paths.runs_dir()`.
        prefer: "shipped" or "trained" (notebook 04's). Defaults to "shipped".

    Returns:
        `(path, description)`, or `(None, reason)` when there is none (for example a
        package installed without the repository); the caller then trains a small model.
    """
    if prefer not in ("shipped", "trained"):
        raise ValueError(f"prefer must be 'shipped' or 'trained'; received {prefer!r}.")
    folder = Path(runs_dir) if runs_dir is not None else _default_runs_dir()
    trained = next(
        (
            folder / name / "best.keras"
            for name in TRAINED_RUNS
            if (folder / name / "best.keras").exists()
        ),
        None,
    )
    found = {
        "trained": trained
        and (trained, f"trained by notebook 04 or cifar-train ({_shown(trained)})"),
        "shipped": SHIPPED_MODEL.exists()
        and (SHIPPED_MODEL, f"shipped with the repository ({_shown(SHIPPED_MODEL)})"),
    }
    other = "trained" if prefer == "shipped" else "shipped"
    if found[prefer]:
        return found[prefer]
    if found[other]:
        path, why = found[other]
        missing = "none shipped" if prefer == "shipped" else f"none trained in {_shown(folder)}"
        return path, f"{why}; {missing}"
    return None, f"no trained model in {_shown(folder)} and none shipped at {_shown(SHIPPED_MODEL)}"


def display_path(path) -> str:
    """A path as it may be shown in a committed output: never the machine's absolute path.

    A path in the repository is shown relative to the working directory when that is in
    the repository too (a notebook shows `../.cache/cifar10/...`), else as
    `<repository>/...`; a path below the home folder as `~/...`; any other path as
    `.../` and its last name.

    Args:
        path: a path.

    Returns:
        The path as text.
    """
    path, cwd = Path(path).resolve(), Path.cwd().resolve()
    root = REPO_ROOT
    if root is not None and path.is_relative_to(root):
        if cwd.is_relative_to(root):
            return os.path.relpath(path, cwd)
        return str(Path("<repository>") / path.relative_to(root))
    home = Path.home().resolve()
    if path.is_relative_to(home) and path != home:
        return str(Path("~") / path.relative_to(home))
    return f".../{path.name}"


_shown = display_path
