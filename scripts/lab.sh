#!/usr/bin/env bash
# Work interactively: the same set-up as the other two commands (.venv with the pinned
# requirements and the package, CIFAR10_DIR), then JupyterLab on the notebooks.
#   bash scripts/lab.sh [extra jupyter lab arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
extra=()
if [ "$(id -u)" = 0 ]; then
    # JupyterLab refuses root unless told; in a container or a cloud VM root is the only user.
    echo "lab: running as root (a container or a VM?): starting JupyterLab with --allow-root" >&2
    extra=(--allow-root)
fi
exec jupyter lab notebooks/ ${extra[@]+"${extra[@]}"} "$@"
