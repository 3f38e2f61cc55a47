"""Shared pytest fixtures: a small, real CIFAR-10 prepared offline for TFDS.

``cifar10_data_dir`` prepares a class-balanced subset of the real CIFAR-10
(2,048 train / 512 test images) once into ``<repo>/.cache/tfds_test``
(git-ignored) and reuses it across test runs (about 2 s the first time).
Use it as the TFDS ``data_dir``::

    def test_something(cifar10_data_dir):
        it = jaxssl.data.make_train_iter("cifar10", "train", data_dir=cifar10_data_dir,
                                         global_batch_size=64, seed=0)
"""

from __future__ import annotations

import os
import pathlib

import pytest

from tests.multidevice import FAST_XLA

REPO = pathlib.Path(__file__).resolve().parents[1]

# One persistent XLA compilation cache for the run, shared by the in-process tests and by every
# subprocess they start (subprocesses inherit os.environ; jax reads these variables when it is
# imported, which happens after this file). Many tests compile the same programs: a resumed run
# compiles the step of the run it resumes, both processes of a multi-host test compile the same
# step, several tests train the same `:runlocal` config. Compilation dominates the suite on 2 cores.
# The key covers the HLO, the XLA flags, the devices and the jax version, so a hit is the same
# executable. A maximum size turns on the cache's LRU eviction and, with it, its file lock
# (`filelock`), so that concurrent processes never read a half-written entry.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax_compilation"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
# Compile at LLVM optimisation level 0 without its expensive passes (NOTES.md): the tests' tiny
# networks spend far more time compiling than running. Measured on 2 cores with a cold cache:
# tests/losses + tests/models + the MAE and JEPA method tests went from 344 s to 270 s. The HLO,
# and so every result, is the same program; only its machine code is less optimised. Subprocesses
# inherit the flags (several append them again, which is harmless).
if FAST_XLA not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
TFDS_TEST_DIR = REPO / ".cache" / "tfds_test"


def pytest_configure(config):
    # scripts/test.sh runs these after the two-worker phase, in one process with nothing beside
    # them: a 2-process jax.distributed job whose peer is starved by the other worker's compilations
    # can miss the 300 s shutdown barrier (seen once in test_elastic under two workers).
    config.addinivalue_line("markers", "multiprocess: starts a 2-process jax.distributed job (run alone)")
CIFAR10_TRAIN_LIMIT = 2048
CIFAR10_TEST_LIMIT = 512


@pytest.fixture(scope="session")
def cifar10_data_dir() -> str:
    """TFDS data_dir (str) holding ``cifar10`` 3.0.2: 2,048 train / 512 test images.

    Fails (never skips) when the shared source arrays are missing and nothing is cached:
    the real-data tests are part of the contract (the message says where the arrays are looked for).
    """
    return _prepared("cifar10", TFDS_TEST_DIR, "CIFAR-10 source arrays", train_limit=CIFAR10_TRAIN_LIMIT,
                     test_limit=CIFAR10_TEST_LIMIT)


def _prepared(name: str, data_dir: pathlib.Path, what: str, **limits) -> str:
    """`name` prepared offline into `data_dir` (a subset: `limits`); fails, never skips, without its source."""
    import filelock

    from jaxssl.data import prepare
    try:
        # The suite runs in two pytest-xdist workers (scripts/test.sh): the first to get here
        # prepares, the other waits and then finds the same subset in place.
        with filelock.FileLock(f"{data_dir}.lock"):
            # overwrite=True: a cached subset with other limits is replaced, never reused.
            prepare.ensure_prepared(name, data_dir, overwrite=True, **limits)
    except FileNotFoundError as e:
        pytest.fail(f"{what} unavailable: {e}")
    return str(data_dir)


IMAGENETTE_TRAIN_LIMIT = 200
IMAGENETTE_HOLDOUT_LIMIT = 50


@pytest.fixture(scope="session")
def imagenette_data_dir() -> str:
    """TFDS data_dir (str) holding ``imagenette/112px-v2``: 200 train / 50 holdout JPEGs of many sizes.

    Prepared once (offline, from shared/data/imagenette2-112_train.tar) into
    ``<repo>/.cache/tfds_test_imagenette`` and reused; fails (never skips) without the tar.
    """
    return _prepared("imagenette", REPO / ".cache" / "tfds_test_imagenette", "Imagenette source archive",
                     train_limit=IMAGENETTE_TRAIN_LIMIT, holdout_limit=IMAGENETTE_HOLDOUT_LIMIT)
