"""cifar_utils.paths: environment variables, default folders from the repository root,
quick mode, finding the trained model, and paths fit to show in committed outputs."""

from pathlib import Path

import pytest

import cifar_utils
from cifar_utils import paths

ROOT = Path(cifar_utils.__file__).resolve().parent.parent


@pytest.fixture
def no_path_env(monkeypatch):
    for name in (
        paths.OUTPUT_ENV_VAR,
        paths.FIGURES_ENV_VAR,
        paths.DATA_DIR_ENV_VAR,
        paths.KERAS_HOME_ENV_VAR,
    ):
        monkeypatch.delenv(name, raising=False)


# --- default folders and environment variables --------------------------------------------


def test_this_checkout_is_the_repository_root():
    assert paths.REPO_ROOT == ROOT and (ROOT / "pyproject.toml").is_file()
    assert paths.SHIPPED_MODEL == ROOT / "models" / "fast_net.keras"


@pytest.mark.parametrize("where", [".", "notebooks", "tmp"])
def test_defaults_are_below_the_repository_root_whatever_the_working_directory(
    where, tmp_path, monkeypatch, no_path_env
):
    monkeypatch.chdir(tmp_path if where == "tmp" else ROOT / where)
    assert paths.runs_dir().resolve() == ROOT / "runs"
    assert paths.figures_dir().resolve() == ROOT / "figures"
    assert paths.data_dir() is None
    # Said relative to a working directory inside the repository, so printed paths hold no
    # machine-specific prefix ("../runs" in a notebook); absolute from anywhere else.
    expected = {".": "runs", "notebooks": "../runs", "tmp": str(ROOT / "runs")}[where]
    assert str(paths.runs_dir()) == expected


def test_environment_variables_win(tmp_path, monkeypatch, no_path_env):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIFAR_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("CIFAR_FIGURES_DIR", str(tmp_path / "figs"))
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert paths.runs_dir() == tmp_path / "out"
    assert paths.figures_dir() == tmp_path / "figs"
    assert paths.data_dir() == tmp_path / "data"
    assert paths.keras_home() == tmp_path / "kh"


def test_blank_variables_count_as_unset_and_a_tilde_is_expanded(monkeypatch, no_path_env):
    monkeypatch.setenv("CIFAR_OUTPUT_DIR", "   ")
    monkeypatch.setenv("CIFAR_FIGURES_DIR", "")
    assert (
        paths.runs_dir().resolve() == ROOT / "runs"
        and paths.figures_dir().resolve() == ROOT / "figures"
    )
    monkeypatch.setenv("CIFAR_OUTPUT_DIR", "~/my_runs")
    assert paths.runs_dir() == Path.home() / "my_runs"
    assert paths.keras_home() == Path.home() / ".keras"


def test_without_a_repository_the_defaults_follow_the_working_directory(
    tmp_path, monkeypatch, no_path_env
):
    """A package installed from a wheel has no repository root."""
    monkeypatch.setattr(paths, "REPO_ROOT", None)
    monkeypatch.chdir(tmp_path)
    assert paths.runs_dir() == tmp_path / "runs" and paths.figures_dir() == tmp_path / "figures"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" 1 ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("", False),
        (None, False),
    ],
)
def test_quick_mode(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CIFAR_QUICK", raising=False)
    else:
        monkeypatch.setenv("CIFAR_QUICK", value)
    assert paths.is_quick_mode() is expected


def test_quick_mode_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("CIFAR_QUICK", "maybe")
    with pytest.raises(
        ValueError, match=r"CIFAR_QUICK must be 1 or 0 \(or true/false, yes/no\); received .maybe."
    ):
        paths.is_quick_mode()


@pytest.mark.parametrize(
    "value, expected", [("1", True), ("0", False), ("", False), ("yes", False)]
)
def test_show_all_tf_logs(monkeypatch, value, expected):
    monkeypatch.setenv("CIFAR_TF_LOGS", value)
    assert paths.show_all_tf_logs() is expected


# --- finding the trained model ------------------------------------------------------------


def test_find_trained_model_takes_the_preferred_place_then_the_other(tmp_path, monkeypatch):
    shipped = tmp_path / "models" / "fast_net.keras"
    monkeypatch.setattr(paths, "SHIPPED_MODEL", shipped)
    runs = tmp_path / "runs"
    for prefer in ("shipped", "trained"):
        path, why = paths.find_trained_model(runs, prefer)
        assert path is None and "no trained model" in why
    (tmp_path / "models").mkdir()
    shipped.write_bytes(b"x")
    path, why = paths.find_trained_model(runs, prefer="trained")  # none trained: the shipped one
    assert path == shipped and "shipped" in why and "none trained in" in why
    (runs / "baseline_cnn").mkdir(parents=True)
    (runs / "baseline_cnn" / "best.keras").write_bytes(b"x")
    assert paths.find_trained_model(runs, "trained")[0] == runs / "baseline_cnn" / "best.keras"
    (runs / "fast").mkdir(parents=True)
    (runs / "fast" / "best.keras").write_bytes(b"x")
    path, why = paths.find_trained_model(runs, "trained")  # the fast recipe's first
    assert path == runs / "fast" / "best.keras" and "notebook 04" in why
    path, why = paths.find_trained_model(runs)  # by default the model every learner has
    assert path == shipped and why.startswith("shipped with the repository")
    shipped.unlink()
    path, why = paths.find_trained_model(runs)
    assert path == runs / "fast" / "best.keras" and "none shipped" in why
    with pytest.raises(ValueError, match="prefer must be 'shipped' or 'trained'; received 'mine'"):
        paths.find_trained_model(runs, "mine")


def test_find_trained_model_looks_below_the_repository_root_whatever_the_working_directory(
    tmp_path, monkeypatch, no_path_env
):
    """runs_dir() is the repository's runs/, not the working directory's; $CIFAR_OUTPUT_DIR wins."""
    repo = tmp_path / "repo"
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    monkeypatch.setattr(paths, "SHIPPED_MODEL", repo / "models" / "fast_net.keras")  # none shipped
    (repo / "runs" / "fast").mkdir(parents=True)
    (repo / "runs" / "fast" / "best.keras").write_bytes(b"x")
    (repo / "notebooks").mkdir()
    elsewhere = tmp_path / "elsewhere"  # a working directory with a runs/ of its own
    (elsewhere / "runs" / "baseline_cnn").mkdir(parents=True)
    (elsewhere / "runs" / "baseline_cnn" / "best.keras").write_bytes(b"x")
    for cwd in (repo, repo / "notebooks", elsewhere):
        monkeypatch.chdir(cwd)
        path, why = paths.find_trained_model(prefer="trained")
        assert path.resolve() == repo / "runs" / "fast" / "best.keras", cwd
        assert "cifar-train" in why
    monkeypatch.setenv("CIFAR_OUTPUT_DIR", str(tmp_path / "explicit"))  # an explicit folder wins
    path, why = paths.find_trained_model()
    assert path is None and "explicit" in why and "no trained model" in why
    (tmp_path / "explicit" / "fast").mkdir(parents=True)
    (tmp_path / "explicit" / "fast" / "best.keras").write_bytes(b"x")
    assert paths.find_trained_model()[0] == tmp_path / "explicit" / "fast" / "best.keras"


# --- paths shown in committed outputs ------------------------------------------------------


def test_display_path_never_shows_the_machines_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    assert paths.display_path(ROOT / ".cache" / "cifar10") == "../.cache/cifar10"
    monkeypatch.chdir(tmp_path)
    assert paths.display_path(tmp_path / "a" / "b") == ".../b"  # below the working directory only
    assert paths.display_path(ROOT / ".cache") == "<repository>/.cache"
    monkeypatch.chdir("/")  # a container's usual working directory: no path without its slash
    assert paths.display_path(ROOT / ".cache") == "<repository>/.cache"
    assert paths.display_path(tmp_path / "a") == ".../a"
    assert paths.display_path("/nowhere/known/folder") == ".../folder"
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    monkeypatch.chdir(ROOT)
    assert paths.display_path(tmp_path / "x") == f"~/{tmp_path.name}/x"


def test_tf_config_is_read_through_paths(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert paths.tf_config() == ""
    monkeypatch.setenv("TF_CONFIG", '  {"cluster": {}}  ')
    assert paths.tf_config() == '{"cluster": {}}'
