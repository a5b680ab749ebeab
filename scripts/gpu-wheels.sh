#!/usr/bin/env bash
# The wheels the lent GPU machine lacks (its image: Python 3.12 with torch 2.11, Lightning 2.6, torchmetrics, rich,
# pandas, matplotlib, PyYAML, OpenCV headless; no wandb, which gpu-check does not need), pinned in
# scripts/gpu-wheels.lock to the versions this checkout's .venv runs, i.e. the ones `make test` tests together.
#   scripts/gpu-wheels.sh --lock   rewrites the lock from .venv (after a dependency change; commit it)
#   scripts/gpu-wheels.sh          downloads exactly the locked wheels for CPython $GPU_PYTHON (default 3.12, the
#                                  GPU image's) into .whl/ and copies the CIFAR-10 tarball into .gpu-data/ (both
#                                  git-ignored; CIFAR10=PATH for another copy), to be carried: scripts/gpu-check.sh.
#                                  tests/test_gpu_check.py runs it for this machine's Python, to test that install
#                                  in a clean venv.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=scripts/gpu-wheels.lock
names=(jsonargparse docstring-parser typeshed-client albumentations albucore pydantic pydantic-core annotated-types
       typing-inspection stringzilla simsimd airbench)
sdist_only=airbench  # PyPI has no wheel of airbench 0.1.8 (pure Python): built into one here
if [ "${1:-}" = "--lock" ]; then
    {
        echo "# scripts/gpu-wheels.sh --lock: the versions .venv runs (tested together by make test)"
        for name in "${names[@]}"; do
            version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
            [ -n "$version" ] || { echo "gpu-wheels: $name is not installed in .venv (run make setup)" >&2; exit 1; }
            echo "$name==$version"
        done
    } > "$lock.partial"
    mv "$lock.partial" "$lock"
    cat "$lock"
    exit 0
fi
rm -rf .whl && mkdir -p .whl .gpu-data
python=${GPU_PYTHON:-3.12}
grep -v -E "^($sdist_only)==" "$lock" > .whl/binary.lock
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl -r .whl/binary.lock 2> >(grep -v "is ignored" >&2)
python3 -m pip wheel -q --no-deps -w .whl $(grep -E "^($sdist_only)==" "$lock") 2> >(grep -v "is ignored" >&2)
rm .whl/binary.lock
data=${CIFAR10:-../shared/data/cifar10-jpeg.tar.gz}
if [ -f "$data" ]; then
    cp "$data" .gpu-data/cifar10-jpeg.tar.gz
else
    echo "gpu-wheels: no $data (CIFAR10=...): the check's real-image steps will be skipped" >&2
fi
du -sh .whl .gpu-data
