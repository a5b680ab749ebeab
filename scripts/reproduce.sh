#!/usr/bin/env bash
# `make reproduce` (not CI: hours on a CPU): the recipes on the real CIFAR-10 images in ../shared, one after the
# other in one sitting, all with the device data path, bf16-mixed and channels_last:
#   1. the seed recipe (bench/configs/seed.yaml), 24 epochs, seed protocol;
#   2. the airbench94 recipe (bench/configs/airbench94.yaml), published protocol, seeds 1, 2, 3;
# then bench/reproduce.py writes reproduce.md and reproduce.json beside the run directories. A run that is cut
# short keeps its per-epoch log (logs/metrics.csv); running this again skips the runs that have a result.
#   usage: scripts/reproduce.sh [OUT_DIR]     (default bench/results/cpu-2core/reproduce)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CIFAR10:-../shared/data/cifar10-jpeg.tar.gz}
out=${1:-bench/results/cpu-2core/reproduce}
cli=.venv/bin/cifarbench
common=(--data.source folder --data.root "$data" --data.path device --trainer.precision bf16-mixed
        --trainer.channels_last true --trainer.checkpoint_every_n_epochs 4 --output.dir "$out" --output.wandb disabled)
$cli fit -c bench/configs/seed.yaml "${common[@]}" --output.run_id seed-recipe
for seed in 1 2 3; do
    $cli fit -c bench/configs/airbench94.yaml "${common[@]}" --trainer.seed "$seed" --measure.target_accuracy 0.90 \
        --output.run_id "airbench94-seed$seed"
done
.venv/bin/python bench/reproduce.py "$out"
