"""Training: state, optimiser, sharding, the jitted step, checkpoints and the trainer."""
from jaxssl.train.loop import train
from jaxssl.train.state import TrainState
from jaxssl.train.step import init_state, make_step_fn, make_train_step

__all__ = ["TrainState", "init_state", "make_step_fn", "make_train_step", "train"]
