"""orbax checkpoints of the TrainState plus the data-iterator state (exact resume), verified.

Each step directory holds three items: "state" (the TrainState pytree, `StandardSave`), "data"
(the grain iterator state, JSON) and "meta" (JSON: a checksum of every state leaf, plus
counters the trainer wants back, e.g. the number of skipped non-finite steps).

What can go wrong, and what this module does about it:
- A process killed during a save. orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames
  it when complete, so a half-written step is never listed; the next `Checkpointer` on the
  directory deletes such leftovers (`cleanup_tmp_directories`).
- A bad state. `save` refuses a state holding NaN/Inf (`NonFiniteStateError`), so the last good
  checkpoint is never replaced by a bad one.
- A damaged file. orbax reports a truncated or missing file as an error, but reads a flipped
  byte as silently wrong numbers; so each save records a checksum of every leaf (computed on
  device, see `summarize`) and `restore` recomputes it. A step that fails to load, fails its
  checksum or holds NaN/Inf is moved to `<directory>_corrupt/` with a warning and the next older
  step is tried. Nothing is deleted. Moving it aside matters: orbax never saves a step at or
  below the newest one present, and keep-N would keep the bad newer step while deleting good
  older ones.
- keep-N (`max_to_keep`). orbax deletes an old step only after a newer save has been committed,
  and only verified-finite states are saved, so the newest good checkpoint is never deleted.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class NonFiniteStateError(RuntimeError):
    """Raised instead of writing a checkpoint whose state holds NaN or Inf."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint that loads but does not hold what was saved (checksum) or holds NaN/Inf."""


class SaveFailedError(RuntimeError):
    """An asynchronous save failed (e.g. disk full); the message names the step, the cause and the newest good one."""


class Restored(NamedTuple):
    """What `Checkpointer.restore` returns."""

    state: Any
    data: dict | None  # the data-iterator state, or None if it was not saved
    step: int
    meta: dict  # the `meta` given to `save` (without the checksums); {} if none


def _as_uint32(x: jax.Array) -> jax.Array:
    """The bits of `x` as uint32 values (8-byte types give two words per element)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if x.dtype.itemsize >= 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[x.dtype.itemsize]).astype(jnp.uint32)


@jax.jit
def _summarize(leaves):
    def one(x):
        finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
        bits = _as_uint32(x).ravel()
        # sum_i bits_i * (2i + 1) mod 2^32: integer sums are exact in any order (any sharding), and
        # odd position weights make every single flipped bit, and most swaps, change the sum.
        weights = jnp.arange(bits.size, dtype=jnp.uint32) * 2 + 1
        return finite, jnp.sum(bits * weights, dtype=jnp.uint32)
    return [one(x) for x in leaves]


def summarize(tree) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(leaf paths, finite flags, uint32 checksums) of every array leaf, from one jitted call."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    if not flat:
        return paths, np.zeros(0, bool), np.zeros(0, np.uint32)
    out = jax.device_get(_summarize([jnp.asarray(x) for _, x in flat]))
    return paths, np.asarray([f for f, _ in out], bool), np.asarray([c for _, c in out], np.uint32)


def nonfinite_leaves(tree) -> list[str]:
    """Paths of floating-point leaves of `tree` that hold a NaN or an Inf."""
    paths, finite, _ = summarize(tree)
    return [p for p, ok in zip(paths, finite) if not ok]


# What a step cannot be used without, by item.
_NEEDED = {"data": "resuming from it would silently restart the data order",
           "meta": "its state cannot be verified against the checksums saved with it"}


def _saved_items(step_dir: str) -> set[str] | None:
    """The items a step directory was saved with (orbax's `_CHECKPOINT_METADATA`), None if unreadable."""
    try:
        with open(os.path.join(step_dir, "_CHECKPOINT_METADATA")) as f:
            return set(json.load(f)["item_handlers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reason(error: BaseException) -> str:
    """One line for a failed read: orbax/tensorstore errors run to thousands of characters."""
    text = str(error).splitlines()[0] if str(error) else ""
    text = text.split(" See full TensorStore details")[0]  # what follows is a dump of the spec
    return f"{type(error).__name__}: {text[:300]}"


def _listing(paths: list[str]) -> str:
    return ", ".join(paths[:5]) + (f" (and {len(paths) - 5} more)" if len(paths) > 5 else "")


class _OrbaxErrorsInOneLine(logging.Filter):
    """orbax logs a failed background write with a full traceback from each thread that sees it
    (hundreds of lines); jaxssl reports the cause itself (SaveFailedError, the fallback warnings),
    so each such record keeps one line: its message and the exception's first line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "orbax" in (record.pathname or "") and str(record.msg).startswith("Given directory is read only"):
            return False  # a jaxssl reader opens checkpoints read-only on purpose
        if record.exc_info and "orbax" in (record.pathname or ""):
            error = record.exc_info[1]
            first = str(error).splitlines()[0][:300] if error is not None and str(error) else ""
            record.msg, record.args = f"{record.getMessage()} [{type(error).__name__}: {first}]", ()
            record.exc_info, record.exc_text = None, None
        return True


_ONE_LINE = _OrbaxErrorsInOneLine()


class Checkpointer:
    """Thin wrapper of `ocp.CheckpointManager` with the three items jaxssl saves."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False):
        """`read_only`: a reader beside a possibly running trainer (jaxssl.evaluate.restore): it
        creates, deletes and moves nothing, so a save in flight and unusable steps stay as they are."""
        logging.getLogger("absl").addFilter(_ONE_LINE)  # orbax logs through absl; adding twice is a no-op
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(max_to_keep=None if read_only else max_to_keep, create=not read_only,
                                               enable_async_checkpointing=async_save and not read_only,
                                               cleanup_tmp_directories=not read_only, read_only=read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))
        self._pending: int | None = None  # the step of the newest save not yet known to have succeeded
        self._reported = False  # a SaveFailedError was raised: close() does not raise it again

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict | None = None, *, meta: dict | None = None,
             force: bool = False) -> bool:
        """Start an async save of `state`, the data iterator state and `meta` (JSON) at `step`.

        Raises NonFiniteStateError (and writes nothing) if `state` holds NaN or Inf, and
        SaveFailedError if the previous save failed (it is waited for first).
        """
        self.check_saves(wait=True)
        paths, finite, checksums = summarize(state)
        bad = [p for p, ok in zip(paths, finite) if not ok]
        if bad:
            raise NonFiniteStateError(
                f"Refusing to checkpoint step {step}: non-finite values in {_listing(bad)}. "
                f"The last good checkpoint in {self.directory} is kept.")
        meta = {**(meta or {}), "checksums": dict(zip(paths, map(int, checksums)))}
        args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_state is not None:
            args["data"] = ocp.args.JsonSave(data_state)
        saved = self.manager.save(step, args=ocp.args.Composite(**args), force=force)
        if saved:
            self._pending = step
        return saved

    def check_saves(self, *, wait: bool = False, now: int | None = None) -> None:
        """Raise SaveFailedError if the newest asynchronous save has failed.

        Cheap and non-blocking unless `wait` (the trainer calls it every step, so a failure, e.g. a
        full disk, stops the run at once rather than at the next save). `now`: the current step,
        for the message.
        """
        if self._pending is None or (not wait and self.manager.is_saving_in_progress()):
            return
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001  (whatever stopped the write is the cause reported)
            self._reported = True
            raise SaveFailedError(self._failure(step, e, now)) from None

    def _failure(self, step: int, error: BaseException, now: int | None) -> str:
        cause = _reason(error)
        good = sorted(int(d) for d in os.listdir(self.directory) if d.isdigit() and int(d) != step) \
            if os.path.isdir(self.directory) else []
        newest = (f"the newest good checkpoint is step {good[-1]}, which a rerun resumes from" if good else
                  "there is no good checkpoint yet, so a rerun starts afresh")
        when = f" (found at step {now})" if now is not None else ""
        return (f"Saving the checkpoint of step {step} in {self.directory} failed{when}: {cause}. Training stopped; "
                f"{newest}. Fix the cause (e.g. free disk space) and rerun the same command.")

    def _restore_step(self, step: int, abstract_state, partial: bool) -> Restored:
        """Load and verify one step; raises on any problem."""
        step_dir = os.path.join(self.directory, str(step))
        if partial:  # only these subtrees are read: e.g. the weights, never the optimiser state
            items = {"state": ocp.args.PyTreeRestore(
                item=abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
                partial_restore=True)}
        else:
            items = {"state": ocp.args.StandardRestore(abstract_state)}
        listed = _saved_items(step_dir)
        for name in ("data", "meta") if not partial else ("meta",):
            if os.path.isdir(os.path.join(step_dir, name)):
                items[name] = ocp.args.JsonRestore()
            elif listed is None or name in listed:  # an item the step was saved with is gone
                raise CorruptCheckpointError(f"its {name}/ item is missing (the step lists it), so {_NEEDED[name]}")
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        meta = dict(restored.get("meta") or {})
        saved = meta.pop("checksums", None)
        paths, finite, checksums = summarize(restored.state)
        if partial:  # "['params']['conv']" of the dict read here is ".params['conv']" of the saved TrainState
            paths = [re.sub(r"^\['(\w+)'\]", r".\1", p) for p in paths]
        bad = [p for p, ok in zip(paths, finite) if not ok]
        if bad:
            raise CorruptCheckpointError(f"non-finite values in {_listing(bad)}")
        if saved is None:  # a meta item without checksums: only ever written by a test or by hand
            log.warning("Checkpoint at step %d has no checksums; not verified.", step)
        else:
            wrong = [p for p, c in zip(paths, checksums) if saved.get(p) != int(c)]
            if wrong or (not partial and set(saved) != set(paths)):
                raise CorruptCheckpointError(
                    f"checksum mismatch in {_listing(wrong or sorted(set(saved) ^ set(paths)))}: the files "
                    f"do not hold what was saved")
        return Restored(restored.state, restored.get("data"), step, meta)

    def _set_aside(self, steps: list[int]) -> None:
        """Move unusable step directories to `<directory>_corrupt/` (kept for inspection)."""
        if jax.process_index() == 0:
            for step in steps:
                dest = os.path.join(f"{self.directory}_corrupt", str(step))
                n = 1
                while os.path.exists(dest):
                    dest, n = os.path.join(f"{self.directory}_corrupt", f"{step}.{n}"), n + 1
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.move(os.path.join(self.directory, str(step)), dest)
                log.warning("Moved the unusable checkpoint of step %d to %s.", step, dest)
        multihost_utils.sync_global_devices("jaxssl:checkpoints_set_aside")
        self.manager.reload()

    def restore(self, abstract_state, *, step: int | None = None, partial: bool = False) -> Restored | None:
        """Restore the newest good checkpoint (or exactly `step`), or return None if there is none.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (with shardings) of the state, or
        with `partial` a dict of some of its fields (`{"params": ..., "model_state": ...}`): only
        those are read, and verified against their checksums. Newer steps that cannot be used are
        skipped with a warning, and set aside unless `read_only` (see the module docstring).
        Raises RuntimeError, moving nothing, when no step can be used (e.g. the checkpoints were
        written by a different model), or when the given `step` is missing or unusable.
        """
        steps = sorted(self.all_steps(), reverse=True)
        if step is not None:
            if step not in steps:
                raise RuntimeError(f"No checkpoint for step {step} in {self.directory}; available steps: "
                                   f"{sorted(steps)}.")
            steps = [step]
        unusable, errors = [], []
        for i, step in enumerate(steps):
            try:
                restored = self._restore_step(step, abstract_state, partial)
            except Exception as e:  # noqa: BLE001  (any failure to read means this step is unusable)
                older = steps[i + 1:]
                reason = _reason(e)
                log.warning("Checkpoint at step %d in %s cannot be used (%s); %s", step, self.directory, reason,
                            f"falling back to step {older[0]}." if older else "no older checkpoint is left.")
                unusable.append(step)
                errors.append(f"step {step}: {reason}")
                continue
            if unusable and not self.read_only:
                self._set_aside(unusable)
            return restored
        if steps:
            raise RuntimeError(
                f"None of the checkpoints {sorted(steps)} in {self.directory} can be used ({'; '.join(errors)}). "
                f"If the model, method or optimiser changed since they were written, use a new --workdir; "
                f"otherwise move the directory away to start afresh (nothing has been deleted).")
        return None

    def wait(self) -> None:
        """Block until the newest save is written; SaveFailedError if it failed."""
        self.check_saves(wait=True)

    def close(self) -> None:
        """Wait for the last save (SaveFailedError if it failed and was not reported yet), then close."""
        try:
            if not self._reported:
                self.check_saves(wait=True)
        finally:
            try:
                self.manager.close()
            except Exception:  # noqa: BLE001
                if not self._reported:  # orbax re-raises a failed save on every wait: it was reported once
                    raise


def abstract(tree):
    """ShapeDtypeStructs (with shardings) of a concrete pytree, the target of a restore."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
