r"""Command-line entry point: `python -m jaxssl.main --config configs/<method>_<data>.py --workdir DIR`.

Kept short on purpose: everything happens in `jaxssl.train.loop.train(config, workdir)`, for image,
text and speech configs alike.
Override any config field with `--config.<key>=<value>`; unknown keys are rejected.

Several processes (hosts): start the same command on each with `--coordinator_address=HOST0:PORT
--num_processes=N --process_id=I` (or JAXSSL_COORDINATOR / JAXSSL_NUM_PROCESSES / JAXSSL_PROCESS_ID);
on Cloud TPU pods and SLURM nothing is needed (JAX reads the cluster). See jaxssl/train/distributed.py.
"""
import importlib.util
import logging
import os
import re
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

# Make `configs/` importable when running from the repository root.
sys.path.insert(0, os.getcwd())

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process: HOST:PORT of process 0's "
                                    "coordinator, the same for every process (env JAXSSL_COORDINATOR).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes "
                                      "(env JAXSSL_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index in "
                                   "[0, num_processes) (env JAXSSL_PROCESS_ID).")
_DISTRIBUTED = flags.DEFINE_enum("distributed", None, ["auto", "on", "off"], "auto (default, env "
                                 "JAXSSL_DISTRIBUTED): join a job if one is configured or a TPU/SLURM cluster is "
                                 "detected; on: always call jax.distributed.initialize; off: one process.")
flags.mark_flags_as_required(["config", "workdir"])


# SIGTERM (preemption): the run checkpointed its step; 128 + 15, as a process killed by the signal.
EXIT_PREEMPTED = 143
# Another run holds the workdir's lock (EX_TEMPFAIL: try again when it has ended).
EXIT_LOCKED = 75


def _config_error(argv: list[str]) -> str | None:
    """What is wrong with `--config` and the `--config.<key>` overrides in `argv`, as one line (else None).

    Checked before absl parses the flags, whose own messages for these cases are a traceback ending
    in "Failed loading config file config_config" or `AttributeError: "'lr'"`.
    """
    path, overrides = None, []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-config") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith(("--config=", "-config=")):
            path = arg.split("=", 1)[1]
        elif arg.startswith(("--config.", "-config.")):
            overrides.append(arg.lstrip("-").split("=", 1)[0][len("config."):])
    if path is None:
        return None
    file, _, config_arg = path.partition(":")
    if not os.path.isfile(file):
        return f"--config: the config file {file} does not exist (cwd {os.getcwd()}); e.g. configs/simclr_cifar10.py."
    if not overrides:
        return None
    try:
        spec = importlib.util.spec_from_file_location("_jaxssl_config_check", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(config_arg) if config_arg else module.get_config()
    except Exception:  # noqa: BLE001  (config_flags reports a broken config file with its traceback)
        return None
    for dotted in overrides:
        node, where = config, "config"
        for part in dotted.split("."):
            name, *indices = re.split(r"[\[\]]+", part.rstrip("]"))
            if not hasattr(node, "keys") or name not in node:
                valid = sorted(node.keys()) if hasattr(node, "keys") else []
                return (f"--config.{dotted}: {where} has no key {name!r}; valid keys of {where}: {valid}."
                        if valid else f"--config.{dotted}: {where} is {node!r}, not a dict.")
            node, where = node[name], f"{where}.{name}"
            for index in indices:
                if not isinstance(node, (tuple, list)) or not index.isdigit() or int(index) >= len(node):
                    size = f"{len(node)} elements" if isinstance(node, (tuple, list)) else repr(node)
                    return f"--config.{dotted}: {where} has no element [{index}] ({where} has {size})."
                node, where = node[int(index)], f"{where}[{index}]"
    return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Library chatter (orbax, TFDS) only from warnings up; jaxssl reports its own progress at INFO.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jaxssl").setLevel(logging.INFO)
    from jaxssl.train import distributed
    # Before anything touches a device: afterwards jax.devices() spans every process.
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, mode=_DISTRIBUTED.value)
    import jax
    from jaxssl.train import lock, loop

    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(), jax.process_count())
    try:
        results = loop.train(_CONFIG.value, _WORKDIR.value)
    except loop.Preempted as e:  # expected on preemption: one line, no traceback, a distinct exit code
        print(f"Preempted: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)
    except lock.WorkdirLockedError as e:  # another run writes to this workdir: nothing was touched
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_LOCKED)
    if jax.process_index() == 0:
        if "loss" in results:
            print(f"loss: {results['loss']:.4f} (last logged step)")
        for k, v in sorted(results.items()):  # accuracies of the final evaluation, in percent
            if k.startswith(("knn_", "linear_top")):
                print(f"{k}: {100 * v:.2f}%")
        if "rankme" in results:  # collapse monitor of the same features (1 = collapsed, feature dim = full rank)
            print(f"rankme: {results['rankme']:.2f}  feature_std: {results['feature_std']:.4f}")


def run() -> None:
    error = _config_error(sys.argv)
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    app.run(main)


if __name__ == "__main__":
    run()
