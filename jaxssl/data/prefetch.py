"""Double-buffered device placement of a checkpointable host iterator.

`DevicePrefetch(host_iter, place, size=2)` yields `place(next(host_iter))`, keeping `size - 1`
batches already placed on the devices ahead of the one it hands out. The trainer dispatches step
n (asynchronously) and then asks for batch n + 1, which has been on its way to the devices since
step n - 1 was dispatched: the host reads, decodes and transfers one batch while the devices compute
the previous step, and a step never starts by waiting for its input's host-to-device copy (on a GPU
that copy overlaps the running step instead of following it; flax's `jax_utils.prefetch_to_device`
and big_vision's `prefetch_iterator` do the same).

Exact resume: `get_state()` is the host iterator's state just after the last batch handed out, not
after the batches held in the buffer, so a checkpoint taken at step n resumes with batch n + 1 (the
buffered batches are simply placed again). `set_state()` drops the buffer and moves the host
iterator.

`place` is typically `functools.partial(jaxssl.train.sharding.to_global, mesh=mesh)`
(`jax.make_array_from_process_local_data`: each process contributes its rows of the global batch).
"""
from __future__ import annotations

import collections
import copy
from typing import Any, Callable, Iterator


class DevicePrefetch:
    """`place(batch)` of each batch of `host_iter`, `size - 1` ahead; checkpointable like `host_iter`.

    Args:
      host_iter: an iterator with `get_state()` / `set_state(state)` (jaxssl's training iterators).
      place: host batch -> device batch (e.g. `sharding.to_global` over the run's mesh).
      size: batches in flight, counting the one handed out; 1 places each batch when it is asked
        for (no prefetch), 2 is double buffering.
    """

    def __init__(self, host_iter: Iterator[Any], place: Callable[[Any], Any], size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, got {size}.")
        self.host_iter, self.place, self.size = host_iter, place, size
        # (host-iterator state before the batch, placed batch); the state restores to that batch.
        self._buffer: collections.deque = collections.deque()

    def __iter__(self) -> "DevicePrefetch":
        return self

    def _put(self) -> None:
        state = copy.deepcopy(self.host_iter.get_state())
        self._buffer.append((state, self.place(next(self.host_iter))))

    def __next__(self) -> Any:
        # Top up first, then hand out the oldest: with size 2 the batch handed out was placed during
        # the previous call (while the devices ran the step dispatched before it), and the one placed
        # now is the next step's.
        while len(self._buffer) < self.size:
            self._put()
        return self._buffer.popleft()[1]

    def get_state(self) -> Any:
        """The host iterator's state after the last batch handed out (buffered ones are not consumed)."""
        if self._buffer:
            return copy.deepcopy(self._buffer[0][0])
        return self.host_iter.get_state()

    def set_state(self, state: Any) -> None:
        """Continue from `state` (of `get_state`); batches placed before are dropped."""
        self._buffer.clear()
        self.host_iter.set_state(state)
