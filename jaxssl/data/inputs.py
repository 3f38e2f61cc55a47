"""The input of a run, chosen from `config.data`: TFDS images, text tokens or speech waveforms.

The trainer and the evaluators ask this module, never a dataset module directly, so every input
gets the same treatment (validation, dtype, sharding, multi-host slicing, checkpointed iterator):

  kind(config)                           "image" (any TFDS image dataset), "text" or "audio"
  data_dir(config)                       the one data_dir resolver (config, $TFDS_DATA_DIR, ~/tensorflow_datasets)
  ensure_ready(config, data_dir)         prepare a missing TFDS dataset offline; check local files
  train_iter(config, data_dir)           infinite, checkpointable, process-local training batches
  eval_iter(config, split, batch_size=, data_dir=)   one padded pass: {key, "label", "mask"} per process
  example(config)                        a (2, ...) zero input of the network's input shape, for `init`

Batches hold `"image"` uint8 (B, H, W, 3) for fixed-size images (the step crops and augments them into
views), `"views"` (one uint8 (B, h_v, w_v, 3) per view, cropped on the host) for encoded images of many
sizes (`host_crop`: TFDS JPEG datasets such as imagenette/imagenet2012, `folder:/path`), and
`"inputs"` for text (int32 token ids (B, T)) and audio (float32 waveforms (B, L)), which reach the
method unchanged. Every iterator yields this process's rows of the global batch.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterator

import numpy as np

from jaxssl import defaults

# Datasets read from the shared source files rather than TFDS, by `config.data.name`.
SEQUENCE_DATASETS = {"tiny_shakespeare": "text", "fsdd": "audio"}


def kind(config) -> str:
    """"text" or "audio" for the sequence datasets, else "image" (a TFDS image dataset)."""
    return SEQUENCE_DATASETS.get(config["data"]["name"], "image")


def host_crop(config, data_dir_: str | None = None) -> bool:
    """Images stored encoded at many sizes (JPEG datasets, `folder:` paths): decoded and cropped per view
    on the host (`jaxssl.data.encoded`); False for fixed-size images (CIFAR-10), cropped on device."""
    from jaxssl.data import encoded  # pylint: disable=g-import-not-at-top
    return kind(config) == "image" and encoded.is_encoded(config["data"]["name"], data_dir_)


def input_key(config) -> str:
    """The batch key of the network input: "image" (augmented on device) or "inputs" (passed through)."""
    return "image" if kind(config) == "image" else "inputs"


def data_dir(config) -> str:
    """The TFDS data_dir of a run: `config.data.data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`."""
    from jaxssl.data.sources import default_data_dir  # pylint: disable=g-import-not-at-top
    return os.path.abspath(os.path.expanduser(defaults.get(config, "data.data_dir") or default_data_dir()))


def ensure_ready(config, data_dir_: str) -> None:
    """Fail early (FileNotFoundError with the fix) when the run's data is missing.

    A missing TFDS dataset that `jaxssl.data.prepare` can build from local files is built (process 0
    only, with `config.data.prepare_offline`), and `imagenet2012` from the archives in
    `config.data.manual_dir` (`jaxssl.data.manual`); call it before the other processes read.
    """
    name = config["data"]["name"]
    if kind(config) != "image":
        from jaxssl.data.text import find_file  # pylint: disable=g-import-not-at-top
        find_file({"text": "tiny_shakespeare.txt", "audio": "fsdd.npz"}[kind(config)], None)
        return
    from jaxssl.data import encoded, prepare, sources  # pylint: disable=g-import-not-at-top
    if encoded.is_folder(name):
        encoded.get_source(name, "train", None, skip_bad=defaults.get(config, "data.skip_bad_images"))
        return
    try:
        sources.get_source(name, defaults.get(config, "data.split"), data_dir_)
    except FileNotFoundError:
        from jaxssl.data import manual  # pylint: disable=g-import-not-at-top
        if manual.is_manual(name):  # ImageNet: TFDS's builder on archives downloaded by hand (or a clear error)
            manual.prepare(name, data_dir_, defaults.get(config, "data.manual_dir") or None)
            return
        if not defaults.get(config, "data.prepare_offline"):
            raise
        # Offline machines: build the TFDS dataset from the project's local arrays.
        prepare.ensure_prepared(name.split(":")[0].split("/")[0], data_dir_)


def _sequence_kw(config) -> dict[str, Any]:
    if kind(config) == "text":
        return {}
    return dict(sample_rate=defaults.get(config, "data.sample_rate"),
                clip_seconds=defaults.get(config, "data.clip_seconds"))


def train_iter(config, data_dir_: str, *, process_index: int | None = None, process_count: int | None = None):
    """This process's share of `config.batch_size` per step, forever; `get_state()`/`set_state()` resume exactly."""
    from jaxssl.data import audio, pipeline, text  # pylint: disable=g-import-not-at-top
    procs = dict(process_index=process_index, process_count=process_count)
    split = defaults.get(config, "data.split")
    if kind(config) == "text":
        return text.make_text_iter(config["batch_size"], defaults.get(config, "data.seq_len"), split=split,
                                   seed=config["seed"], **procs)
    if kind(config) == "audio":
        return audio.make_audio_iter(config["batch_size"], split=split, seed=config["seed"], **procs,
                                     **_sequence_kw(config))
    if host_crop(config, data_dir_):
        from jaxssl.data import encoded  # pylint: disable=g-import-not-at-top
        return encoded.make_train_iter(config["data"]["name"], split, [dict(v) for v in config["input"]["views"]],
                                       data_dir=data_dir_, global_batch_size=config["batch_size"],
                                       seed=config["seed"], worker_count=defaults.get(config, "data.worker_count"),
                                       resize=defaults.get(config, "data.resize"),
                                       skip_bad=defaults.get(config, "data.skip_bad_images"), **procs)
    return pipeline.make_train_iter(config["data"]["name"], split, data_dir=data_dir_,
                                    global_batch_size=config["batch_size"], seed=config["seed"],
                                    worker_count=defaults.get(config, "data.worker_count"), **procs)


def _padded_pass(inputs: np.ndarray, labels: np.ndarray, batch_size: int, process_index: int,
                 process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """`pipeline.make_eval_iter`'s contract for arrays in memory: this process's contiguous slice, padded."""
    n = len(inputs)
    start, stop = process_index * n // process_count, (process_index + 1) * n // process_count
    for b in range(math.ceil(math.ceil(n / process_count) / batch_size)):
        lo, hi = min(start + b * batch_size, stop), min(start + (b + 1) * batch_size, stop)
        pad = batch_size - (hi - lo)
        yield {"inputs": np.concatenate([inputs[lo:hi], np.zeros((pad, *inputs.shape[1:]), inputs.dtype)]),
               "label": np.concatenate([labels[lo:hi], np.full((pad,), -1, np.int32)]).astype(np.int32),
               "mask": np.arange(batch_size) < hi - lo}


def eval_iter(config, split: str, *, batch_size: int, data_dir_: str, process_index: int | None = None,
              process_count: int | None = None, prefetch: int = 4):
    """One deterministic pass over `split`: {input_key(config), "label" int32, "mask" bool}, `batch_size` per process.

    Padding rows (last batches only) have mask False and label -1, as `pipeline.make_eval_iter`.
    Raises ValueError for an input without labels (text), naming the fix.
    """
    from jaxssl.data import audio, pipeline  # pylint: disable=g-import-not-at-top
    if kind(config) == "text":
        raise ValueError(f"{config['data']['name']} has no labels, so no evaluator of frozen features applies; "
                         f"set config.evals to {{}} (no evaluation).")
    if process_index is None or process_count is None:
        import jax  # pylint: disable=g-import-not-at-top
        process_index, process_count = jax.process_index(), jax.process_count()
    if kind(config) == "audio":
        clips = audio.load_fsdd(split, **_sequence_kw(config))
        return _padded_pass(clips["audio"], clips["digit"], batch_size, process_index, process_count)
    workers = 0 if prefetch == 0 else defaults.get(config, "data.worker_count")
    if host_crop(config, data_dir_):
        # Shorter side to size * 256/224, centre crop to the first (global) view's size.
        from jaxssl import augment  # pylint: disable=g-import-not-at-top
        from jaxssl.data import encoded  # pylint: disable=g-import-not-at-top
        size = augment.view_size(config["input"]["views"][0])[0]
        return encoded.make_eval_iter(config["data"]["name"], split, size, data_dir=data_dir_, batch_size=batch_size,
                                      process_index=process_index, process_count=process_count, prefetch=prefetch,
                                      worker_count=workers, resize=defaults.get(config, "data.resize"),
                                      skip_bad=defaults.get(config, "data.skip_bad_images"))
    return pipeline.make_eval_iter(config["data"]["name"], split, data_dir=data_dir_, batch_size=batch_size,
                                   process_index=process_index, process_count=process_count, prefetch=prefetch,
                                   worker_count=0 if prefetch == 0 else defaults.get(config, "data.worker_count"))


def example(config) -> np.ndarray:
    """A zero input of the network's shape and dtype, batch 2: what `Method.net.init` is given."""
    if kind(config) == "text":
        return np.zeros((2, defaults.get(config, "data.seq_len")), np.int32)
    if kind(config) == "audio":
        kw = _sequence_kw(config)
        return np.zeros((2, int(kw["clip_seconds"] * kw["sample_rate"])), np.float32)
    from jaxssl import augment  # pylint: disable=g-import-not-at-top
    return np.zeros((2, *augment.view_size(config["input"]["views"][0]), 3), np.float32)
