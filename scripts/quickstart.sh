#!/usr/bin/env bash
# The README's main job: set up .venv if needed, write the bundled digits to shards, train the in-domain
# classifier that scores samples, train the DCGAN preset, and print where the sample grid is.
# Extra arguments go to `ganforge fit`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/setup_env.sh"
cd "$root"
if [ ! -f data/digits32/shards.json ]; then
  "$VENV_PY" -m pipeline.commands.cli shards --source sklearn-digits --resolution 32 --out data/digits32
fi
if [ ! -f data/digits32/feature_net.pt ]; then  # the in-domain metrics' classifier (~10 s)
  "$VENV_PY" scripts/train_feature_net.py --shards data/digits32 --out data/digits32/feature_net.pt
fi
"$VENV_PY" -m pipeline.commands.cli fit --config configs/dcgan.yaml "$@"
echo "samples: $(ls -t runs/dcgan/samples/*.png | head -n 1)"
