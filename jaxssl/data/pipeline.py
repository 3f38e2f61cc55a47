"""Grain input pipelines: infinite shuffled training batches and padded eval passes.

Training (:func:`make_train_iter`)::

    indices of the whole split -> seed(seed).shuffle() -> repeat()
      -> batch(global_batch_size, drop_remainder=True)
      -> map(this process's rows: one batched read of the records -> {"image", "label"} each)
      [-> random_map(transform per example)] -> map(stack)
      -> to_iter_dataset(threads) [-> mp_prefetch(workers)] -> iterator

This is ``MapDataset.source(src).seed(seed).shuffle().repeat().map(...)
.batch(...)`` with the batching moved onto the indices: array_record's batched
read (``src.__getitems__``) is about twice as fast as reading records one by one,
and grain 0.2.18 does not push batched reads down through ``batch``.

Batches are host numpy: ``{"image": uint8 (B, H, W, 3), "label": int32 (B,)}``
with ``B = global_batch_size // process_count``; photometric augmentation runs
later on device. The iterator's ``get_state()`` is a small JSON-serialisable
dict and ``set_state()`` on a freshly built iterator (same arguments) resumes
bit-exactly. Each epoch is shuffled differently (grain reseeds per epoch);
batches may span two epochs.

Evaluation (:func:`make_eval_iter`) is one deterministic pass in storage order
whose last batch is padded to full size, with ``"mask"`` marking real examples;
its ``batch_size`` is per process.

Per-process sharding: in training every process walks the same global stream of
shuffled indices and reads rows ``[i * B, (i + 1) * B)`` of each global batch, so
the global batches are those of a 1-process run whatever the process count, and a
checkpointed iterator state resumes exactly on another number of processes
(elastic resume). In evaluation the split is cut into ``process_count``
contiguous slices that differ by at most one example and are padded to the same
number of batches on every process, so all processes run the same number of
eval steps.

Grayscale images (C=1, e.g. MNIST) are repeated to 3 channels. No TensorFlow.
With ``worker_count > 0`` grain starts worker processes (spawn): call from under
``if __name__ == "__main__":`` in scripts.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

from jaxssl.data import sources

Example = dict[str, np.ndarray]


class _ToExample(grain.transforms.Map):
    """Record -> ``{"image": uint8 (H, W, 3), "label": int32}`` with validation."""

    def __init__(self, where: str, image_key: str, label_key: str | None,
                 need_label: bool) -> None:
        """``where`` names the dataset/split in error messages."""
        self._where, self._image_key, self._label_key = where, image_key, label_key
        self._need_label = need_label

    def map(self, record: Mapping[str, Any]) -> Example:
        """Validates and converts one record; raises ValueError naming the fix."""
        if self._image_key not in record:
            raise ValueError(f"{self._where}: record has no image key {self._image_key!r}; its "
                             f"keys are {sorted(record)}. Pass image_key=<one of them>.")
        image = np.asarray(record[self._image_key])
        if image.dtype != np.uint8:
            raise ValueError(f"{self._where}: image {self._image_key!r} is {image.dtype}, expected "
                             "uint8 (decoded pixels). Convert/quantise to uint8 when preparing.")
        if image.ndim != 3 or image.shape[-1] not in (1, 3):
            raise ValueError(f"{self._where}: image {self._image_key!r} has shape {image.shape}, "
                             "expected (H, W, C) with C in {1, 3}. Add a channel axis for 2-D "
                             "grayscale images.")
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)  # Grayscale -> RGB: models expect 3 channels.
        example = {"image": image}
        if self._label_key is None:
            if self._need_label:
                raise ValueError(f"{self._where}: evaluation needs labels; label_key is None.")
            return example
        if self._label_key not in record:
            fix = "" if self._need_label else " or label_key=None for unlabelled training"
            raise ValueError(f"{self._where}: record has no label key {self._label_key!r}; its "
                             f"keys are {sorted(record)}. Pass label_key=<one of them>{fix}.")
        example["label"] = np.asarray(record[self._label_key], dtype=np.int32)
        return example


def _read(src: Sequence[Any], indices: Sequence[int]) -> Sequence[Any]:
    """Reads records; array_record's batched read is ~2x faster than one by one."""
    getitems = getattr(src, "__getitems__", None)
    return getitems(indices) if getitems else [src[i] for i in indices]


def _stack(examples: Sequence[Example]) -> Example:
    """Stacks a list of example dicts into one batch dict."""
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


class _ReadBatch(grain.transforms.Map):
    """A global batch of record indices -> this process's rows of it, as examples (one batched read)."""

    def __init__(self, src: Sequence[Any], rows: slice, to_example: _ToExample) -> None:
        """Reads ``src[i]`` for the indices at positions ``rows`` of each global batch."""
        self._src, self._rows, self._to_example = src, rows, to_example

    def map(self, indices: np.ndarray) -> list[Example]:
        """Reads and converts this process's rows."""
        records = _read(self._src, [int(i) for i in indices[self._rows]])
        return [self._to_example.map(r) for r in records]


class _PerExample(grain.transforms.RandomMap):
    """Applies ``fn(example, rng)`` to each example, one child rng per row of the global batch."""

    def __init__(self, fn: Callable[[Example, np.random.Generator], Example], rows: slice,
                 global_batch_size: int) -> None:
        """Wraps the user's per-example transform; ``rows`` are this process's rows of the global batch."""
        self._fn, self._rows, self._global = fn, rows, global_batch_size

    def random_map(self, examples: list[Example], rng: np.random.Generator) -> list[Example]:
        """Deterministic: grain seeds ``rng`` from (seed, epoch, batch index), the same on every process."""
        # Not rng.spawn(): grain reuses the Generator and SeedSequence.spawn counts
        # its children, so spawned streams would depend on history (breaks resume).
        # One seed per row of the GLOBAL batch: a row's randomness never depends on the process count.
        seeds = rng.integers(2**63, size=self._global)[self._rows]
        return [self._fn(ex, np.random.default_rng(int(s))) for ex, s in zip(examples, seeds)]


class _Stack(grain.transforms.Map):
    """List of examples -> batch dict of stacked numpy arrays."""

    def map(self, examples: list[Example]) -> Example:
        """Returns the stacked batch."""
        return _stack(examples)


class _ReadEvalBatch(grain.transforms.Map):
    """Indices into the padded slice -> batch with ``"mask"``; pads past ``n``."""

    def __init__(self, src: Sequence[Any], start: int, n: int, to_example: _ToExample,
                 transform: Callable[[Example], Example] | None, blank: Example) -> None:
        """Slice ``[start, start + n)`` of ``src``; ``blank`` is the padding example."""
        self._src, self._start, self._n, self._to_example = src, start, n, to_example
        self._transform, self._blank = transform, blank

    def map(self, indices: np.ndarray) -> Example:
        """Real examples get mask True; indices >= n get the blank example."""
        real = [int(i) for i in indices if i < self._n]
        records = _read(self._src, [self._start + i for i in real])
        examples = [self._to_example.map(r) for r in records]
        if self._transform is not None:
            examples = [self._transform(ex) for ex in examples]
        examples = [{**ex, "mask": np.True_} for ex in examples]
        return _stack(examples + [self._blank] * (len(indices) - len(real)))


def processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """Defaults to ``jax.process_index()/process_count()``; validates the pair."""
    if process_index is None or process_count is None:
        import jax  # pylint: disable=g-import-not-at-top

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count="
                         f"{process_count}).")
    return process_index, process_count


def _local_batch(batch_size: int, process_count: int, arg: str) -> int:
    """Per-process batch; the global batch must split evenly across processes."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{arg} must be a positive int, got {batch_size!r}.")
    if batch_size % process_count:
        raise ValueError(f"{arg} ({batch_size}) must be divisible by the number of processes "
                         f"({process_count}): each process loads {arg} // process_count "
                         "examples. Pick a multiple of the process count.")
    return batch_size // process_count


def _read_options(num_threads: int, prefetch: int) -> grain.ReadOptions:
    """Threads computing whole batches ahead; ``prefetch`` batches buffered."""
    if num_threads < 0 or prefetch < 0:
        raise ValueError(f"num_threads ({num_threads}) and prefetch ({prefetch}) must be >= 0.")
    if prefetch == 0:
        num_threads = 0  # No buffer means synchronous reads.
    return grain.ReadOptions(num_threads=num_threads,
                             prefetch_buffer_size=max(prefetch, num_threads))


def _to_iter(ds: grain.MapDataset, num_threads: int, prefetch: int,
             worker_count: int) -> grain.DatasetIterator:
    """Thread prefetch, optionally worker processes, then the iterator."""
    it_ds = ds.to_iter_dataset(_read_options(num_threads, prefetch))
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}.")
    if worker_count > 0:
        from absl import flags  # pylint: disable=g-import-not-at-top

        if not flags.FLAGS.is_parsed():  # grain reads its absl flags in the workers.
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=max(1, prefetch)))
    return iter(it_ds)


def make_train_iter(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    global_batch_size: int,
    seed: int,
    image_key: str = "image",
    label_key: str | None = "label",
    process_index: int | None = None,
    process_count: int | None = None,
    transform: Callable[[Example, np.random.Generator], Example] | None = None,
    worker_count: int = 0,
    num_threads: int = 2,
    prefetch: int = 4,
) -> grain.DatasetIterator:
    """Infinite iterator of shuffled, process-local training batches.

    Args:
      name: TFDS dataset name (prepared as array_record; see ``sources.get_source``).
      split: TFDS split, e.g. ``"train"`` or ``"train[:90%]"``.
      data_dir: TFDS data dir (None: TFDS's default).
      global_batch_size: batch over all processes; each yields ``// process_count``.
      seed: shuffle seed (also seeds ``transform``); same seed -> same batches.
      image_key: record key of the uint8 (H, W, C) image.
      label_key: record key of the label; None for unlabelled data (no "label").
      process_index: this process (default ``jax.process_index()``).
      process_count: number of processes (default ``jax.process_count()``).
      transform: optional host-side ``fn(example, rng) -> example`` run per example
        after decoding (e.g. multi-crop views), seeded per example and epoch.
      worker_count: grain worker processes (0: read in this process).
      num_threads: threads per process that each compute a whole batch.
      prefetch: batches buffered ahead per process (0: synchronous).

    Returns:
      A grain ``DatasetIterator`` of ``{"image": uint8 (B, H, W, 3), "label":
      int32 (B,)}``; ``get_state()``/``set_state()`` resume exactly.

    Raises:
      ValueError: bad batch size/process split, batch larger than this process's
        slice, or records that are not uint8 (H, W, C) images with labels.
      FileNotFoundError: the dataset is not prepared (message has the fix).
    """
    index, count = processes(process_index, process_count)
    local = _local_batch(global_batch_size, count, "global_batch_size")
    rows = slice(index * local, (index + 1) * local)
    src = sources.get_source(name, split, data_dir)
    where = f"{name}[{split}]"
    if global_batch_size > len(src):
        raise ValueError(
            f"The global batch ({global_batch_size}) is larger than {where} ({len(src)} examples). Use a "
            f"smaller global_batch_size or a larger split.")
    to_example = _ToExample(where, image_key, label_key, need_label=False)
    to_example.map(src[0])  # Fail here, not in a reader thread.
    # One global order, the same on every process: shuffle/repeat/batch the indices of the whole
    # split into GLOBAL batches, then each process reads only its rows (one batched read). The
    # batches are therefore those of a 1-process run for any process count, and the iterator state
    # (a position in that global stream) resumes exactly on another number of processes.
    ds = grain.MapDataset.range(len(src)).seed(seed).shuffle().repeat()
    ds = ds.batch(global_batch_size, drop_remainder=True).map(_ReadBatch(src, rows, to_example))
    if transform is not None:
        ds = ds.random_map(_PerExample(transform, rows, global_batch_size))
    return _to_iter(ds.map(_Stack()), num_threads, prefetch, worker_count)


def make_eval_iter(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    batch_size: int,
    image_key: str = "image",
    label_key: str = "label",
    process_index: int | None = None,
    process_count: int | None = None,
    transform: Callable[[Example], Example] | None = None,
    worker_count: int = 0,
    num_threads: int = 2,
    prefetch: int = 4,
) -> grain.DatasetIterator:
    """One deterministic, padded pass over this process's slice of ``split``.

    Every batch has ``"image"`` uint8 (B, H, W, 3), ``"label"`` int32 (B,) and
    ``"mask"`` bool (B,) with ``B = batch_size`` PER PROCESS (unlike training's
    global batch; the global eval batch is ``batch_size * process_count``).
    Padding examples (only in the last batch(es)) are zero images with label -1
    and mask False. All processes yield ``ceil(ceil(len / process_count) / B)``
    batches. A batch larger than the split is allowed (it is mostly padding).

    Args:
      name: TFDS dataset name.
      split: TFDS split, e.g. ``"test"``.
      data_dir: TFDS data dir (None: TFDS's default).
      batch_size: examples per batch on each process (per-process batch).
      image_key: record key of the uint8 (H, W, C) image.
      label_key: record key of the label (required).
      process_index: this process (default ``jax.process_index()``).
      process_count: number of processes (default ``jax.process_count()``).
      transform: optional deterministic ``fn(example) -> example`` (e.g. a
        centre crop); applied to the padding too, so shapes match.
      worker_count: grain worker processes (0: read in this process).
      num_threads: threads per process that each compute a whole batch.
      prefetch: batches buffered ahead per process (0: synchronous).

    Returns:
      A finite grain ``DatasetIterator`` (no shuffling, storage order).

    Raises:
      ValueError: bad batch size/process split, missing label key, bad images.
      FileNotFoundError: the dataset is not prepared (message has the fix).
    """
    index, count = processes(process_index, process_count)
    local = _local_batch(batch_size, 1, "batch_size")  # Already per process.
    if label_key is None:
        raise ValueError("make_eval_iter needs labels: pass label_key=<record key>.")
    src = sources.get_source(name, split, data_dir)
    where = f"{name}[{split}]"
    if len(src) == 0:
        raise ValueError(f"{where} is empty.")
    to_example = _ToExample(where, image_key, label_key, need_label=True)
    first = to_example.map(src[0])  # Validates early and gives the padding shapes.
    if transform is not None:
        first = transform(first)
    blank = {k: np.zeros_like(v) for k, v in first.items()}
    blank["label"] = np.asarray(-1, np.int32)
    blank["mask"] = np.False_
    start, stop = index * len(src) // count, (index + 1) * len(src) // count
    num_batches = math.ceil(math.ceil(len(src) / count) / local)
    ds = grain.MapDataset.range(num_batches * local).batch(local)
    ds = ds.map(_ReadEvalBatch(src, start, stop - start, to_example, transform, blank))
    return _to_iter(ds, num_threads, prefetch, worker_count)
