#!/usr/bin/env bash
# Writes REVISION.json (commit and dirty flag) at the repository root, for a copy of the tree that travels
# without .git (the GPU machine): records made there name the commit they ran. Ignored by git: name it in the device tool's carry list.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(git rev-parse HEAD)
dirty=false
[ -n "$(git status --porcelain --untracked-files=no)" ] && dirty=true
printf '{"commit": "%s", "dirty": %s}\n' "$commit" "$dirty" > REVISION.json
echo "REVISION.json: $commit (dirty: $dirty)"
