#!/usr/bin/env bash
# The test command: lint and format check (ruff), then unit tests, real-data tests and every
# notebook in quick mode under nbval.
#   bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

# Quick runs write their figures and models to a scratch folder, never over the committed ones.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export CIFAR_QUICK=1 CIFAR_FIGURES_DIR="$scratch/figures" CIFAR_OUTPUT_DIR="$scratch/runs"
export MPLBACKEND=Agg

# Lint and formatting first: a second, fast judge that no one has to remember to run.
ruff check --quiet .
ruff format --check --quiet .

python -m pytest tests notebooks --nbval-lax --nbval-current-env "$@"
