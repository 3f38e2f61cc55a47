"""Stopping safely: SIGKILL and SIGTERM mid-run resume bit-identically, NaN/Inf guard, device/batch checks.

The end-to-end test runs `python -m jaxssl.main` as a user would (4 processes share one XLA
compilation cache, so only the first pays for compiling). The non-finite tests run the real
trainer in-process with a tiny stand-in method (one conv layer) so that they compile in seconds;
the loop never branches on the method, so what they check holds for every method.
"""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jaxssl.methods
from configs import simclr_cifar10
from jaxssl import losses
from jaxssl.train import loop
from tests import multidevice

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------------------------
# SIGKILL / SIGTERM, end to end through the CLI.
# ----------------------------------------------------------------------------------------------
def _cli(workdir: str, data_dir: str) -> list[str]:
    return [sys.executable, "-m", "jaxssl.main", "--config", "configs/simclr_cifar10.py:runlocal",
            "--workdir", workdir, "--config.model.width=0.0625", "--config.method_kw.proj_hidden=(16,)",
            "--config.total_steps=8", "--config.ckpt_steps=2", "--config.evals.knn.enabled=False",
            f"--config.data.data_dir={data_dir}", "--config.progress_bar=False"]


def _start(cmd, log_path, cache):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    with open(log_path, "w") as log:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for(proc, condition, what: str, timeout: float = 300.0):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _steps(workdir: str) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _final_state(workdir: str):
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "8", "state"))


def test_sigkill_and_sigterm_then_rerun_end_bit_identical(cifar10_data_dir, tmp_path):
    cache, ref, run = str(tmp_path / "xla_cache"), str(tmp_path / "ref"), str(tmp_path / "run")
    logs = [str(tmp_path / f"log{i}.txt") for i in range(4)]
    read = lambda i: open(logs[i]).read()

    # 1. The uninterrupted run (it also fills the compilation cache). While it compiles, a second
    #    writer on its workdir is refused: exit code 75, one line naming the first run's PID.
    p = _start(_cli(ref, cifar10_data_dir), logs[0], cache)
    _wait_for(p, lambda: os.path.exists(os.path.join(ref, "config.json")), "the first run's config.json")
    second = subprocess.run(_cli(ref, cifar10_data_dir), cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    still_running = p.poll() is None
    assert p.wait(timeout=600) == 0, read(0)[-3000:]
    if still_running:  # (on a very fast machine the first run may have ended already: nothing to refuse)
        assert second.returncode == 75, second.stderr[-3000:]
        assert second.stderr.strip().splitlines()[-1].startswith(f"error: The workdir {ref} is in use by another "
                                                                f"run (PID {p.pid} on host "), second.stderr[-3000:]

    # 2. SIGKILL as soon as a first checkpoint is committed: no chance to clean up. An async
    #    save in flight leaves an orbax tmp directory, which the next run ignores and deletes.
    p = _start(_cli(run, cifar10_data_dir), logs[1], cache)
    _wait_for(p, lambda: _steps(run), "a first checkpoint")
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = _steps(run)
    assert 8 not in killed_at, "the run finished before the kill: the test proves nothing"

    # 3. The same command resumes; SIGTERM it as soon as it has restored (it then finishes its
    #    first step, checkpoints that step and exits with code 143 and one line, no traceback).
    p = _start(_cli(run, cifar10_data_dir), logs[2], cache)
    _wait_for(p, lambda: "Resumed from step" in read(2), "the resume")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=300) == 143, read(2)[-3000:]
    assert "Traceback" not in read(2) and read(2).strip().splitlines()[-1].startswith("Preempted: "), read(2)[-3000:]
    resumed = int(re.search(r"Resumed from step (\d+)", read(2)).group(1))
    assert resumed in killed_at
    m = re.search(r"Preempted: Stopped by signal 15 \(SIGTERM\) after step (\d+), which is checkpointed", read(2))
    assert m, read(2)[-3000:]
    preempted = int(m.group(1))
    assert resumed < preempted < 8 and preempted in _steps(run)

    # 4. The same command again finishes the run from the SIGTERM checkpoint.
    p = _start(_cli(run, cifar10_data_dir), logs[3], cache)
    assert p.wait(timeout=300) == 0, read(3)[-3000:]
    assert f"Resumed from step {preempted}" in read(3)
    assert not [n for n in os.listdir(os.path.join(run, "checkpoints")) if "tmp" in n]

    # Parameters, optimiser and BatchNorm state, and the data iterator are bit-identical.
    a, b = _final_state(ref), _final_state(run)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    data = lambda w: json.load(open(os.path.join(w, "checkpoints", "8", "data", "metadata")))
    assert data(ref) == data(run)
    last = lambda w: [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))][-1]
    assert last(ref)["step"] == last(run)["step"] == 8 and last(ref)["loss"] == last(run)["loss"]


# ----------------------------------------------------------------------------------------------
# The non-finite guard, in-process with a tiny stand-in method.
# ----------------------------------------------------------------------------------------------
class _TinyNet(nn.Module):
    def setup(self):
        self.conv, self.bn, self.proj = nn.Conv(4, (3, 3)), nn.BatchNorm(momentum=0.9), nn.Dense(8)

    def features(self, x, train: bool = False):
        return jnp.mean(nn.relu(self.bn(self.conv(x), use_running_average=not train)), axis=(1, 2))

    def __call__(self, x, train: bool = True):
        h = self.features(x, train)
        return {"features": h, "projection": self.proj(h)}


@jax.custom_vjp
def _inf_grad(x, bad):
    return x


_inf_grad.defvjp(lambda x, bad: (x, bad), lambda bad, g: (g * jnp.where(bad, jnp.inf, 1.0), None))


def _tiny_method(poison):
    """SimCLR's loss on a one-conv net; `poison(extra, views) -> (kind or None, bad)` injects NaN/Inf."""
    net = _TinyNet()

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, rng, step
        n = views[0].shape[0]
        out, model_state = net.apply({"params": params, **model_state}, jnp.concatenate(views), train=True,
                                     mutable=["batch_stats"])
        loss = jnp.mean(losses.nt_xent(out["projection"][:n], out["projection"][n:], 0.5))
        kind, bad = poison(extra, views)
        if kind == "loss":  # NaN loss, hence NaN gradients
            loss = loss * jnp.where(bad, jnp.nan, 1.0)
        elif kind == "grad":  # finite loss, infinite gradients
            loss = _inf_grad(loss, bad)
        return loss, (model_state, {"calls": extra["calls"] + 1}, {"poisoned": bad.astype(jnp.int32)})

    return jaxssl.methods.Method(net, loss_fn, init_extra=lambda rng: {"calls": jnp.int32(0)})


def _tiny_config(data_dir, **overrides):
    config = simclr_cifar10.get_config("runlocal")
    config.data.data_dir = data_dir
    config.progress_bar = False
    config.evals.knn.enabled = False
    view = dict(crop_size=16, crop_scale=(0.5, 1.0), flip_p=0.5, mean=(0.5,) * 3, std=(0.25,) * 3)
    config.input.views = (view, view)
    for k, v in overrides.items():
        config[k] = v
    return config


def _use(monkeypatch, method):
    # The trainer builds its method through jaxssl.methods.build(config), the one builder.
    monkeypatch.setattr(jaxssl.methods, "build", lambda config: method)


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_nonfinite_stops_with_step_and_quantity_and_keeps_last_good_checkpoint(
        cifar10_data_dir, tmp_path, monkeypatch, caplog, kind):
    workdir = str(tmp_path / "run")
    _use(monkeypatch, _tiny_method(lambda extra, views: (kind, extra["calls"] + 1 >= 3)))  # bad from step 3 on
    config = _tiny_config(cifar10_data_dir, total_steps=8, log_steps=4, ckpt_steps=2)
    with pytest.raises(FloatingPointError) as e:
        loop.train(config, workdir)
    msg = str(e.value)
    assert "at step 3 (the first bad one of steps [3, 4]" in msg, msg
    assert "newest checkpoint (step 2) is good" in msg and "--config.optimizer.base_lr" in msg
    quantities = msg.split(" became")[0].split(", ")
    assert "grad_norm" in quantities and ("loss" in quantities) == (kind == "loss"), msg
    assert _steps(workdir) == [2]  # the bad state (step 4 is a checkpoint step) was never written
    if kind == "grad":
        return
    # The last good checkpoint restores (checksums verified) and the run continues from it.
    _use(monkeypatch, _tiny_method(lambda extra, views: (None, jnp.bool_(False))))
    with caplog.at_level(logging.INFO, logger="jaxssl.train.loop"):
        loop.train(_tiny_config(cifar10_data_dir, total_steps=4, log_steps=4, ckpt_steps=2), workdir)
    assert "Resumed from step 2" in caplog.text and _steps(workdir) == [2, 4]


def test_nonfinite_skip_mode_drops_bad_updates_on_device(cifar10_data_dir, tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    # Bad whenever the first augmented image is brighter than average: a deterministic, data-driven
    # pattern of steps (a counter in `extra` would be rolled back with the rest of a skipped step).
    _use(monkeypatch, _tiny_method(lambda extra, views: ("loss", jnp.mean(views[0][0]) > 0.0)))
    config = _tiny_config(cifar10_data_dir, total_steps=10, log_steps=1, ckpt_steps=1, keep_ckpts=10,
                          nonfinite="skip", nonfinite_patience=100)
    final = loop.train(config, workdir)
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == list(range(1, 11))
    skipped = [r["step"] for r in rows if r["nonfinite_skipped"]]
    assert [r["nonfinite_skipped"] for r in rows] == [r["poisoned"] for r in rows]
    assert 1 <= len(skipped) <= 8 and any(s > 1 for s in skipped), skipped
    assert [r["nonfinite_skips"] for r in rows] == list(np.cumsum([r["nonfinite_skipped"] for r in rows]))
    assert final["nonfinite_skips"] == len(skipped)
    assert all(("loss" in r) == (r["step"] not in skipped) for r in rows)  # NaNs of skipped steps are not logged
    state = lambda s: ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(s), "state"))
    for s in range(2, 11):
        before, after = state(s - 1), state(s)
        assert int(after["step"]) == s  # the counter advances either way
        same = all(np.array_equal(x, y) for k in ("params", "opt_state", "model_state", "extra")
                   for x, y in zip(jax.tree_util.tree_leaves(before[k]), jax.tree_util.tree_leaves(after[k])))
        assert same == (s in skipped), s
        assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(after) if np.asarray(x).dtype.kind == "f")


# ----------------------------------------------------------------------------------------------
# Device/batch mismatch: 8 fake devices, errors before any data is read or model compiled.
# ----------------------------------------------------------------------------------------------
_MISMATCH = r"""
import json, tempfile, jax
from configs import simclr_cifar10
from jaxssl.train import loop, step as step_lib
assert len(jax.devices()) == 8, jax.devices()
def no_init(*args, **kwargs):
    raise AssertionError("reached model initialisation")
step_lib.init_state = no_init
out = {}
for name, edit in [("batch", lambda c: setattr(c, "batch_size", 12)),
                   ("knn", lambda c: setattr(c.evals.knn, "batch_size", 60))]:
    c = simclr_cifar10.get_config("runlocal")
    c.progress_bar, c.data.prepare_offline, c.data.data_dir = False, False, tempfile.mkdtemp()
    edit(c)
    try:
        loop.train(c, tempfile.mkdtemp())
        out[name] = "no error"
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"
print("RESULT " + json.dumps(out))
"""


def test_batch_not_divisible_by_devices_is_reported_before_anything_runs():
    r = multidevice.run(_MISMATCH, devices=8)
    assert r["batch"].startswith("ValueError: Batch size (12) must be divisible by the number of devices (8)"), r
    assert "--config.batch_size to a multiple of 8" in r["batch"]
    assert r["knn"].startswith("ValueError: config.evals.knn.batch_size (60) must be divisible by the number "
                               "of devices (8)"), r


# ----------------------------------------------------------------------------------------------
# Issue 20, item 7: a failed asynchronous save stops the run at once, with one message.
# ----------------------------------------------------------------------------------------------
def test_failed_async_save_stops_the_run_within_a_few_steps(cifar10_data_dir, tmp_path, monkeypatch):
    from jaxssl.train import checkpoint as ckpt_lib, sharding
    from tests.train.test_checkpoint import _fail_json_save
    workdir = str(tmp_path / "run")
    _fail_json_save(monkeypatch, 8)  # "disk full" while step 8 is written in the background
    _use(monkeypatch, _tiny_method(lambda extra, views: (None, jnp.bool_(False))))
    to_global = sharding.to_global  # ~50 ms of input time per step: the background write fails meanwhile
    monkeypatch.setattr(loop.shd, "to_global", lambda *a: (time.sleep(0.05), to_global(*a))[1])
    config = _tiny_config(cifar10_data_dir, total_steps=40, log_steps=40, ckpt_steps=4, keep_ckpts=10)
    with pytest.raises(ckpt_lib.SaveFailedError) as e:
        loop.train(config, workdir)
    msg = str(e.value)
    found = int(re.search(r"step 8 in .* failed \(found at step (\d+)\): OSError: \[Errno 28\] No space left on "
                          r"device\. Training stopped; the newest good checkpoint is step 4", msg).group(1))
    assert 8 < found < 12, msg  # before the next save (step 12), not 1,000 steps later
    assert _steps(workdir) == [4]


def test_checkpoint_without_iterator_state_resumes_with_a_loud_warning(cifar10_data_dir, tmp_path, monkeypatch,
                                                                        caplog):
    """A step saved without a data/ item (not by this trainer, which always saves it) continues, saying
    that the data order restarts; a step that lists data/ but lacks it is corrupt (tests/train/test_checkpoint.py)."""
    import shutil
    workdir = str(tmp_path / "run")
    _use(monkeypatch, _tiny_method(lambda extra, views: (None, jnp.bool_(False))))
    loop.train(_tiny_config(cifar10_data_dir, total_steps=2, log_steps=2, ckpt_steps=2), workdir)
    step_dir = os.path.join(workdir, "checkpoints", "2")
    shutil.rmtree(os.path.join(step_dir, "data"))
    meta_path = os.path.join(step_dir, "_CHECKPOINT_METADATA")
    meta = json.load(open(meta_path))
    del meta["item_handlers"]["data"]
    json.dump(meta, open(meta_path, "w"))
    with caplog.at_level(logging.INFO, logger="jaxssl.train.loop"):
        loop.train(_tiny_config(cifar10_data_dir, total_steps=4, log_steps=2, ckpt_steps=2), workdir)
    assert "THE DATA ORDER RESTARTS: the checkpoint of step 2 holds no data-iterator state" in caplog.text
    assert "Resumed from step 2" in caplog.text and _steps(workdir) == [2, 4]
