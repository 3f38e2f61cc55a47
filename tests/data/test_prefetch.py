"""DevicePrefetch: same batches in the same order, placed one step ahead, and checkpoints that resume exactly."""
import functools

import jax
import numpy as np
import pytest

from jaxssl.data import prefetch
from jaxssl.train import sharding as shd


class _Counter:
    """A checkpointable host iterator: batch i is {"image": full((2, 2), i)}; state = next index."""

    def __init__(self):
        self.i = 0

    def __next__(self):
        self.i += 1
        return {"image": np.full((2, 2), self.i - 1, np.uint8)}

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


def _value(batch) -> int:
    return int(np.asarray(batch["image"])[0, 0])


@pytest.mark.parametrize("size", [1, 2, 3])
def test_same_batches_and_exact_resume_from_any_step(size):
    placed = []
    place = lambda b: (placed.append(_value(b)), b)[1]
    it = prefetch.DevicePrefetch(_Counter(), place, size=size)
    seen, states = [], []
    for _ in range(5):
        seen.append(_value(next(it)))
        it.fill()  # (the trainer dispatches the step first)
        states.append(it.get_state())
        # After fill(), batches up to n + size - 1 are placed: the next one is on the devices.
        assert placed[-1] == seen[-1] + size - 1
    assert seen == [0, 1, 2, 3, 4]
    # get_state() counts consumed batches only, whatever is in the buffer.
    assert states == [{"i": n} for n in range(1, 6)]
    # A fresh iterator restored from the state after batch 2 continues with batch 3, as an uninterrupted one.
    resumed = prefetch.DevicePrefetch(_Counter(), place, size=size)
    resumed.set_state(states[2])
    assert [_value(next(resumed)) for _ in range(3)] == [3, 4, 5]
    # set_state on a running iterator drops what it had placed.
    it.set_state({"i": 1})
    assert _value(next(it)) == 1


def _failing_place(on_call: int, error: BaseException):
    """A `place` that raises `error` at its `on_call`-th call (1-based) and passes batches through otherwise."""
    calls = []

    def place(batch):
        calls.append(1)
        if len(calls) == on_call:
            raise error
        return batch

    return place


def test_a_failed_placement_loses_no_batch():
    # The step dispatched before a failing fill() is logged and checkpointed first: the error is
    # raised where batch 2 is asked for, as without prefetching, and the state never counts a batch
    # read but not placed.
    it = prefetch.DevicePrefetch(_Counter(), _failing_place(3, OSError("transfer failed")))
    assert _value(next(it)) == 0
    it.fill()
    assert _value(next(it)) == 1
    it.fill()  # fails; deferred
    assert it.get_state() == {"i": 2}  # a checkpoint now resumes with batch 2
    with pytest.raises(OSError, match="transfer failed"):
        next(it)
    assert it.get_state() == {"i": 2}
    assert _value(next(it)) == 2  # the host iterator was rewound: going on reads batch 2 again


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(143)])
def test_an_interrupt_during_read_ahead_propagates_at_once(interrupt):
    # Ctrl-C (or a signal handler's sys.exit) inside fill() must stop the loop now, not one step later.
    it = prefetch.DevicePrefetch(_Counter(), _failing_place(2, interrupt))
    assert _value(next(it)) == 0
    with pytest.raises(type(interrupt)):
        it.fill()  # batch 1 was read, its placement interrupted
    # The trainer's interrupt handler checkpoints here: the state resumes with batch 1, and an
    # interactive caller that goes on gets batch 1 too (nothing half-read is lost).
    assert it.get_state() == {"i": 1}
    assert _value(next(it)) == 1
    it.fill()
    assert [_value(next(it)) for _ in range(2)] == [2, 3]


def test_batches_are_global_arrays_on_the_mesh():
    mesh = shd.make_mesh()
    it = prefetch.DevicePrefetch(_Counter(), functools.partial(shd.to_global, mesh=mesh))
    batch = next(it)
    assert isinstance(batch["image"], jax.Array)
    assert batch["image"].sharding == shd.data_sharded(mesh)
    np.testing.assert_array_equal(batch["image"], np.zeros((2, 2), np.uint8))


def test_size_must_be_positive():
    with pytest.raises(ValueError, match="prefetch size must be >= 1"):
        prefetch.DevicePrefetch(_Counter(), lambda b: b, size=0)
