#!/usr/bin/env bash
# The checks that need a GPU (bench/gpu_check.py), inside a budget of BUDGET seconds (default 540) on one GPU;
# on a CPU-only machine the GPU-only parts are skipped with a note. Writes OUT_DIR/gpu-check.json, gpu-check.md
# and runs.tar.gz after every step, so a check cut off keeps what it has done; an install that fails writes a
# gpu-check.json naming it. EXTRAS ('all', or a comma list) adds the optional steps after the others.
#   usage: scripts/gpu-check.sh [OUT_DIR] [BUDGET] [EXTRAS]
#
# Here: uses .venv (make setup). On the lent GPU machine (no network, only the working tree travels):
# its python3 already has torch, Lightning, torchmetrics, rich, pandas and matplotlib; the rest comes as
# wheels from .whl/ (made here by scripts/gpu-wheels.sh and carried), installed into a folder in /tmp, and cifarbench
# runs from src/. A CIFAR-10 copy in .gpu-data/ (carried too) enables the time-to-accuracy run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu-check}
budget=${2:-540}
extras=${3:-}
case "$budget" in  # checked before any install or output: bash would read a word as 0 in the timeout below
    ''|*[!0-9]*|0*) echo "gpu-check: BUDGET='$budget': allowed: whole seconds, at least 1 (default 540)" >&2; exit 2 ;;
esac

install_failed() {  # what comes back from the GPU machine is OUT_DIR: the failure goes there, as the check's JSON
    mkdir -p "$out"
    "$py" - "$out/gpu-check.json" "$1" <<'PY'
import json, sys
json.dump({"finished": False, "error": f"wheel install failed: {sys.argv[2]}", "steps": {}, "skipped": {}},
          open(sys.argv[1], "w"), indent=2)
PY
    echo "gpu-check: wheel install failed: $1" >&2
    exit 1
}
if [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    py=python3
    if compgen -G ".whl/*.whl" >/dev/null; then
        site=$(mktemp -d /tmp/cifarbench-site.XXXXXX)
        if ! log=$($py -m pip install -q --no-index --no-deps --no-cache-dir --target "$site" .whl/*.whl 2>&1); then
            install_failed "$(printf '%s\n' "$log" | grep -v '^\s*$' | tail -1)"
        fi
        export PYTHONPATH=$site
    fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
data=()
for candidate in .gpu-data/cifar10-jpeg.tar.gz ../shared/data/cifar10-jpeg.tar.gz; do
    if [ -f "$candidate" ]; then data=(--data "$candidate"); break; fi
done
# the budget skips what would not fit; the timeout only stops a step that overruns its estimate badly
exec timeout $((budget + 60)) "$py" bench/gpu_check.py --out "$out" --budget "$budget" --extras "$extras" "${data[@]}"
