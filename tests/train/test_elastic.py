"""Elastic resume (issue 20): a checkpoint written on 8 devices continues on 4, and one written on 4
continues on 8, as if nothing changed (within float tolerance of an uninterrupted run); a changed
global batch is refused. Three subprocesses (fake CPU devices are fixed at start-up) share an XLA
compilation cache; a run is "preempted" after step 2 by a failure to place its third input batch (an
`Exception`, which the read-ahead defers to where that batch is needed, so step 2 is logged and
checkpointed; a KeyboardInterrupt there propagates at once, jaxssl/data/prefetch.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxssl.train import distributed
from tests.train.test_multihost import _free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_RUN = r"""
import json, logging, sys
from jaxssl.train import distributed
distributed.initialize()  # the JAXSSL_* variables of a 2-process run; nothing otherwise
import jax
logging.basicConfig()
logging.getLogger("jaxssl").setLevel(logging.INFO)  # "Resumed from step ..."
from configs import data2vec_speech_fsdd, simclr_cifar10
from jaxssl.train import loop, sharding
data_dir, jobs, kind = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
to_global = sharding.to_global


def config(batch_size=32):
    if kind == "speech":  # a global data order: every process takes its rows of each global batch
        c = data2vec_speech_fsdd.get_config("runlocal")
        c.model.depth, c.method_kw.top_k, batch_size = 1, 1, batch_size // 4
    else:
        c = simclr_cifar10.get_config("runlocal")
        c.data.data_dir, c.data.prepare_offline = data_dir, False
        c.model.width, c.method_kw.proj_hidden, c.method_kw.proj_dim = 0.0625, (16,), 8
    c.evals.knn.enabled = False  # no final embedding pass: the comparison is of the training state
    c.progress_bar = False
    c.total_steps, c.log_steps, c.ckpt_steps, c.batch_size = 4, 1, 2, batch_size
    return c


out = {}
for workdir, what in jobs:
    if what == "stop_after_2":  # the third batch never arrives: as if the machine went away after step 2
        class Gone(Exception):
            pass
        calls = []
        def stop(*a):
            calls.append(1)
            if len(calls) == 3:
                raise Gone
            return to_global(*a)
        loop.shd.to_global = stop
        try:
            loop.train(config(), workdir)
        except Gone:
            pass
        loop.shd.to_global = to_global
    elif what == "batch_16":
        try:
            loop.train(config(batch_size=16), workdir)
            out[workdir] = "no error"
        except ValueError as e:
            out[workdir] = str(e)
    else:
        loop.train(config(), workdir)
print("RESULT " + json.dumps(out))
"""


def _env(devices, cache, extra=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0 "
                        f"--xla_llvm_disable_expensive_passes=true",
           "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1", **(extra or {})}
    for k in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        if k not in (extra or {}):
            env.pop(k, None)
    return env


def _run(devices, data_dir, jobs, cache, kind="image"):
    proc = subprocess.run([sys.executable, "-c", _RUN, data_dir, json.dumps(jobs), kind], cwd=REPO,
                          env=_env(devices, cache), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):]), \
        proc.stderr


def _final(workdir):
    import jax
    import orbax.checkpoint as ocp
    path = os.path.join(workdir, "checkpoints", "4", "state")
    with ocp.PyTreeCheckpointer() as ckpt:
        meta = ckpt.metadata(path).item_metadata.tree
        args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        state = ckpt.restore(path, args=ocp.args.PyTreeRestore(item=meta, restore_args=args))
    data = json.load(open(os.path.join(workdir, "checkpoints", "4", "data", "metadata")))
    losses = [r["loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if "loss" in r]
    return state, data, losses


def test_resume_on_half_and_on_twice_the_devices_continues_the_run(cifar10_data_dir, tmp_path):
    ref, a, b = (str(tmp_path / n) for n in ("ref_8", "a_8_to_4", "b_4_to_8"))
    cache = str(tmp_path / "xla_cache")
    _run(8, cifar10_data_dir, [[ref, "full"], [a, "stop_after_2"]], cache)
    refused, _ = _run(4, cifar10_data_dir, [[a, "batch_16"], [a, "full"], [b, "stop_after_2"]], cache)
    _, log = _run(8, cifar10_data_dir, [[b, "full"]], cache)
    assert "Resumed from step 2" in log

    msg = refused[a]
    assert "holds a run with global batch 32, now 16" in msg and "--config.batch_size=32" in msg, msg
    r_state, r_data, r_losses = _final(ref)
    assert len(r_losses) == 4
    for workdir in (a, b):
        state, data, losses = _final(workdir)
        assert data == r_data  # the same position in the same global data order
        assert losses[:2] == r_losses[:2] or np.allclose(losses[:2], r_losses[:2], rtol=1e-5)
        np.testing.assert_allclose(losses[-2:], r_losses[-2:], rtol=1e-4)  # the steps after the resume
        assert int(state["step"]) == 4
        for key in ("params", "opt_state", "model_state"):
            x, y = _vector(state[key]), _vector(r_state[key])
            # Reductions over 4 or 8 devices round differently (as an uninterrupted 4-device run would).
            assert x.shape == y.shape and np.max(np.abs(x - y)) <= 1e-3 * np.max(np.abs(y)), (workdir, key)


def _vector(tree):
    import jax
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(tree)])


@pytest.mark.multiprocess
def test_two_processes_resume_as_one(tmp_path):
    """Speech (data2vec on FSDD): 2 processes x 2 devices stop after step 2; 1 process x 4 devices resumes
    and ends where an uninterrupted 1-process run ends (the iterator state is global: a step counter)."""
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    cache, coordinator = str(tmp_path / "xla_cache"), f"127.0.0.1:{_free_port()}"
    args = [sys.executable, "-c", _RUN, "", json.dumps([[run, "stop_after_2"]]), "speech"]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(
        2, cache, {distributed.ENV_COORDINATOR: coordinator, distributed.ENV_NUM_PROCESSES: "2",
                   distributed.ENV_PROCESS_ID: str(i)})) for i in range(2)]
    try:
        logs = [p.communicate(timeout=420)[0] for p in procs]
    finally:
        for p in procs:  # never leave a process waiting for its peer
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    assert sorted(n for n in os.listdir(os.path.join(run, "checkpoints")) if n.isdigit()) == ["2"]
    _, log = _run(4, "", [[ref, "full"], [run, "full"]], cache, kind="speech")
    assert "Resumed from step 2" in log
    (r_state, r_data, r_losses), (state, data, losses) = _final(ref), _final(run)
    assert data == r_data and len(losses) == len(r_losses) == 4
    np.testing.assert_allclose(losses, r_losses, rtol=1e-5)
    x, y = _vector(state["params"]), _vector(r_state["params"])
    assert np.max(np.abs(x - y)) <= 1e-5 * np.max(np.abs(y))
