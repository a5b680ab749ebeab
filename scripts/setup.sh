#!/usr/bin/env bash
# Installs cifarbench and everything it needs into ./.venv (idempotent: a second run only checks), at the exact
# versions of constraints.txt (what `make test` tests together; pyproject.toml names only ranges). Used by
# `make demo`, `make test` and CI; needs Python >= 3.10 with venv and pip, and no root: FFCV (the optional
# data.path=ffcv) is built only where its system libraries are found, or can be installed (root with apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.cifarbench-installed"
extras=dev,vision,analyze,ffcv

# FFCV compiles against OpenCV and libjpeg-turbo, found through pkg-config (any distribution, conda too).
ffcv_libraries_found() { command -v pkg-config >/dev/null && pkg-config --exists opencv4 libturbojpeg; }
if ! ffcv_libraries_found; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing pkg-config libopencv-dev libturbojpeg0-dev with apt-get (FFCV builds against them)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            pkg-config libopencv-dev libturbojpeg0-dev >/dev/null
    else
        extras=dev,vision,analyze
        echo "FFCV skipped: it builds against OpenCV and libjpeg-turbo found by pkg-config (as root: apt-get install" \
             "pkg-config libopencv-dev libturbojpeg0-dev; without root: conda install -c conda-forge pkg-config" \
             "opencv libjpeg-turbo, FFCV's own route); data.path=ffcv is refused until then"
    fi
fi

want=$(cat pyproject.toml constraints.txt scripts/setup.sh <(echo "$extras") | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
"$venv/bin/python" -m pip install --quiet -c constraints.txt -e ".[$extras]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "$want" > "$stamp"
echo "cifarbench installed in $venv"
