#!/usr/bin/env bash
# The README's test command: set up the environment, then run the whole suite.
# The tests prepare a small subset of the real CIFAR-10 (from ../shared/data) into .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 tests "$@"
