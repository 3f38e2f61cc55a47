"""Device mesh, state shardings (replicated or FSDP) and the move from process-local batches to global arrays.

Two layouts, chosen by `config.mesh.fsdp` (default 1):
- fsdp == 1: a 1-D mesh ("data",) over all devices of all processes; the batch is split over
  "data" and the whole TrainState is replicated (plain data parallelism).
- fsdp > 1: a 2-D mesh ("data", "fsdp") of shape (devices // fsdp, fsdp). The batch is split over
  both axes (every device still holds a distinct slice of it), and each large state leaf
  (parameters, their optimiser moments, the EMA teacher) is split along one of its dimensions over
  "fsdp" (ZeRO-3 / FSDP, Rajbhandari et al., 2020, arXiv:1910.02054). XLA gathers the weights where
  a layer needs them and reduce-scatters the gradients, so the maths (and the result) is that of
  the replicated layout while each device stores only ~1/fsdp of the state.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxssl import defaults

DATA = "data"
FSDP = "fsdp"
# Leaves with fewer elements stay replicated under FSDP (the default of config.mesh.fsdp_min_size).
FSDP_MIN_SIZE = defaults.FSDP_MIN_SIZE


def make_mesh(devices=None, *, fsdp: int = 1) -> Mesh:
    """A mesh over all (global) devices: ("data",) if fsdp == 1, else ("data", "fsdp") of shape (n // fsdp, fsdp).

    With several processes `jax.devices()` lists every process's devices, so the mesh is global.
    """
    devices = jax.devices() if devices is None else devices
    if fsdp == 1:
        return Mesh(np.asarray(devices), (DATA,))
    if fsdp < 1 or len(devices) % fsdp:
        raise ValueError(f"config.mesh.fsdp ({fsdp}) must be >= 1 and divide the number of devices "
                         f"({len(devices)}); e.g. set it to {math.gcd(len(devices), max(fsdp, 1))}.")
    # Devices of one process are consecutive in jax.devices(), so with fsdp <= local devices the
    # weight gathers stay inside a host and only the gradient reduction crosses hosts.
    return Mesh(np.asarray(devices).reshape(len(devices) // fsdp, fsdp), (DATA, FSDP))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes the batch is split over: every axis of ours (each device gets distinct examples)."""
    return tuple(a for a in mesh.axis_names if a in (DATA, FSDP))


def batch_shards(mesh: Mesh) -> int:
    """Into how many slices the batch is cut (the number of devices of the mesh's batch axes)."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the batch axes ("data", and "fsdp" if present), other axes whole."""
    axes = batch_axes(mesh)
    return NamedSharding(mesh, P(axes[0] if len(axes) == 1 else axes))


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """PartitionSpec of one leaf: its largest dimension divisible by `n` over "fsdp", or P() (replicated).

    Replicated when n == 1, the leaf has fewer than `min_size` elements, or no dimension divides.
    Ties go to the last such dimension (the output features of a kernel).
    """
    if n <= 1 or math.prod(shape) < min_size:
        return P()
    dims = [i for i, d in enumerate(shape) if d % n == 0]
    if not dims:
        return P()
    best = max(dims, key=lambda i: (shape[i], i))
    return P(*(FSDP if i == best else None for i in range(len(shape))))


def state_shardings(tree, mesh: Mesh, min_size: int = FSDP_MIN_SIZE):
    """Per-leaf NamedShardings of a state pytree (arrays or ShapeDtypeStructs) for `mesh`.

    Without an "fsdp" axis every leaf is replicated. With one, leaves of at least `min_size`
    elements are split over "fsdp" along their largest divisible dimension (`fsdp_spec`). The rule
    depends on the shape only, so the parameters, their optimiser moments and the EMA teacher of a
    parameter get the same layout, and a restored checkpoint gets the layout it was saved with.
    """
    n = mesh.shape[FSDP] if FSDP in mesh.axis_names else 1
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), n, min_size)), tree)


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """Fail early, with the fix, when the batch cannot be split evenly over the devices."""
    n = batch_shards(mesh)
    if global_batch_size % n:
        raise ValueError(f"Batch size ({global_batch_size}) must be divisible by the number of devices ({n}) on "
                         f"the mesh's batch axes {batch_axes(mesh)}; set --config.batch_size to a multiple of {n}.")
    if global_batch_size % jax.process_count():
        raise ValueError(f"Batch size ({global_batch_size}) must be divisible by the number of processes "
                         f"({jax.process_count()}).")


def to_global(batch, mesh: Mesh):
    """Process-local numpy batch (leading axis = local batch) -> global arrays sharded over the batch axes.

    Process i's rows become rows [i * B_local, (i + 1) * B_local) of the global batch (its devices
    are consecutive in the mesh), so the global batch is the processes' batches concatenated in
    process order.
    """
    sharding = data_sharded(mesh)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
