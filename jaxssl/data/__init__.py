"""Data: offline TFDS preparation, random-access sources, grain pipelines, and the input of a run.

    jaxssl.data.ensure_prepared("cifar10", data_dir)      # offline, from npz arrays
    it = jaxssl.data.make_train_iter("cifar10", "train", data_dir=data_dir,
                                     global_batch_size=256, seed=0)
    batch = next(it)  # {"image": uint8 (256, 32, 32, 3), "label": int32 (256,)}

`jaxssl.data.inputs` picks the input of a run from its config (TFDS images, text, speech).
Nothing here imports TensorFlow. The module `jaxssl.data.prepare` (the CLI
`python -m jaxssl.data.prepare`) holds `prepare.prepare`; no function here shadows a module.
"""

from jaxssl.data import inputs
from jaxssl.data.pipeline import make_eval_iter, make_train_iter
from jaxssl.data.prepare import ensure_prepared, find_source_dir
from jaxssl.data.sources import get_source

__all__ = [
    "inputs",
    "make_train_iter",
    "make_eval_iter",
    "get_source",
    "ensure_prepared",
    "find_source_dir",
]
