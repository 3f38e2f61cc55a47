"""Data: offline TFDS preparation, random-access sources and grain pipelines.

    jaxssl.data.ensure_prepared("cifar10", data_dir)      # offline, from npz arrays
    it = jaxssl.data.make_train_iter("cifar10", "train", data_dir=data_dir,
                                     global_batch_size=256, seed=0)
    batch = next(it)  # {"image": uint8 (256, 32, 32, 3), "label": int32 (256,)}

Nothing here imports TensorFlow. ``jaxssl.data.prepare`` is the function; the
module of the same name (the CLI ``python -m jaxssl.data.prepare``) is reached
with ``importlib.import_module("jaxssl.data.prepare")``.
"""

from jaxssl.data.pipeline import make_eval_iter, make_train_iter
from jaxssl.data.prepare import ensure_prepared, find_source_dir, prepare
from jaxssl.data.sources import get_source

__all__ = [
    "make_train_iter",
    "make_eval_iter",
    "get_source",
    "ensure_prepared",
    "prepare",
    "find_source_dir",
]
