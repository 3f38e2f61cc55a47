#!/usr/bin/env bash
# The README's main job: set up the environment, prepare CIFAR-10 offline if needed, pre-train
# SimCLR for ~10 minutes on CPU and print the kNN accuracy on the test set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WORKDIR=${1:-workdirs/simclr_cifar10_cpu}
shift || true
exec .venv/bin/python -m jaxssl.main --config configs/simclr_cifar10.py:cpu --workdir "$WORKDIR" "$@"
