"""Training: state, optimiser, sharding, the jitted step, checkpoints and the trainer.

`jaxssl.train.train` (the trainer, `jaxssl.train.loop.train`) is imported on first use: the
trainer sits above the evaluators, which themselves use the low-level modules of this package
(`sharding`), so importing it eagerly here would make the import graph cyclic.
"""
from jaxssl.train.state import TrainState
from jaxssl.train.step import init_state, make_step_fn, make_train_step

__all__ = ["TrainState", "init_state", "make_step_fn", "make_train_step", "train"]


def __getattr__(name):
    if name == "train":
        from jaxssl.train.loop import train  # pylint: disable=g-import-not-at-top
        return train
    raise AttributeError(f"module 'jaxssl.train' has no attribute {name!r}")
