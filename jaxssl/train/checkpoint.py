"""orbax checkpoints of the TrainState plus the data-iterator state (exact resume).

Each step directory holds two items: "state" (the TrainState pytree, `StandardSave`) and
"data" (the grain iterator state, JSON). Saves are asynchronous and atomic (orbax writes to a
temporary directory and renames it when complete), keep the newest `max_to_keep`, and refuse
a state holding NaN/Inf so that the last good checkpoint is never replaced by a bad one.
Restore walks back from the newest step when one fails to load (a truncated or corrupted
write), with a warning, instead of losing the run.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class NonFiniteStateError(RuntimeError):
    """Raised instead of writing a checkpoint whose state holds NaN or Inf."""


def nonfinite_leaves(tree) -> list[str]:
    """Paths of floating-point leaves of `tree` that hold a NaN or an Inf."""
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            if not bool(jnp.all(jnp.isfinite(leaf))):
                bad.append(jax.tree_util.keystr(path))
    return bad


class Checkpointer:
    """Thin wrapper of `ocp.CheckpointManager` with the two items jaxssl saves."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict | None = None, *, force: bool = False) -> bool:
        """Start an async save of `state` (and the data iterator state) at `step`."""
        bad = nonfinite_leaves(state)
        if bad:
            raise NonFiniteStateError(
                f"Refusing to checkpoint step {step}: non-finite values in {', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}. The last good checkpoint in {self.directory} is kept.")
        args = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            args["data"] = ocp.args.JsonSave(data_state)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore(self, abstract_state) -> tuple[Any, dict | None, int] | None:
        """Restore the newest readable checkpoint as (state, data_state, step), or None if there is none.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (with shardings) of the state.
        """
        steps = sorted(self.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))
                data_state = None
                if os.path.isdir(os.path.join(self.directory, str(step), "data")):
                    data_state = self.manager.restore(step, args=ocp.args.Composite(
                        data=ocp.args.JsonRestore())).data
            except Exception as e:  # noqa: BLE001  (any failure to read means this step is unusable)
                older = steps[i + 1:]
                log.warning("Checkpoint at step %d in %s cannot be restored (%s: %s); %s", step, self.directory,
                            type(e).__name__, str(e)[:300],
                            f"falling back to step {older[0]}." if older else "no older checkpoint is left.")
                continue
            state = restored.state
            bad = nonfinite_leaves(state)
            if bad:
                log.warning("Checkpoint at step %d holds non-finite values (%s); skipping it.", step, bad[:3])
                continue
            return state, data_state, step
        if steps:
            raise RuntimeError(f"None of the checkpoints {steps} in {self.directory} can be restored; move the "
                               f"directory away to start afresh (nothing has been deleted).")
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract(tree):
    """ShapeDtypeStructs (with shardings) of a concrete pytree, the target of a restore."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
