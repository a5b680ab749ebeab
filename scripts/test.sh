#!/usr/bin/env bash
# The README's test command (`make test`): installs everything, starts the local Slurm cluster of two nodes the
# Slurm and multi-node tests use, runs the suite, and stops the cluster (daemons, namespaces, links) again, also
# when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# headless Chromium for the HTML report test (driven by Playwright; its own browser download needs a network)
if ! command -v chromium >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
state=$(mktemp -d /tmp/cifarbench-slurm.XXXXXX)
trap 'bash scripts/slurm-stop.sh "$state"' EXIT
eval "$(bash scripts/slurm-start.sh --nodes 2 "$state")"   # exports SLURM_CONF
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline
.venv/bin/python -m pytest tests --durations=15 "$@"  # the slowest 15 printed: the suite stays under 35 minutes
