#!/usr/bin/env bash
# `make fast-recipe`: the fast recipe (bench/configs/fast.yaml) against the seed's on real CIFAR-10 images,
# on this machine: time to 70% validation accuracy, training stopped there, on a 10,000-image class-balanced
# training subset (validation: 1,000 held out of it; test: 2,000). Both run the seed's full-width network
# with the same execution knobs (device data path, bf16-mixed, channels_last), so the difference is the
# recipe: schedule, label smoothing, epochs, flip TTA. About 17 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CIFAR10:-../shared/data/cifar10-jpeg.tar.gz}
out=${1:-results/fast-recipe}
cli=.venv/bin/cifarbench
common=(--data.source folder --data.root "$data" --data.train_subset 11000 --data.val_size 1000
        --data.test_subset 2000 --data.path device --data.num_workers 0 --trainer.precision bf16-mixed
        --trainer.channels_last true --measure.target_accuracy 0.70 --measure.stop_at_target true
        --output.dir "$out")
$cli fit "${common[@]}" --output.run_id seed-recipe --output.name seed
$cli fit -c bench/configs/fast.yaml "${common[@]}" --output.run_id fast-recipe
$cli report "$out" --baseline seed-recipe
