"""Multi-host training on one machine: 2 processes x 2 CPU devices == 1 process x 4 devices.

Two python processes join a job through `jaxssl.train.distributed.initialize` (coordinator on
127.0.0.1, settings from the JAXSSL_* environment variables, gloo CPU collectives); each feeds its
half of a fixed global batch through `shd.to_global` into the jitted SimCLR step (a one-conv
backbone with BatchNorm, 8x8 images). A third process runs the same global batch on 4 devices.
Losses, parameters and BatchNorm statistics after 3 steps must agree. The two processes also write
one orbax checkpoint together and restore it, and read disjoint slices of the CIFAR-10 training
data through `jaxssl.data.make_train_iter`.
Unit checks of the flag/environment resolution run in-process (no devices involved).
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxssl.train import distributed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 3

_WORKER = r"""
import hashlib, json, os, sys
import numpy as np
from jaxssl.train import distributed
joined = distributed.initialize()  # JAXSSL_* variables of the 2-process run; nothing for the reference
import jax, jax.numpy as jnp, optax
from jax.experimental import multihost_utils
from jaxssl import data as jdata, methods
from jaxssl.train import checkpoint as ckpt_lib, sharding as shd, step as step_lib

out, data_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
pid, nproc = jax.process_index(), jax.process_count()
assert joined == (nproc == 2) and jax.device_count() == 4 and jax.local_device_count() == 4 // nproc
import flax.linen as nn


class Tiny(nn.Module):  # conv + BatchNorm (statistics of the global batch) + pool: compiles in a second
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Conv(8, (3, 3), use_bias=False)(x))
        return jnp.mean(nn.relu(x), axis=(1, 2))


method = methods.get("simclr", backbone=Tiny(), temperature=0.5, proj_hidden=(16,), proj_dim=8)
tx = optax.lars(0.1, weight_decay=1e-4)
views = [dict(crop_size=8, crop_scale=(0.3, 1.0), flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
              saturation=0.4, hue=0.1, grayscale_p=0.2, mean=(0.5,) * 3, std=(0.25,) * 3)] * 2
images = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)
local = images.reshape(nproc, -1, 8, 8, 3)[pid]  # this process's half (or all of it)

mesh = shd.make_mesh()
state = jax.jit(lambda r: step_lib.init_state(method, tx, r, jnp.zeros((2, 8, 8, 3))),
                out_shardings=shd.replicated(mesh))(jax.random.key(1))
train_step = step_lib.make_train_step(method, tx, views, mesh)
losses = []
for _ in range(steps):
    batch = shd.to_global({"image": local}, mesh)
    assert batch["image"].shape == (16, 8, 8, 3)
    state, metrics = train_step(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))  # replicated: the same global value on every process
flat = lambda t: np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(t)])
result = dict(losses=losses, params=flat(state.params).tolist(), bn=flat(state.model_state).tolist())

if nproc == 2:
    # Checkpoint written by both processes into one directory, restored to the same shardings.
    ckpt = ckpt_lib.Checkpointer(os.path.join(out, "ckpt"), async_save=True)
    ckpt.save(steps, state, {"step": steps}, force=True)
    ckpt.wait()
    restored = ckpt.restore(ckpt_lib.abstract(state))
    ckpt.close()
    same = [bool(np.array_equal(a, b)) for a, b in zip(jax.tree_util.tree_leaves(state),
                                                       jax.tree_util.tree_leaves(restored.state))]
    result.update(restored_step=restored.step, restored_equal=all(same) and len(same) > 0,
                  restored_sharding_equal=all(a.sharding == b.sharding for a, b in zip(
                      jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored.state))))
    # Per-process data: each reads global_batch // 2 records of its own slice of the split.
    it = jdata.make_train_iter("cifar10", "train", data_dir=data_dir, global_batch_size=32, seed=0,
                               num_threads=0, prefetch=0)
    seen = [next(it)["image"] for _ in range(2)]
    result.update(local_batch=int(seen[0].shape[0]),
                  image_hashes=sorted({hashlib.sha1(x.tobytes()).hexdigest() for b in seen for x in b}))
    # Metrics reduced across processes: the global batch's loss is replicated, every process holds it.
    gathered = multihost_utils.process_allgather(np.asarray(losses[-1]))
    result.update(loss_all_processes=np.asarray(gathered).ravel().tolist())
with open(os.path.join(out, f"result_{pid if nproc == 2 else 'ref'}.json"), "w") as f:
    json.dump(result, f)
"""


# These processes do not use the suite's shared compilation cache (tests/conftest.py): in one full
# run (2026-12-03) a 2-process JPEG run hung in its first collective (`sync_global_devices`) until the
# shutdown barrier timed out, while it passed alone with the cache warm and in every earlier run
# without it. The cause is not established; the multi-process tests compile for themselves.
_NO_SHARED_CACHE = {"JAX_ENABLE_COMPILATION_CACHE": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(code, args, devices, extra_env):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra_env}
    for k in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        if k not in extra_env:
            env.pop(k, None)
    env.update(_NO_SHARED_CACHE)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs, timeout: float = 420) -> None:
    """Wait for every process (each bounded by `timeout`) and require exit code 0; never leave one
    waiting for its peer."""
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"process {p.args[:4]} failed ({p.returncode}):\n{log[-5000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cifar10_data_dir):
    """Results of the 2-process x 2-device run (both processes) and the 1-process x 4-device run."""
    out = str(tmp_path_factory.mktemp("multihost"))
    args = [out, cifar10_data_dir, str(STEPS)]
    coordinator = f"127.0.0.1:{_free_port()}"  # loopback only
    procs = [_start(_WORKER, args, 2, {distributed.ENV_COORDINATOR: coordinator,
                                       distributed.ENV_NUM_PROCESSES: "2", distributed.ENV_PROCESS_ID: str(i)})
             for i in range(2)]
    procs.append(_start(_WORKER, args, 4, {}))
    _finish(procs)
    load = lambda name: json.load(open(os.path.join(out, f"result_{name}.json")))
    return load(0), load(1), load("ref")


@pytest.mark.multiprocess
def test_two_processes_equal_one_process_with_the_same_devices(runs):
    p0, p1, ref = runs
    assert len(ref["losses"]) == STEPS and all(np.isfinite(ref["losses"]))
    np.testing.assert_allclose(p0["losses"], ref["losses"], rtol=1e-5)
    np.testing.assert_array_equal(p0["losses"], p1["losses"])  # every process sees the global loss
    assert p0["loss_all_processes"] == [p0["losses"][-1]] * 2
    params, ref_params = np.asarray(p0["params"]), np.asarray(ref["params"])
    assert np.max(np.abs(params - ref_params)) <= 1e-5 * np.max(np.abs(ref_params)), "params differ"
    np.testing.assert_array_equal(p0["params"], p1["params"])  # replicas agree across processes
    np.testing.assert_allclose(p0["bn"], ref["bn"], rtol=1e-5, atol=1e-6)  # BatchNorm over the global batch


@pytest.mark.multiprocess
def test_checkpoint_written_and_restored_by_both_processes(runs):
    for r in runs[:2]:
        assert r["restored_step"] == STEPS
        assert r["restored_equal"] and r["restored_sharding_equal"]


@pytest.mark.multiprocess
def test_each_process_reads_its_own_slice_of_the_data(runs):
    p0, p1, _ = runs
    assert p0["local_batch"] == p1["local_batch"] == 16  # global batch 32 over 2 processes
    assert len(p0["image_hashes"]) > 16 and len(p1["image_hashes"]) > 16
    assert not set(p0["image_hashes"]) & set(p1["image_hashes"])


def test_resolve_flags_env_and_single_process():
    env = {distributed.ENV_COORDINATOR: "10.0.0.1:1234", distributed.ENV_NUM_PROCESSES: "4",
           distributed.ENV_PROCESS_ID: "3"}
    assert distributed.resolve(environ={}) is None  # nothing configured, no cluster: one process
    assert distributed.resolve(environ=env) == ("10.0.0.1:1234", 4, 3)
    # Flags win over the environment.
    assert distributed.resolve("h:1", 2, 0, environ=env) == ("h:1", 2, 0)
    assert distributed.resolve(environ={**env, distributed.ENV_MODE: "off"}) is None
    assert distributed.resolve(mode="on", environ={}) == (None, None, None)  # plain jax auto-detection
    with pytest.raises(ValueError, match="process_id"):
        distributed.resolve("h:1", 2, 2, environ={})
    with pytest.raises(ValueError, match="coordinator"):
        distributed.resolve(num_processes=2, process_id=0, environ={})
    with pytest.raises(ValueError, match="mode"):
        distributed.resolve(mode="maybe", environ={})


# ----------------------------------------------------------------------------------------------
# A JPEG config through jaxssl.main: 2 processes x 2 devices == 1 process x 4 devices. (A speech config's
# 2 processes are tests/train/test_elastic.py's 2 processes -> 1.)
# ----------------------------------------------------------------------------------------------
def _start_main(workdir, devices, extra_env, args):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} "
                                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra_env}
    for k in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        if k not in extra_env:
            env.pop(k, None)
    env.update(_NO_SHARED_CACHE)
    return subprocess.Popen([sys.executable, *args, "--workdir", workdir], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.multiprocess
def test_jpeg_config_two_processes_equal_one_process(tmp_path, imagenette_data_dir):
    """Imagenette JPEGs decoded and cropped on the host (jaxssl/data/encoded.py): each process decodes its rows
    of the global batch, with the crops of a 1-process run, so losses, kNN and weights agree."""
    _two_processes_equal_one_process(tmp_path, [
        "-m", "jaxssl.main", "--config", "configs/simclr_imagenette.py:runlocal", "--config.total_steps=2",
        "--config.log_steps=1", "--config.ckpt_steps=2", "--config.progress_bar=False", "--config.model.width=0.125",
        f"--config.data.data_dir={imagenette_data_dir}", "--config.data.prepare_offline=False"])


def _two_processes_equal_one_process(tmp_path, args):
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    coordinator = f"127.0.0.1:{_free_port()}"  # loopback only
    _finish([_start_main(two, 2, {distributed.ENV_COORDINATOR: coordinator, distributed.ENV_NUM_PROCESSES: "2",
                                  distributed.ENV_PROCESS_ID: str(i)}, args) for i in range(2)])
    _finish([_start_main(one, 4, {}, args)])  # after the pair: two jax processes at a time on 2 cores are enough
    rows = lambda w: [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
    two_rows, one_rows = rows(two), rows(one)
    losses = lambda rs: [r["loss"] for r in rs if "loss" in r]
    assert len(losses(one_rows)) == 2 and all(np.isfinite(losses(one_rows)))
    np.testing.assert_allclose(losses(two_rows), losses(one_rows), rtol=1e-5)
    knn = lambda rs: [r for r in rs if "knn_k20_t0.07_top1" in r][-1]["knn_k20_t0.07_top1"]
    assert knn(two_rows) == knn(one_rows)  # the same test examples against the same train examples
    a, b = _saved_params(two), _saved_params(one)
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)), "params differ"


def _saved_params(workdir) -> np.ndarray:
    """The checkpointed student params as one float64 vector, read as NumPy (any device topology)."""
    import jax
    import orbax.checkpoint as ocp
    path = os.path.join(workdir, "checkpoints", "2", "state")
    with ocp.PyTreeCheckpointer() as ckpt:
        meta = ckpt.metadata(path).item_metadata.tree
        args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        state = ckpt.restore(path, args=ocp.args.PyTreeRestore(item=meta, restore_args=args))
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(state["params"])])
