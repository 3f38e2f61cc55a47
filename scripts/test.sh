#!/usr/bin/env bash
# The README's test command: set up the environment, then run the whole suite.
# The tests prepare a small subset of the real CIFAR-10 (from ../shared/data) into .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider --durations=30)
# Phase 1: two pytest-xdist workers, one test file per worker at a time (--dist loadfile: a file's
# module fixtures, e.g. test_every_method's one subprocess for all methods, run once). Compilation
# is mostly single-threaded, so the two cores overlap it. JAXSSL_TEST_WORKERS=0 runs in one process.
# Phase 2: the tests marked `multiprocess` (2-process jax.distributed jobs), alone. Two processes
# that wait for each other at barriers must not share two cores with the other worker's
# compilations: a starved peer once missed the 300 s shutdown barrier (tests/conftest.py).
# Exit code 5 (nothing selected, e.g. `scripts/test.sh tests/losses`) is not a failure of one phase.
status=0
for phase in "not multiprocess" "multiprocess"; do
  workers=("-n" "${JAXSSL_TEST_WORKERS:-2}" "--dist" "loadfile")
  [[ $phase == multiprocess ]] && workers=("-n" "0")
  rc=0
  "${PYTEST[@]}" "${workers[@]}" -m "$phase" tests "$@" || rc=$?
  if [[ $rc -ne 0 && $rc -ne 5 ]]; then status=$rc; fi
done
exit $status
