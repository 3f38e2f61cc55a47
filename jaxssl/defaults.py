"""The config keys the trainer reads and the defaults of the optional ones: their one definition.

Code reads an optional key through `get(config, "dotted.key")`, never with a default of its own
(`config.get("accum_steps", 1)`), and `jaxssl/train/validate.py` builds its key lists and type checks
from these tables, so the value a run uses and the value the checks assume cannot drift apart.
Each entry is `Key(default, type)`: `type` is an annotation string (as validate.py reads it) and
`default` is `REQUIRED` where the config must set the key.

Top level (`TOP_LEVEL`), besides the required run description:
  dtype ("float32"): compute dtype of the model ("float32" or "bfloat16").
  progress_bar (True): a tqdm bar on process 0.
  nonfinite ("raise"): stop at the first NaN/Inf; "skip": drop such updates and go on.
  nonfinite_patience (10): with "skip", raise after this many non-finite steps in a row.
  accum_steps (1): micro-batches per step, GradCache-style (jaxssl/train/accumulate.py).
  remat ("none"): rematerialise each Transformer block of a ViT / transformer backbone (and of the MAE
    decoder / I-JEPA predictor, which follow the backbone's policy) in the backward
    pass under a `jax.checkpoint` policy: "block" (keep only block inputs), "dots_saveable" (keep
    matmul outputs), "dots_with_no_batch_dims_saveable" (keep weight-matmul outputs); same loss and
    gradients, less activation memory (jaxssl/models/transformer.py `REMAT_POLICIES`).
  mesh ({fsdp: 1, fsdp_min_size: FSDP_MIN_SIZE}): the device layout (`MESH`, jaxssl/train/sharding.py).
  init_from (None): a safetensors file of PyTorch weights (timm or torchvision layout, detected, or
    named as "timm:PATH" / "torchvision:PATH") that the backbone starts from instead of its random
    init; heads stay fresh (jaxssl/models/pytorch_layout.py). A resumed run ignores it.
`config.mesh` (`MESH`): fsdp > 1 splits every state leaf of at least fsdp_min_size elements over a
second mesh axis (FSDP); smaller leaves stay replicated.
`config.data` (`DATA`): the TFDS dataset `name` (required) and `split`, `data_dir` ("" or None:
$TFDS_DATA_DIR, else ~/tensorflow_datasets), `prepare_offline` (download and convert before
training, on process 0), `worker_count` (grain host workers; 0: in the main process), `skip_bad_images`
(an image folder's unreadable files are skipped and counted instead of raising), `resize` (the host
crops' resampling of such datasets: "opencv" or "pil", jaxssl/data/resize.py), `manual_dir` (the
archives of imagenet2012, jaxssl/data/manual.py), `prefetch` (batches on the devices at once, counting
the one in use: 2 places the next batch while the current step runs, 1 places each batch when its
step starts; jaxssl/data/prefetch.py); the sequence
inputs also read `seq_len` (tokens per text window, jaxssl/data/text.py), `sample_rate` and
`clip_seconds` (FSDD audio clips, jaxssl/data/audio.py).

Works on an `ml_collections.ConfigDict` and on the plain dict of a workdir's config.json.
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple


class _Required:
    """The default of a key the config must set."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Key(NamedTuple):
    """One config key: its default (`REQUIRED`: none) and its type as an annotation string."""
    default: Any
    type: str


# Leaves with fewer elements stay replicated under FSDP: biases, norms and small kernels cost more
# in collectives than they save in memory (jaxssl/train/sharding.py reads this).
FSDP_MIN_SIZE = 2**16

MESH = {"fsdp": Key(1, "int"), "fsdp_min_size": Key(FSDP_MIN_SIZE, "int")}

DATA = {
    "name": Key(REQUIRED, "str"), "split": Key("train", "str"), "data_dir": Key("", "str | None"),
    "prepare_offline": Key(True, "bool"), "worker_count": Key(0, "int"),
    # Encoded-image datasets (JPEG/PNG of many sizes, image folders; jaxssl/data/encoded.py): leave out
    # unreadable files of a folder (counted in the log) instead of stopping at the first.
    "skip_bad_images": Key(False, "bool"),
    # Their host crops' decode + resampling (jaxssl/data/resize.py): "opencv" (simplejpeg decode, cv2
    # INTER_AREA from a 2x shrink, else INTER_LINEAR: 2.1x torchvision's images/s for 2 x 224 views,
    # 0.4-2.4 grey levels from its pixels on average, benchmarks/RESULTS.md section 5) or "pil" (Pillow,
    # torchvision's RandomResizedCrop pixels exactly).
    "resize": Key("opencv", "str"),
    # imagenet2012: the folder holding ILSVRC2012_img_{train,val}.tar ("": <data_dir>/downloads/manual).
    "manual_dir": Key("", "str | None"),
    # Double-buffered device placement (jaxssl/data/prefetch.py): the next batch is transferred while
    # the current step runs.
    "prefetch": Key(2, "int"),
    # Sequence inputs (configs/data2vec_text_shakespeare.py, configs/data2vec_speech_fsdd.py):
    # 512 tokens (the paper's RoBERTa length), 1 s clips at 16 kHz (jaxssl.data.audio.load_fsdd).
    "seq_len": Key(512, "int"), "sample_rate": Key(16_000, "int"), "clip_seconds": Key(1.0, "float"),
}

TOP_LEVEL = {
    "seed": Key(REQUIRED, "int"), "method": Key(REQUIRED, "str"), "method_kw": Key(REQUIRED, "dict"),
    "model": Key(REQUIRED, "dict"), "data": Key(REQUIRED, "dict"), "input": Key(REQUIRED, "dict"),
    "batch_size": Key(REQUIRED, "int"), "total_steps": Key(REQUIRED, "int"), "optimizer": Key(REQUIRED, "dict"),
    "log_steps": Key(REQUIRED, "int"), "ckpt_steps": Key(REQUIRED, "int"), "keep_ckpts": Key(REQUIRED, "int"),
    "evals": Key(REQUIRED, "dict"),
    "dtype": Key("float32", "str"), "progress_bar": Key(True, "bool"), "nonfinite": Key("raise", "str"),
    "nonfinite_patience": Key(10, "int"), "accum_steps": Key(1, "int"),
    "mesh": Key({k: v.default for k, v in MESH.items()}, "dict | None"),
    "init_from": Key(None, "str | None"),
    "remat": Key("none", "str"),
}

# The tables by the dotted prefix of their keys ("" = top level).
TABLES = {"": TOP_LEVEL, "data": DATA, "mesh": MESH}


def required(table: dict[str, Key]) -> tuple[str, ...]:
    """The keys of `table` without a default, in table order."""
    return tuple(k for k, v in table.items() if v.default is REQUIRED)


def optional(table: dict[str, Key]) -> tuple[str, ...]:
    """The keys of `table` with a default, in table order."""
    return tuple(k for k, v in table.items() if v.default is not REQUIRED)


def default(key: str) -> Any:
    """The default of "dotted.key" (a fresh copy where it is a dict); KeyError if it has none."""
    prefix, _, name = key.rpartition(".")
    entry = TABLES.get(prefix, {}).get(name)
    if entry is None:
        known = sorted(f"{p}.{k}" if p else k for p, t in TABLES.items() for k in optional(t))
        raise KeyError(f"config.{key} is not set, and jaxssl/defaults.py has no default for it; "
                       f"keys with defaults: {known}.")
    if entry.default is REQUIRED:
        raise KeyError(f"config.{key} is required and has no default: set it in the config "
                       f"(start from a file in configs/).")
    return copy.deepcopy(entry.default)


def get(config, key: str) -> Any:
    """`config`'s value at "dotted.key" ("data.split", "mesh.fsdp"), else the key's default.

    A missing key, or a parent that is missing or None (`config.mesh = None`), takes the default
    from the tables above; a key without one raises KeyError naming it. `config` is a ConfigDict or
    a plain dict (a workdir's config.json).
    """
    node = config
    for part in key.split("."):
        if node is None or not hasattr(node, "keys") or part not in node:
            return default(key)
        node = node[part]
    return node
