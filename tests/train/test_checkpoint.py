"""Checkpoint integrity: checksums catch silent corruption, bad steps are set aside, keep-N and NaN refusal.

Small synthetic TrainStates only (no model, no training): every test runs in about a second.
"""
import glob
import logging
import os

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxssl.train import checkpoint as ckpt_lib
from jaxssl.train.state import TrainState


def _state(step: int, seed: int = 0, scale: float = 1.0) -> TrainState:
    """Random (incompressible) float leaves, so that a flipped byte in a file lands in raw array data."""
    r = np.random.default_rng(seed)
    f = lambda *shape: jnp.asarray(r.standard_normal(shape, np.float32) * scale)
    return TrainState(step=jnp.int32(step), params={"conv": {"kernel": f(3, 3, 16, 32)}, "bias": f(32)},
                      model_state={"batch_stats": {"mean": f(32)}}, opt_state=({"mu": f(3, 3, 16, 32)},),
                      teacher=None,
                      extra={"queue": f(64, 8), "count": jnp.int32(7), "half": f(16).astype(jnp.bfloat16)})


def _assert_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _save(directory, steps, keep=3):
    c = ckpt_lib.Checkpointer(directory, max_to_keep=keep)
    for s in steps:
        c.save(s, _state(s, seed=s), {"epoch": s}, meta={"nonfinite_skips": s})
    c.close()


def _data_file(directory, step):
    """The largest array-data file of a step (where the big kernels live)."""
    return max(glob.glob(os.path.join(directory, str(step), "state", "ocdbt.process_*", "d", "*")), key=os.path.getsize)


def test_roundtrip_restores_state_data_and_meta(tmp_path):
    d = str(tmp_path / "ckpt")
    _save(d, [1, 2])
    c = ckpt_lib.Checkpointer(d)
    r = c.restore(ckpt_lib.abstract(_state(0)))
    c.close()
    assert (r.step, r.data, r.meta) == (2, {"epoch": 2}, {"nonfinite_skips": 2})
    _assert_equal(r.state, _state(2, seed=2))


def test_flipped_byte_is_caught_by_the_checksum_and_the_previous_step_used(tmp_path, caplog):
    d = str(tmp_path / "ckpt")
    _save(d, [2, 4])
    # Bit rot that orbax alone reads without complaint, as finite but wrong numbers. (The data is
    # zstd-compressed, so not every flipped bit gives that: take the first position that does.)
    path = _data_file(d, 4)
    original = open(path, "rb").read()
    leaves = lambda t: np.concatenate([np.asarray(x, np.float32).ravel() for x in jax.tree_util.tree_leaves(t)])
    for pos in range(len(original) // 2, len(original)):
        data = bytearray(original)
        data[pos] ^= 0x01
        open(path, "wb").write(data)
        try:
            silent = leaves(ocp.StandardCheckpointer().restore(os.path.join(d, "4", "state")))
        except Exception:  # noqa: BLE001  (a detected corruption: not the case tested here)
            continue
        if np.all(np.isfinite(silent)) and not np.array_equal(silent, leaves(_state(4, seed=4))):
            break
    else:
        pytest.fail("no silently corrupting bit flip found")

    c = ckpt_lib.Checkpointer(d)
    with caplog.at_level(logging.WARNING, logger="jaxssl.train.checkpoint"):
        r = c.restore(ckpt_lib.abstract(_state(0)))
    assert r.step == 2 and r.data == {"epoch": 2}
    _assert_equal(r.state, _state(2, seed=2))
    assert "step 4" in caplog.text and "checksum mismatch" in caplog.text and "falling back to step 2" in caplog.text
    # The bad step was moved aside (kept for inspection, not deleted) so that step 4 can be written again.
    assert c.all_steps() == [2] and os.listdir(d + "_corrupt") == ["4"]
    c.save(4, _state(4, seed=40))
    c.wait()
    r = c.restore(ckpt_lib.abstract(_state(0)))
    c.close()
    assert r.step == 4
    _assert_equal(r.state, _state(4, seed=40))


@pytest.mark.parametrize("damage", ["truncate", "delete", "empty_metadata"])
def test_unreadable_newest_step_falls_back(tmp_path, caplog, damage):
    d = str(tmp_path / "ckpt")
    _save(d, [2, 4])
    if damage == "truncate":
        path = _data_file(d, 4)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])
    elif damage == "delete":
        os.remove(_data_file(d, 4))
    else:
        open(os.path.join(d, "4", "state", "_METADATA"), "w").close()
    c = ckpt_lib.Checkpointer(d)
    with caplog.at_level(logging.WARNING, logger="jaxssl.train.checkpoint"):
        r = c.restore(ckpt_lib.abstract(_state(0)))
    c.close()
    assert r.step == 2 and "cannot be used" in caplog.text
    _assert_equal(r.state, _state(2, seed=2))


def test_partial_save_of_a_killed_process_is_ignored_and_cleaned(tmp_path):
    """A SIGKILL during an async save leaves only orbax's tmp directory: never listed, removed on the next start."""
    d = str(tmp_path / "ckpt")
    _save(d, [2])
    tmp = os.path.join(d, "4.orbax-checkpoint-tmp-1234567")
    os.makedirs(os.path.join(tmp, "state"))
    open(os.path.join(tmp, "state", "_METADATA"), "w").write("{truncated")
    c = ckpt_lib.Checkpointer(d)
    r = c.restore(ckpt_lib.abstract(_state(0)))
    c.save(4, _state(4, seed=4))
    c.close()
    assert r.step == 2
    assert sorted(os.listdir(d)) == ["2", "4"]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_state_is_refused_and_keep_n_keeps_the_good_one(tmp_path, bad):
    d = str(tmp_path / "ckpt")
    c = ckpt_lib.Checkpointer(d, max_to_keep=1)
    c.save(2, _state(2, seed=2))
    poisoned = _state(4, seed=4)
    poisoned = poisoned.replace(params={**poisoned.params, "bias": poisoned.params["bias"].at[3].set(bad)})
    with pytest.raises(ckpt_lib.NonFiniteStateError, match=r"step 4.*\['bias'\]"):
        c.save(4, poisoned)
    c.wait()
    assert c.all_steps() == [2]  # keep=1 did not make room for the refused step
    r = c.restore(ckpt_lib.abstract(_state(0)))
    c.close()
    assert r.step == 2
    _assert_equal(r.state, _state(2, seed=2))


def test_keep_n_deletes_only_after_a_newer_good_save(tmp_path):
    d = str(tmp_path / "ckpt")
    _save(d, [1, 2, 3, 4], keep=2)
    assert sorted(os.listdir(d)) == ["3", "4"]
    c = ckpt_lib.Checkpointer(d, max_to_keep=2)
    assert c.restore(ckpt_lib.abstract(_state(0))).step == 4
    c.close()


def test_nonfinite_checkpoint_on_disk_is_skipped(tmp_path, caplog):
    """A step holding NaN (written behind the Checkpointer's back) is never restored."""
    d = str(tmp_path / "ckpt")
    _save(d, [2])
    poisoned = _state(4, seed=4)
    poisoned = poisoned.replace(extra={**poisoned.extra, "queue": poisoned.extra["queue"] * jnp.nan})
    m = ocp.CheckpointManager(d, item_names=("state",))
    m.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(poisoned)))
    m.wait_until_finished()
    m.close()
    c = ckpt_lib.Checkpointer(d)
    with caplog.at_level(logging.WARNING, logger="jaxssl.train.checkpoint"):
        r = c.restore(ckpt_lib.abstract(_state(0)))
    c.close()
    assert r.step == 2 and "non-finite" in caplog.text


def test_no_usable_checkpoint_raises_and_moves_nothing(tmp_path):
    d = str(tmp_path / "ckpt")
    _save(d, [2, 4])
    c = ckpt_lib.Checkpointer(d)
    other = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape + (2,), x.dtype), _state(0))  # another model
    with pytest.raises(RuntimeError, match=r"None of the checkpoints \[2, 4\].*new --workdir"):
        c.restore(ckpt_lib.abstract(other))
    c.close()
    assert sorted(os.listdir(d)) == ["2", "4"] and not os.path.exists(d + "_corrupt")


def test_empty_directory_restores_none(tmp_path):
    c = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"))
    assert c.restore(ckpt_lib.abstract(_state(0))) is None
    c.close()


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(shape=st.sampled_from([(7,), (4, 5), (2, 3, 4)]),
                  dtype=st.sampled_from(["float32", "bfloat16", "int32"]), seed=st.integers(0, 2**16), data=st.data())
def test_checksum_changes_with_any_single_bit(shape, dtype, seed, data):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x = jnp.asarray(x * 100).astype(dtype)
    bits = np.asarray(jax.lax.bitcast_convert_type(x, jnp.uint16 if dtype == "bfloat16" else jnp.uint32))
    i = data.draw(st.integers(0, bits.size - 1), label="element")
    b = data.draw(st.integers(0, 8 * bits.itemsize - 1), label="bit")
    flipped = bits.copy().ravel()
    flipped[i] ^= np.asarray(1 << b, bits.dtype)
    y = jax.lax.bitcast_convert_type(jnp.asarray(flipped.reshape(bits.shape)), x.dtype)
    _, _, cx = ckpt_lib.summarize({"x": x})
    _, _, cy = ckpt_lib.summarize({"x": y})
    assert cx[0] != cy[0]
    assert ckpt_lib.summarize({"x": x})[2][0] == cx[0]  # deterministic


# ----------------------------------------------------------------------------------------------
# Issue 20: a step missing an item it was saved with is corrupt; a failed async save is reported once.
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("item, says", [("data", "restart the data order"), ("meta", "cannot be verified")])
def test_step_missing_its_data_or_meta_item_is_corrupt(tmp_path, caplog, item, says):
    import shutil
    d = str(tmp_path / "ckpt")
    _save(d, [2, 4])
    shutil.rmtree(os.path.join(d, "4", item))
    c = ckpt_lib.Checkpointer(d)
    with caplog.at_level(logging.WARNING, logger="jaxssl.train.checkpoint"):
        r = c.restore(ckpt_lib.abstract(_state(0)))
    c.close()
    assert r.step == 2 and r.data == {"epoch": 2}
    assert f"its {item}/ item is missing (the step lists it)" in caplog.text and says in caplog.text
    assert os.listdir(d + "_corrupt") == ["4"]


def _fail_json_save(monkeypatch, step: int, item: str = "meta"):
    """Make the async write of `item` at `step` fail in orbax's background thread, as a full disk does."""
    import errno
    import re
    from orbax.checkpoint._src.handlers import json_checkpoint_handler
    original = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    def save_fn(self, value, directory):
        if re.search(rf"/{step}\.orbax-checkpoint-tmp[^/]*/{item}", str(directory)):
            async def fail():
                raise OSError(errno.ENOSPC, "No space left on device")
            return fail()
        return original(self, value, directory)
    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", save_fn)


def test_failed_async_save_is_reported_once_with_step_cause_and_newest_good(tmp_path, monkeypatch):
    import time
    d = str(tmp_path / "ckpt")
    _fail_json_save(monkeypatch, 4)
    c = ckpt_lib.Checkpointer(d)
    c.save(2, _state(2, seed=2))
    c.save(4, _state(4, seed=4))
    deadline = time.time() + 30
    with pytest.raises(ckpt_lib.SaveFailedError) as e:
        while time.time() < deadline:  # non-blocking checks, as the trainer makes every step
            c.check_saves(now=5)
            time.sleep(0.01)
    msg = str(e.value)
    assert msg.startswith(f"Saving the checkpoint of step 4 in {d} failed (found at step 5): OSError: [Errno 28] "
                          f"No space left on device. Training stopped; the newest good checkpoint is step 2"), msg
    c.close()  # already reported: no second error
    assert [n for n in os.listdir(d) if n.isdigit()] == ["2"]  # the tmp directory goes at the next start
