#!/usr/bin/env bash
# Installs cifarbench and everything it needs into ./.venv (idempotent: a second run only checks).
# Used by `make demo`, `make test` and CI; needs Python 3.11 and pip's local torch wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.cifarbench-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

# System libraries FFCV compiles against (Debian names).
apt_packages="pkg-config libopencv-dev libturbojpeg0-dev"
if ! dpkg -s $apt_packages >/dev/null 2>&1; then
    echo "installing $apt_packages with apt-get (FFCV builds against them)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $apt_packages >/dev/null
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
# torch/torchvision pinned to the versions this machine serves from local disk.
"$venv/bin/python" -m pip install --quiet -e ".[dev,ffcv]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "$want" > "$stamp"
echo "cifarbench installed in $venv"
