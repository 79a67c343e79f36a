#!/usr/bin/env bash
# Create (or reuse) .venv with ganforge and its test tools, pinned to the CPU build of PyTorch.
# Usage: source scripts/setup_env.sh   (sets VENV_PY); GANFORGE_VENV overrides the location.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${GANFORGE_VENV:-$root/.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.ganforge-installed"
if [ ! -f "$stamp" ] || [ "$root/setup.cfg" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch first, alone, so the pinned CPU wheel is what every later requirement sees.
  "$venv/bin/python" -m pip install -q -c "$root/constraints-cpu.txt" torch
  "$venv/bin/python" -m pip install -q -c "$root/constraints-cpu.txt" -e "$root[test]"
  touch "$stamp"
fi
VENV_PY="$venv/bin/python"
export VENV_PY
