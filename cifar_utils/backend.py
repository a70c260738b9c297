"""Which Keras backend runs this course, and what only TensorFlow can do.

Keras 3 runs the same model code on TensorFlow, JAX or PyTorch. The backend is chosen
the Keras way, before Keras is first imported: the `KERAS_BACKEND` environment variable
(`KERAS_BACKEND=jax jupyter lab`), else `~/.keras/keras.json`, else TensorFlow. Install
the one you want with the package: `pip install -e ".[tensorflow]"` (the default),
`".[jax]"` or `".[torch]"`.

TensorFlow stays the default and the only backend for what only it has: `tf.data`
pipelines (used where they are faster), SavedModel and TFLite export, and
`tf.distribute` strategies. Those call `require_tensorflow`, which says in one sentence
that TensorFlow is missing and how to install it.

Example:

>>> from cifar_utils import backend
>>> backend.name() in backend.BACKENDS
True
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")
# The distribution that provides each backend, and the extra that installs it.
LIBRARIES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# Other names the same library is installed under.
OTHER_DISTRIBUTIONS = {"tensorflow": ("tensorflow-cpu", "tensorflow-intel", "tf-nightly")}


class NeedsTensorFlow(RuntimeError):
    """Raised by what only TensorFlow can do when TensorFlow is not installed."""


def configured_name() -> str:
    """The backend Keras will use, read as Keras reads it, without importing Keras.

    Returns:
        "tensorflow", "jax", "torch" (or another name Keras knows, such as "numpy").
    """
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen.strip().lower()
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    try:
        config = json.loads((keras_home / "keras.json").read_text())
        return str(config.get("backend", "tensorflow")).lower()
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def installed(library: str) -> bool:
    """Whether a Python package can be imported here (without importing it)."""
    return importlib.util.find_spec(library) is not None


def tensorflow_installed() -> bool:
    """Whether TensorFlow is installed, whichever backend Keras runs on."""
    return installed("tensorflow")


def check_installed() -> str:
    """Checks that the configured backend's library is installed, before Keras is imported.

    Returns:
        The backend's name.

    Raises:
        ImportError: one sentence naming the backend and the install command.
    """
    chosen = configured_name()
    library = LIBRARIES.get(chosen)
    if library and not installed(library):
        here = [b for b in BACKENDS if installed(LIBRARIES[b])]
        instead = f" or choose one installed here: KERAS_BACKEND={here[0]}" if here else ""
        raise ImportError(
            f"Keras is set to run on {chosen} (KERAS_BACKEND or ~/.keras/keras.json), and "
            f'{library} is not installed: pip install -e ".[{chosen}]"{instead}.'
        )
    return chosen


def name() -> str:
    """The backend Keras runs on: "tensorflow", "jax" or "torch"."""
    import keras

    return keras.backend.backend()


def is_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow."""
    return name() == "tensorflow"


def library_version(backend: str | None = None) -> str:
    """The version of a backend's library ("2.21.0"), or "not installed".

    Read from the module when it is already imported (TensorFlow also comes as
    tensorflow-cpu, tf-nightly, ...), else from the installed distribution.
    """
    library = LIBRARIES.get(backend or name(), backend or name())
    module = sys.modules.get(library)
    if getattr(module, "__version__", None):
        return str(module.__version__)
    for distribution in (library, *OTHER_DISTRIBUTIONS.get(library, ())):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def describe() -> str:
    """One line: the backend and its version, e.g. "JAX 0.10.2"."""
    label = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
    current = name()
    return f"{label.get(current, current)} {library_version(current)}"


def require_tensorflow(what: str, as_backend: bool = False) -> None:
    """Raises `NeedsTensorFlow` in one sentence when TensorFlow cannot do `what` here.

    Args:
        what: what needs it, e.g. "TFLite conversion".
        as_backend: Keras itself must run on TensorFlow (exporting a Keras model), not
            just have TensorFlow installed (loading a SavedModel). Defaults to False.
    """
    if as_backend and name() != "tensorflow":
        raise NeedsTensorFlow(
            f"{what} needs Keras on TensorFlow, and it runs on {name()}: start Python with "
            "KERAS_BACKEND=tensorflow (the .keras file loads there), or use the .keras file."
        )
    if not tensorflow_installed():
        raise NeedsTensorFlow(
            f"{what} needs TensorFlow, which is not installed here (Keras runs on {name()}); "
            'install it with pip install -e ".[tensorflow]", or use a .keras file instead.'
        )
