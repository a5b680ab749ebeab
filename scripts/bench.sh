#!/usr/bin/env bash
# `make bench`: the benchmarks that run on this machine, results as files in OUT_DIR (default
# bench/results/<host>): harness overhead, knob speed-ups, data-path throughput (pytest-benchmark JSON,
# comparable across commits with --benchmark-compare) and the GPU check (GPU-only parts skipped on a CPU),
# then summary.md with all of them. About 10-15 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/$(hostname -s)}
mkdir -p "$out"
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1
py=.venv/bin/python
$py bench/harness_overhead.py --out "$out"
$py bench/knobs.py --out "$out"
$py -m pytest bench/test_data_path_throughput.py -q -p no:cacheprovider --benchmark-json="$out/data_paths.json" \
    --benchmark-columns=min,median,max,rounds
$py bench/data_path_table.py "$out/data_paths.json" > "$out/data_paths.md"
bash scripts/gpu-check.sh "$out/gpu-check"
{
    echo "# cifarbench benchmarks: $(hostname -s), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git describe --always --dirty)"
    echo
    echo "Made by \`make bench\` (scripts/bench.sh). Machine: $($py -c 'from cifarbench.measure.environment import collect_environment as c; e=c(); print(e["cpu"], e["gpu"])')"
    for part in harness_overhead knobs data_paths gpu-check/gpu-check; do
        echo; echo "## ${part%%/*}"; echo; cat "$out/$part.md"
    done
} > "$out/summary.md"
echo "$out/summary.md"
