#!/usr/bin/env bash
# Build one side virtual environment per peer listed in requirements.txt (skip those already built).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../../.venv-peers"
python="${PYTHON:-python3}"
mkdir -p "$root"
status=0
grep -v '^#' "$here/requirements.txt" | grep ':' | while IFS=: read -r name packages; do
  if [ -x "$root/$name/bin/python" ] && [ -f "$root/$name/.installed" ]; then
    echo "peer $name: already installed"; continue
  fi
  echo "peer $name: installing $packages"
  "$python" -m venv "$root/$name" \
    && "$root/$name/bin/python" -m pip install --quiet --disable-pip-version-check $packages \
    && touch "$root/$name/.installed" \
    || { echo "peer $name: install failed (the benchmark will skip it)"; status=1; }
done
exit $status
