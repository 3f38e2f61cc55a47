"""Double-buffered device placement of a checkpointable host iterator.

`DevicePrefetch(host_iter, place, size=2)` yields `place(next(host_iter))`. The trainer takes batch
n, dispatches step n (asynchronously: the call returns while the devices compute) and calls
`fill()`, which reads batch n + 1 and starts its transfer then: the host reads, decodes and places
the next batch while the devices run the current step, and step n + 1 never starts by waiting for
its input's host-to-device copy (flax's `jax_utils.prefetch_to_device` and big_vision's
`prefetch_iterator` keep such a device-side queue too). `size` is the number of batches on the
devices at once, counting the one in use.

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
    """`place(batch)` of each batch of `host_iter`, up to `size - 1` placed ahead; checkpointable like `host_iter`.

    Use: `batch = next(it)`, dispatch the step on it, then `it.fill()`: the following batches are
    read and placed while that step runs.

    Args:
      host_iter: an iterator with `get_state()` / `set_state(state)` (jaxssl's training iterators).
      place: host batch -> device batch (e.g. `sharding.to_global` over the run's mesh).
      size: batches on the devices at once, counting the one in use: 1 places each batch when it is
        asked for (no prefetch), 2 is double buffering.
    """

    def __init__(self, host_iter: Iterator[Any], place: Callable[[Any], Any], size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, got {size}.")
        self.host_iter, self.place, self.size = host_iter, place, size
        # (host-iterator state just after the batch, placed batch).
        self._buffer: collections.deque = collections.deque()
        self._state = copy.deepcopy(host_iter.get_state())  # after the last batch handed out
        self._error: Exception | None = None  # raised by fill(), re-raised by the next __next__

    def __iter__(self) -> "DevicePrefetch":
        return self

    def _put(self) -> None:
        """Read and place one batch; on any failure the host iterator is rewound to before it, so
        the batch is read again by whoever goes on (no batch lost, none read twice)."""
        before = self._buffer[-1][0] if self._buffer else self._state
        try:
            batch = next(self.host_iter)
            state = copy.deepcopy(self.host_iter.get_state())
            placed = self.place(batch)
        except BaseException:
            self.host_iter.set_state(copy.deepcopy(before))
            raise
        self._buffer.append((state, placed))

    def fill(self) -> None:
        """Read and place batches until `size - 1` wait in the buffer (call it right after dispatching a step).

        An `Exception` while reading or placing (a bad file, a failed transfer) is raised by the
        `next()` that would have read that batch without prefetching, so the step already dispatched
        is logged and checkpointed as before. KeyboardInterrupt and SystemExit (Ctrl-C, a signal
        handler's `sys.exit`) are not deferred: they propagate from here at once, with the state of
        `get_state()` unchanged (the trainer's interrupt handler checkpoints the step it dispatched).
        """
        try:
            while self._error is None and len(self._buffer) < self.size - 1:
                self._put()
        except Exception as e:  # noqa: BLE001  (re-raised by __next__, where the batch is needed)
            self._error = e

    def __next__(self) -> Any:
        if not self._buffer and self._error is not None:
            error, self._error = self._error, None
            raise error
        if not self._buffer:
            self._put()
        self._state, batch = self._buffer.popleft()
        return batch

    def get_state(self) -> Any:
        """The host iterator's state after the last batch handed out (buffered ones are not consumed)."""
        return copy.deepcopy(self._state)

    def set_state(self, state: Any) -> None:
        """Continue from `state` (of `get_state`); batches placed before are dropped."""
        self._buffer.clear()
        self._error = None
        self.host_iter.set_state(state)
        self._state = copy.deepcopy(state)
