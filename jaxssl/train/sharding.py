"""Device mesh and the move from process-local numpy batches to global jax.Arrays."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (global) devices with the batch axis named "data"."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis, other axes whole."""
    return NamedSharding(mesh, P(DATA))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """Fail early, with the fix, when the batch cannot be split evenly over the devices."""
    n = mesh.shape[DATA]
    if global_batch_size % n:
        raise ValueError(f"Batch size ({global_batch_size}) must be divisible by the number of devices ({n}) on "
                         f"the mesh's '{DATA}' axis; set --config.batch_size to a multiple of {n}.")
    if global_batch_size % jax.process_count():
        raise ValueError(f"Batch size ({global_batch_size}) must be divisible by the number of processes "
                         f"({jax.process_count()}).")


def to_global(batch, mesh: Mesh):
    """Process-local numpy batch (leading axis = local batch) -> global arrays sharded over "data"."""
    sharding = data_sharded(mesh)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
