#!/usr/bin/env bash
# Work interactively: the same set-up as the other two commands (.venv with the pinned
# requirements and the package, CIFAR10_DIR), then JupyterLab on the notebooks.
#   bash scripts/lab.sh [extra jupyter lab arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec jupyter lab notebooks/ "$@"
