"""Offline speech data: the Free Spoken Digit Dataset (`fsdd.npz`, 8 kHz int16) as fixed-length clips.

Clips are the first `clip_seconds` of each recording (1 s keeps 2,980 of the 3,000 whole),
zero-padded, standardised per utterance over its true length (wav2vec 2.0 / data2vec
`normalize=True`) and linearly resampled to `sample_rate` (16 kHz by default, the rate the
wav2vec 2.0 feature encoder's strides were designed for). The official split: repetition
index < 5 is the test set (300 clips), the rest train (2,700). Labels: digit and speaker.
"""
from __future__ import annotations

import os

import numpy as np

from jaxssl.data.text import StepIterator, find_file, process_rows


def load_fsdd(split: str = "train", *, clip_seconds: float = 1.0, sample_rate: int = 16_000,
              path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """{"audio": float32 (N, clip_seconds * sample_rate), "digit": int32 (N,), "speaker": int32 (N,)}."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    with np.load(find_file("fsdd.npz", path)) as z:
        keep = (z["index"] < 5) if split == "test" else (z["index"] >= 5)
        sr = int(z["sample_rate"])
        n = int(clip_seconds * sr)
        audio = z["audio"][keep, :n].astype(np.float32) / 32768.0
        lengths = np.minimum(z["lengths"][keep], n)
        digit = z["digit"][keep].astype(np.int32)
        speakers = z["speaker"]
        names = sorted(set(speakers.tolist()))
        speaker = np.array([names.index(s) for s in speakers[keep]], np.int32)
    if audio.shape[1] < n:
        audio = np.pad(audio, ((0, 0), (0, n - audio.shape[1])))
    valid = np.arange(n)[None, :] < lengths[:, None]
    mean = np.sum(audio * valid, 1, keepdims=True) / lengths[:, None]
    var = np.sum(((audio - mean) * valid) ** 2, 1, keepdims=True) / lengths[:, None]
    audio = np.where(valid, (audio - mean) / np.sqrt(var + 1e-7), 0.0).astype(np.float32)
    if sample_rate != sr:
        m = int(clip_seconds * sample_rate)
        t_new, t_old = np.arange(m) / sample_rate, np.arange(n) / sr
        audio = np.stack([np.interp(t_new, t_old, a) for a in audio]).astype(np.float32)
    return {"audio": audio, "digit": digit, "speaker": speaker}


def make_audio_iter(batch_size: int, *, split: str = "train", seed: int = 0, process_index: int | None = None,
                    process_count: int | None = None, **load_kw) -> StepIterator:
    """{"inputs": float32 (B_local, L), "label": digit} batches, clips drawn uniformly with replacement.

    `batch_size` is the global batch; this process gets its rows (`text.process_rows`).
    """
    rows = process_rows(batch_size, process_index, process_count)
    data = load_fsdd(split, **load_kw)

    def sample(rng):
        idx = rng.integers(0, len(data["audio"]), batch_size)
        return {"inputs": data["audio"][idx], "label": data["digit"][idx]}

    return StepIterator(sample, seed, rows)
