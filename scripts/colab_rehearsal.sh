#!/usr/bin/env bash
# A rehearsal of Colab on a machine without it, run by CI (.ci/run):
#  1. a fresh virtual environment holds the oldest TensorFlow and Keras the package supports
#     (pyproject.toml's lower bounds), plus Jupyter: a stand-in for Colab's preinstalled set;
#  2. a stub `google.colab` module is imported at start-up, so the notebooks' install cell takes
#     its Colab branch, with CIFAR_REPOSITORY pointing at this repository (a file:// address in
#     place of the public one): it clones, runs scripts/colab_setup.py and installs the package;
#  3. notebooks 01 and 05 run in quick mode from a folder standing in for Colab's /content;
#  4. checks: TensorFlow and Keras were not reinstalled, notebook 05 used the shipped model.
#  5. with --with-tests: the unit tests not marked slow in that same environment, so that the
#     lower bounds in pyproject.toml stay the oldest versions the API is tested on (the slow
#     tests are training runs of the same calls; scripts/test.sh runs them on the newest set,
#     and all of them here would push CI past its 45 minutes).
# Needs the committed state of the repository (it is cloned) and, offline, ../shared/data.
#   bash scripts/colab_rehearsal.sh [--with-tests]
set -euo pipefail
with_tests=0
case "${1:-}" in
    --with-tests) with_tests=1 ;;
    "") ;;
    *) echo "usage: bash scripts/colab_rehearsal.sh [--with-tests]" >&2; exit 2 ;;
esac
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"  # CIFAR10_DIR (offline copy) and the main .venv
cd "$ROOT"

tf_min=$(sed -n 's/^ *"tensorflow>=\([0-9.]*\)".*/\1/p' pyproject.toml)
keras_min=$(sed -n 's/^ *"keras>=\([0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$tf_min" ] && [ -n "$keras_min" ] || { echo "rehearsal: no lower bounds in pyproject.toml" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
venv="$work/colab-venv"
echo "rehearsal: a fresh environment with tensorflow==$tf_min keras==$keras_min (Colab's stand-in)"
"${PYTHON:-python3}" -m venv "$venv"
if ! "$venv/bin/python" -m pip install -q "tensorflow==$tf_min" "keras==$keras_min" \
        ipykernel nbconvert nbclient > "$work/pip.log" 2>&1; then
    tail -n 30 "$work/pip.log"; echo "rehearsal: installing the stand-in failed" >&2; exit 1
fi

# Version and install time of TensorFlow and Keras: a reinstall changes at least the time.
fingerprint() {
    "$venv/bin/python" - <<'PY'
import importlib.metadata as m, os
for name in ("tensorflow", "keras"):
    dist = m.distribution(name)
    meta = next(dist.locate_file(f) for f in dist.files if f.name == "METADATA")
    print(name, dist.version, os.stat(meta).st_mtime_ns)
PY
}
before="$(fingerprint)"
echo "rehearsal: before the install cell: $(echo "$before" | cut -d' ' -f1,2 | paste -sd' ')"

# Colab imports google.colab before any cell runs; the stub does the same.
mkdir -p "$work/stub/google/colab" "$work/content" "$work/out"
: > "$work/stub/google/colab/__init__.py"
echo "import google.colab  # noqa: F401  the rehearsal's stand-in" > "$work/stub/sitecustomize.py"
cp notebooks/01_data_exploration.ipynb notebooks/05_evaluation.ipynb "$work/content/"
# The clone's tests compare pixels with ../shared/data, as in the repository's own checkout.
[ -d "$ROOT/../shared" ] && ln -s "$(cd "$ROOT/../shared" && pwd)" "$work/content/shared"

status=0
for nb in 01_data_exploration 05_evaluation; do
    echo "rehearsal: running $nb in quick mode as Colab would"
    if ! (cd "$work/content" && env -u CIFAR_OUTPUT_DIR -u CIFAR_FIGURES_DIR \
            PYTHONPATH="$work/stub" CIFAR_REPOSITORY="file://$ROOT" CIFAR_QUICK=1 MPLBACKEND=Agg \
            TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/jupyter" nbconvert --to notebook --execute \
            --ExecutePreprocessor.timeout=900 --log-level=WARN --output-dir "$work/out" "$nb.ipynb"); then
        echo "rehearsal: $nb failed" >&2; status=1
    fi
done

after="$(fingerprint)"
echo "rehearsal: after the install cell:  $(echo "$after" | cut -d' ' -f1,2 | paste -sd' ')"
if [ "$before" != "$after" ]; then
    echo "rehearsal: the install cell replaced TensorFlow or Keras:" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    status=1
fi
"$venv/bin/python" - "$work/out" "$tf_min" "$keras_min" <<'PY' || status=1
import json, sys
from pathlib import Path

out, tf_min, keras_min = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def text(name):
    cells = json.loads((out / f"{name}.ipynb").read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
setup = text("01_data_exploration")
cell = next(c for c in json.loads((out / "01_data_exploration.ipynb").read_text())["cells"]
            if "colab-setup" in c["metadata"].get("tags", []))
printed = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
print("rehearsal: what the install cell printed in notebook 01:")
print("\n".join("    " + line for line in printed.splitlines() if line.strip() and "WARNING: Location" not in line
                 and not line.startswith("\x1b")))
for line in (f"tensorflow {tf_min}: kept.", f"keras {keras_min}: kept.",
             f"tensorflow {tf_min} -> {tf_min} | keras {keras_min} -> {keras_min}"):
    assert line in setup, f"the install cell did not print {line!r}"
model = text("05_evaluation")
assert "shipped with the repository" in model, "notebook 05 did not use the shipped model"
print("rehearsal: the install cell kept TensorFlow; notebook 05 used the shipped model")
PY
if [ "$status" = 0 ] && [ "$with_tests" = 1 ]; then
    clone="$work/content/$(basename "$ROOT")"
    echo "rehearsal: the unit tests not marked slow under tensorflow==$tf_min keras==$keras_min"
    printf 'tensorflow==%s\nkeras==%s\n' "$tf_min" "$keras_min" > "$work/constraints.txt"
    if ! "$venv/bin/python" -m pip install -q -c "$work/constraints.txt" -e "$clone[tensorflow,test]" > "$work/pip-test.log" 2>&1; then
        tail -n 30 "$work/pip-test.log"; echo "rehearsal: installing the test extras failed" >&2; status=1
    elif ! (cd "$clone" && env -u CIFAR_REQUIRE_BROWSER MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL=2 \
            "$venv/bin/python" -m pytest tests -q -p no:cacheprovider -m "not slow"); then
        status=1
    fi
fi
[ "$status" = 0 ] && echo "rehearsal: passed" || echo "rehearsal: FAILED" >&2
exit "$status"
