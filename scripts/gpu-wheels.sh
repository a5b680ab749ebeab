#!/usr/bin/env bash
# Fetches, here, the wheels the lent GPU machine lacks (its image has Python 3.12 with torch, Lightning,
# torchmetrics, rich, pandas, matplotlib, PyYAML, OpenCV headless), into .whl/ (git-ignored), and copies the
# CIFAR-10 tarball into .gpu-data/, both to be carried to it: see scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=(jsonargparse docstring-parser typeshed-client importlib-resources albumentations albucore pydantic
        pydantic-core annotated-types typing-inspection stringzilla simsimd)
rm -rf .whl && mkdir -p .whl .gpu-data
for name in "${wheels[@]}"; do
    # the version this checkout's .venv runs, when it has the package (albucore must match albumentations)
    version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$name${version:+==$version}" 2> >(grep -v "is ignored" >&2)
done
cp ../shared/data/cifar10-jpeg.tar.gz .gpu-data/
du -sh .whl .gpu-data
