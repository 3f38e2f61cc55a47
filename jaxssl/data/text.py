"""Offline text data: a byte-level tokenizer and random-window batches of a plain-text corpus.

The tokenizer needs no vocabulary file: ids 0-255 are the UTF-8 bytes, then four specials
(<pad> 256, <s> 257, </s> 258, <mask> 259; `VOCAB_SIZE` = 260). The default corpus is
`tiny_shakespeare.txt` in the shared source folder (`jaxssl.data.find_source_dir()`), split
90/10 into train/validation by position (as nanoGPT's shakespeare_char).

`StepIterator` makes global batch s a pure function of (seed, s): its checkpointable state is
just the step counter (`get_state` / `set_state`), so a restored run continues with the same
data. Every process draws the same global batch and keeps its own contiguous rows (process p of
P keeps rows [p * B / P, (p + 1) * B / P)), so P processes feed exactly the batch one process
would, as `jax.make_array_from_process_local_data` expects of process-local data.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Callable

import numpy as np

from jaxssl.data.prepare import find_source_dir

PAD, BOS, EOS, MASK = 256, 257, 258, 259
NUM_BYTES = 256
VOCAB_SIZE = 260


def encode(text: str) -> np.ndarray:
    """UTF-8 bytes of `text` as int32 ids."""
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)


def decode(ids) -> str:
    """Inverse of `encode`; special ids are dropped."""
    ids = np.asarray(ids)
    return bytes(ids[ids < NUM_BYTES].astype(np.uint8)).decode("utf-8", errors="replace")


def find_file(filename: str, path: str | os.PathLike | None) -> pathlib.Path:
    """`path` if given, else `filename` in the shared source folder (FileNotFoundError naming the fix)."""
    if path:
        return pathlib.Path(path)
    root = find_source_dir()
    if root is None or not (root / filename).exists():
        raise FileNotFoundError(f"{filename} not found in the shared source folder ({root}); set "
                                "$JAXSSL_SOURCE_DIR or pass its path.")
    return root / filename


def load_corpus(split: str = "train", path: str | os.PathLike | None = None) -> np.ndarray:
    """Token ids of the corpus split ("train": first 90%, "validation": last 10%)."""
    ids = encode(find_file("tiny_shakespeare.txt", path).read_text(encoding="utf-8"))
    cut = int(0.9 * len(ids))
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}.")
    return ids[:cut] if split == "train" else ids[cut:]


def process_rows(global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> slice:
    """The rows of a global batch that this process feeds (defaults: `jax.process_index/count()`)."""
    if process_index is None or process_count is None:
        import jax  # pylint: disable=g-import-not-at-top
        process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch_size % process_count:
        raise ValueError(f"The global batch ({global_batch_size}) must be divisible by the number of processes "
                         f"({process_count}); set config.batch_size to a multiple of {process_count}.")
    local = global_batch_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


class StepIterator:
    """Process-local rows `rows` of the global batches `sample(rng) -> dict`, rng = default_rng([seed, step])."""

    def __init__(self, sample: Callable[[np.random.Generator], dict], seed: int = 0, rows: slice = slice(None)):
        self._sample, self._seed, self._step, self._rows = sample, seed, 0, rows

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = self._sample(np.random.default_rng([self._seed, self._step]))
        self._step += 1
        return {k: v[self._rows] for k, v in batch.items()}

    def get_state(self) -> dict[str, Any]:
        return {"step": self._step, "seed": self._seed}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("seed", self._seed) != self._seed:
            raise ValueError(f"iterator state of seed {state['seed']} restored into seed {self._seed}.")
        self._step = int(state["step"])


def make_text_iter(batch_size: int, seq_len: int, *, split: str = "train", seed: int = 0,
                   path: str | os.PathLike | None = None, process_index: int | None = None,
                   process_count: int | None = None) -> StepIterator:
    """{"inputs": int32 (B_local, seq_len)} windows at uniformly random offsets of the corpus.

    `batch_size` is the global batch; this process gets its rows (`process_rows`).
    """
    rows = process_rows(batch_size, process_index, process_count)
    ids = load_corpus(split, path)
    if len(ids) <= seq_len:
        raise ValueError(f"corpus of {len(ids)} tokens is shorter than seq_len={seq_len}.")

    def sample(rng):
        starts = rng.integers(0, len(ids) - seq_len, batch_size)
        return {"inputs": ids[starts[:, None] + np.arange(seq_len)]}

    return StepIterator(sample, seed, rows)
