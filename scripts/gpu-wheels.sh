#!/usr/bin/env bash
# The wheels the lent GPU machine lacks (its image: Python 3.12 with torch 2.11, Lightning 2.6, torchmetrics, rich,
# pandas, matplotlib, PyYAML, OpenCV headless; no wandb, which gpu-check does not need), pinned in
# scripts/gpu-wheels.lock to the versions this checkout's .venv runs, i.e. the ones `make test` tests together.
#   scripts/gpu-wheels.sh --lock   rewrites the lock from .venv (after a dependency change; commit it)
#   scripts/gpu-wheels.sh          downloads exactly the locked wheels for cp312 into .whl/ and copies the CIFAR-10
#                                  tarball into .gpu-data/ (both git-ignored), to be carried: see scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
lock=scripts/gpu-wheels.lock
names=(jsonargparse docstring-parser typeshed-client albumentations albucore pydantic pydantic-core annotated-types
       typing-inspection stringzilla simsimd)
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
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl -r "$lock" 2> >(grep -v "is ignored" >&2)
cp ../shared/data/cifar10-jpeg.tar.gz .gpu-data/
du -sh .whl .gpu-data
