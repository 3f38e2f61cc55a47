"""Multi-process (multi-host) start-up: `jax.distributed.initialize` from flags, environment or cluster.

Call `initialize(...)` once per process, before anything touches a JAX device (`jaxssl.main`
does). Afterwards `jax.devices()` lists the devices of every process, `shd.make_mesh()` spans them
all, each process reads its own slice of the data (`jaxssl.data.make_train_iter` uses
`jax.process_index()`), `shd.to_global` joins the process-local batches into global arrays,
metrics come out of the step replicated (already reduced over all processes) and every process
takes part in writing and reading orbax checkpoints (shared filesystem).

Where the settings come from, first match wins:
1. explicit arguments (the `--coordinator_address`, `--num_processes`, `--process_id` flags);
2. the environment: JAXSSL_COORDINATOR ("host:port"), JAXSSL_NUM_PROCESSES, JAXSSL_PROCESS_ID;
3. a cluster JAX detects itself (Cloud TPU pod, SLURM, Open MPI, ...) with more than one process:
   plain `jax.distributed.initialize()`, which reads the cluster's own variables;
4. otherwise one process, and nothing is initialised.
`mode="off"` (JAXSSL_DISTRIBUTED=off) skips all of it; `mode="on"` always calls
`jax.distributed.initialize` (with whatever settings were found).

On CPU, cross-process collectives need an implementation: gloo (TCP) is selected unless the user
chose another (jax 0.10 already defaults to gloo; older versions had none and would fail at the
first cross-process all-reduce).
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, NamedTuple

import jax

log = logging.getLogger(__name__)

ENV_COORDINATOR = "JAXSSL_COORDINATOR"
ENV_NUM_PROCESSES = "JAXSSL_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXSSL_PROCESS_ID"
ENV_MODE = "JAXSSL_DISTRIBUTED"
MODES = ("auto", "on", "off")


class Settings(NamedTuple):
    """What `jax.distributed.initialize` is called with; None fields are left to JAX's cluster detection."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None


def _int(value, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}.") from None


def _cluster_processes() -> int:
    """Number of processes of a cluster JAX auto-detects (TPU pod, SLURM, Open MPI), or 1 if none."""
    try:  # jax's own detection (private module; any failure means "no cluster").
        from jax._src import clusters  # pylint: disable=g-import-not-at-top
        for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
            if not env.opt_in_only_method and env.is_env_present():
                return int(env.get_process_count())
    except Exception:  # noqa: BLE001
        pass
    return 1


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, *, mode: str | None = None,
            environ: Mapping[str, str] | None = None) -> Settings | None:
    """The settings to initialise with, or None for a single process (see the module docstring).

    Raises ValueError, naming the flag and the variable, for incomplete or inconsistent settings.
    """
    environ = os.environ if environ is None else environ
    mode = (mode or environ.get(ENV_MODE) or "auto").lower()
    if mode not in MODES:
        raise ValueError(f"Distributed mode {mode!r} (--distributed / ${ENV_MODE}) must be one of {MODES}.")
    if mode == "off":
        return None
    settings = Settings(coordinator_address or environ.get(ENV_COORDINATOR) or None,
                        _int(num_processes if num_processes is not None else environ.get(ENV_NUM_PROCESSES),
                             f"--num_processes / ${ENV_NUM_PROCESSES}"),
                        _int(process_id if process_id is not None else environ.get(ENV_PROCESS_ID),
                             f"--process_id / ${ENV_PROCESS_ID}"))
    if settings.num_processes is not None and settings.num_processes < 1:
        raise ValueError(f"--num_processes / ${ENV_NUM_PROCESSES} must be >= 1, got {settings.num_processes}.")
    if settings.num_processes is not None and settings.process_id is not None and not (
            0 <= settings.process_id < settings.num_processes):
        raise ValueError(f"--process_id / ${ENV_PROCESS_ID} ({settings.process_id}) must be in "
                         f"[0, {settings.num_processes}) (--num_processes / ${ENV_NUM_PROCESSES}).")
    explicit = settings.coordinator_address is not None
    if not explicit and (settings.num_processes or 1) > 1 and _cluster_processes() == 1:
        raise ValueError(f"--num_processes={settings.num_processes} needs a coordinator: pass "
                         f"--coordinator_address=HOST:PORT (or ${ENV_COORDINATOR}), the same on every process, "
                         f"HOST being the machine of process 0.")
    if mode == "on" or explicit or _cluster_processes() > 1:
        return settings
    return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, mode: str | None = None,
               initialization_timeout: int = 300) -> bool:
    """Join the multi-process job described by the arguments/environment/cluster; True if one was joined.

    Must run before any JAX computation or device query in this process. A single process
    (nothing configured, no cluster detected) returns False and changes nothing.
    """
    settings = resolve(coordinator_address, num_processes, process_id, mode=mode)
    if settings is None:
        return False
    if jax.distributed.is_initialized():
        log.info("jax.distributed is already initialised (process %d of %d).", jax.process_index(),
                 jax.process_count())
        return True
    if jax.config.jax_cpu_collectives_implementation is None:
        # Cross-process all-reduces on CPU need a collectives library; gloo works over plain TCP.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                                   num_processes=settings.num_processes, process_id=settings.process_id,
                                   initialization_timeout=initialization_timeout)
    except RuntimeError as e:
        if "before any JAX" in str(e) or "backend" in str(e).lower():
            raise RuntimeError(f"{e}\nCall jaxssl.train.distributed.initialize() at the very start of the "
                               f"program, before jax.devices() or any array is created.") from e
        raise
    log.info("Joined a %d-process job as process %d (coordinator %s); %d local / %d global devices.",
             jax.process_count(), jax.process_index(), settings.coordinator_address or "auto-detected",
             jax.local_device_count(), jax.device_count())
    return True
