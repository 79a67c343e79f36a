#!/usr/bin/env bash
# The README's test command: set up .venv if needed, lint, then run the test suite.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/setup_env.sh"
source "$root/scripts/fetch_test_assets.sh"
cd "$root"
"$VENV_PY" -m ruff check .
"$VENV_PY" -m pytest "$@"
