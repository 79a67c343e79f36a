#!/usr/bin/env bash
# The README's main job: set up .venv if needed, train the default preset on bundled data, write samples.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/setup_env.sh"
cd "$root"
"$VENV_PY" -m pipeline.cli fit --config configs/ring8.yaml "$@"
echo "samples: $(ls -t runs/ring8/lightning_logs/version_*/samples/*.png | head -n 1)"
