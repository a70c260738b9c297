#!/usr/bin/env bash
# The main job: execute every notebook in order, headless, saving outputs into the notebooks
# and figures into figures/.  Full runs by default; CIFAR_QUICK=1 for a fast smoke run.
#   bash scripts/run_notebooks.sh [notebooks/NN_name.ipynb ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

if [ "$#" -gt 0 ]; then notebooks=("$@"); else notebooks=(notebooks/[0-9][0-9]_*.ipynb); fi
for nb in "${notebooks[@]}"; do
    start=$(date +%s)
    echo "run: $nb"
    jupyter nbconvert --to notebook --execute --inplace \
        --ExecutePreprocessor.timeout=-1 --log-level=WARN "$nb"
    echo "run: $nb done in $(( $(date +%s) - start )) s"
done
