#!/usr/bin/env bash
# The checks that need a GPU (bench/gpu_check.py), inside a budget of BUDGET seconds (default 480) on one GPU;
# on a CPU-only machine the GPU-only parts are skipped with a note. Writes OUT_DIR/gpu-check.json, gpu-check.md
# and runs.tar.gz after every step, so a check cut off keeps what it has done.
#   usage: scripts/gpu-check.sh [OUT_DIR] [BUDGET]
#
# Here: uses .venv (make setup). On the lent GPU machine (no network, only the working tree travels):
# its python3 already has torch, Lightning, torchmetrics, rich, pandas and matplotlib; the rest comes as
# wheels from .whl/ (made here by scripts/gpu-wheels.sh and carried), installed into a folder in /tmp, and cifarbench
# runs from src/. A CIFAR-10 copy in .gpu-data/ (carried too) enables the time-to-accuracy run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu-check}
budget=${2:-480}
case "$budget" in  # checked before any install or output: bash would read a word as 0 in the timeout below
    ''|*[!0-9]*|0*) echo "gpu-check: BUDGET='$budget': allowed: whole seconds, at least 1 (default 480)" >&2; exit 2 ;;
esac
if [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    py=python3
    if compgen -G ".whl/*.whl" >/dev/null; then
        site=$(mktemp -d /tmp/cifarbench-site.XXXXXX)
        $py -m pip install -q --no-index --no-deps --no-cache-dir --target "$site" .whl/*.whl
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
exec timeout $((budget + 60)) "$py" bench/gpu_check.py --out "$out" --budget "$budget" "${data[@]}"
