#!/usr/bin/env bash
# The README's "Catching a regression" example: bench/matrices/three-seeds.yaml run as it is (BASE) and again
# with one environment change, OMP_NUM_THREADS=1 (NEW), then `cifarbench compare BASE NEW --fail-if-slower 0.05`,
# which exits 1 here: NEW is slower. Results in OUT_DIR (default bench/results/<host>/regression-example).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/$(hostname -s)/regression-example}
cli=.venv/bin/cifarbench
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline
$cli run bench/matrices/three-seeds.yaml --output_dir "$out/base" || exit
OMP_NUM_THREADS=1 $cli run bench/matrices/three-seeds.yaml --output_dir "$out/new" || exit
$cli compare "$out/base/three-seeds" "$out/new/three-seeds" --fail-if-slower 0.05 --output "$out/compare"
echo "compare exited with $? (1: a configuration is slower beyond the 5% threshold)"
