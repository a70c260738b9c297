"""The package's import graph: layered, deployment below training, no lazy import dodging a
cycle."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_utils"
# Modules that use trained models. They must not depend on how models are trained.
DEPLOYMENT = ("evaluation", "inference", "export", "web")
TRAINING = ("training", "tuning", "callbacks")


def _imports(module: str, top_level_only: bool) -> set:
    """The cifar_utils modules `module` imports (at the top, or anywhere)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("cifar_utils")
        ):
            if node.module == "cifar_utils":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("cifar_utils.")
            )
    return found - {module}


def _modules():
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_deployment_never_imports_training():
    for module in DEPLOYMENT:
        everywhere = _imports(module, top_level_only=False)
        assert not everywhere & set(TRAINING), f"{module} imports {everywhere & set(TRAINING)}"


def test_no_lazy_imports_of_the_package_inside_functions():
    for module in _modules():
        lazy = _imports(module, top_level_only=False) - _imports(module, top_level_only=True)
        assert not lazy, f"cifar_utils.{module} imports {sorted(lazy)} inside a function"


def test_the_import_graph_has_no_cycle():
    graph = {m: _imports(m, top_level_only=True) for m in _modules()}
    state = {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", "import cycle: " + " -> ".join(path + [node])
        state[node] = "open"
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])
        state[node] = "done"

    for module in graph:
        visit(module, [])


def test_paths_and_tf_logs_need_only_the_standard_library():
    for module in ("paths", "tf_logs"):
        assert _imports(module, top_level_only=False) <= {"paths"}, module
    code = "import sys, cifar_utils, cifar_utils.paths; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_checker_sees_a_lazy_import(tmp_path, monkeypatch):
    """The checks above can fail: a module with a function-level package import is caught."""
    (tmp_path / "a.py").write_text("from cifar_utils import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from cifar_utils import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert _imports("b", top_level_only=False) - _imports("b", top_level_only=True) == {"a"}
    (tmp_path / "b.py").write_text("from cifar_utils import a\n")
    try:
        test_the_import_graph_has_no_cycle()
    except AssertionError as err:
        assert "cycle" in str(err)
    else:
        raise AssertionError("a cycle a -> b -> a was not reported")


def test_the_package_docstring_lists_every_module_in_its_reading_order():
    import cifar_utils

    missing = [m for m in _modules() if f"`cifar_utils.{m}`" not in cifar_utils.__doc__]
    assert not missing, f"the package docstring does not list {missing}"


def test_no_private_keras_state_and_no_test_hooks_in_the_package():
    """Resuming goes through `fit(initial_epoch=...)`; kill tests wrap functions in their child."""
    private = (
        "._initial_epoch",
        "._load_model",
        "._save_model",
        "._current_epoch",
        "pause_for_test",
    )
    for module in _modules():
        source = (PACKAGE / f"{module}.py").read_text()
        found = [name for name in private if name in source]
        assert not found, f"cifar_utils.{module} uses {found}"
