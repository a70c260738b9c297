# Sourced by run_notebooks.sh and test.sh: idempotent set-up of a fresh machine.
#  - a virtual environment in .venv (or $CIFAR_VENV) with requirements.txt and the package
#    installed editable; reinstalled only when requirements.txt or pyproject.toml change;
#  - CIFAR10_DIR: kept when already set; otherwise the offline copy is built from
#    ../shared/data (once, into .cache/cifar10); otherwise Keras downloads it (needs internet).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CIFAR_VENV:-$ROOT/.venv}"

if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

stamp="$VENV/.cifar_requirements.sha256"
wanted="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing requirements into $VENV"
    log="$VENV/pip-install.log"
    if ! { python -m pip install --upgrade pip &&
           python -m pip install -r "$ROOT/requirements.txt" -e "$ROOT[tensorflow]"; } > "$log" 2>&1; then
        tail -n 40 "$log"
        echo "setup: pip install failed; full log in $log" >&2
        exit 1
    fi
    echo "$wanted" > "$stamp"
fi

if [ -z "${CIFAR10_DIR:-}" ]; then
    builder="$ROOT/../shared/data/build_cifar10.py"
    if [ -f "$builder" ]; then
        data_root="${CIFAR10_BUILD_DIR:-$ROOT/.cache/cifar10}"
        python "$builder" "$data_root" > /dev/null  # leaves a complete copy alone
        # The first 1,000 official test images, lossless (data.load_lossless_test_sample).
        lossless="$ROOT/../shared/data/official_test_first_1000.png"
        [ -f "$lossless" ] && cp "$lossless" "$data_root/"
        export CIFAR10_DIR="$data_root/cifar-10-batches-py"
        echo "setup: CIFAR10_DIR=$CIFAR10_DIR (offline copy, JPEG re-encoded)"
    else
        echo "setup: CIFAR10_DIR is not set and ../shared/data is absent;" \
             "load_cifar10 will fall back to Keras's download (needs internet)."
    fi
fi
