#!/usr/bin/env bash
# Keras 3's other backends, each in its own virtual environment without TensorFlow (a GPU
# machine's situation: PyTorch or JAX, no TensorFlow). Under each, notebooks 01, 03 and 05 in
# quick mode, whose outputs must be clean (tests/test_notebook_outputs.py), and the core tests:
# all of them under JAX, a smaller subset under PyTorch.
#   bash scripts/test_backends.sh [jax] [torch]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"  # CIFAR10_DIR (the offline copy)
cd "$ROOT"
deactivate

# The core subset: the package's teaching core on any backend (TensorFlow-only tests live in
# the other files: tf.data internals, tf.distribute, SavedModel/TFLite, FLOPs from TF's profiler).
JAX_TESTS=(tests/test_backends.py tests/test_data.py tests/test_augment.py tests/test_layers.py
           tests/test_models.py tests/test_schedules.py tests/test_recipes.py tests/test_callbacks.py
           tests/test_training.py tests/test_resume.py tests/test_evaluation.py tests/test_plots.py
           tests/test_inference.py tests/test_runs.py tests/test_storage.py tests/test_tuning.py)
TORCH_TESTS=(tests/test_backends.py tests/test_data.py tests/test_layers.py tests/test_models.py
             tests/test_callbacks.py tests/test_evaluation.py tests/test_inference.py
             tests/test_tuning.py)
NOTEBOOKS=(notebooks/01_data_exploration.ipynb notebooks/03_model_building.ipynb
           notebooks/05_evaluation.ipynb)

venv_for() {  # creates or updates .cache/venv-<backend>; prints its python
    local name="$1" venv="$ROOT/.cache/venv-$1"
    local stamp="$venv/.cifar_requirements.sha256"
    local wanted
    wanted="$(cat requirements.txt requirements-backends.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [ ! -x "$venv/bin/python" ]; then "${PYTHON:-python3}" -m venv "$venv"; fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        echo "backends: installing Keras on $name into $venv" >&2
        if ! "$venv/bin/python" -m pip install -q -c requirements.txt -c requirements-backends.txt \
                -e ".[$name,test]" ipykernel nbconvert > "$venv/pip-install.log" 2>&1; then
            tail -n 30 "$venv/pip-install.log" >&2
            echo "backends: pip install failed; full log in $venv/pip-install.log" >&2
            exit 1
        fi
        echo "$wanted" > "$stamp"
    fi
    if "$venv/bin/python" -c "import tensorflow" 2> /dev/null; then
        echo "backends: TensorFlow is installed in $venv; these tests need it absent" >&2
        exit 1
    fi
    echo "$venv/bin/python"
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export CIFAR_QUICK=1 CIFAR_FIGURES_DIR="$scratch/figures" CIFAR_OUTPUT_DIR="$scratch/runs"
export MPLBACKEND=Agg

backends=("$@")
if [ "${#backends[@]}" -eq 0 ]; then backends=(jax torch); fi
status=0
for name in "${backends[@]}"; do
    python="$(venv_for "$name")"
    export KERAS_BACKEND="$name"
    echo "backends: $name ($("$python" -c 'from cifar_utils import backend; print(backend.describe())'))"
    if [ "$name" = jax ]; then tests=("${JAX_TESTS[@]}"); else tests=("${TORCH_TESTS[@]}"); fi
    start=$(date +%s)
    "$python" -m pytest -q -p no:cacheprovider "${tests[@]}" || status=1
    echo "backends: $name tests took $(( $(date +%s) - start )) s"
    rm -rf "$scratch/notebooks" && mkdir -p "$scratch/notebooks"
    for nb in "${NOTEBOOKS[@]}"; do
        start=$(date +%s)
        if "$python" -m jupyter nbconvert --to notebook --execute --log-level=WARN \
                --ExecutePreprocessor.timeout=900 --output-dir "$scratch/notebooks" "$nb"; then
            echo "backends: $nb ran on $name in $(( $(date +%s) - start )) s"
        else
            status=1
        fi
    done
    # Their outputs judged as the committed notebooks' are: no log lines, warnings, paths.
    CIFAR_CHECK_NOTEBOOKS_DIR="$scratch/notebooks" "$python" -m pytest -q -p no:cacheprovider \
        tests/test_notebook_outputs.py || status=1
done
exit $status
