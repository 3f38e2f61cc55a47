#!/usr/bin/env bash
# The README's test command: set up the environment, then run the whole suite.
# The tests prepare a small subset of the real CIFAR-10 (from ../shared/data) into .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
# Two pytest-xdist workers, one test file per worker at a time (--dist loadfile: a file's module
# fixtures, e.g. test_every_method's one subprocess for all methods, run once). Compilation is
# mostly single-threaded, so the two cores overlap it. JAXSSL_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 \
  -n "${JAXSSL_TEST_WORKERS:-2}" --dist loadfile tests "$@"
