r"""Command-line entry point: `python -m jaxssl.main --config configs/<method>_<data>.py --workdir DIR`.

Kept short on purpose: everything happens in `jaxssl.train.loop.train(config, workdir)`, for image,
text and speech configs alike.
Override any config field with `--config.<key>=<value>`; unknown keys are rejected.

Several processes (hosts): start the same command on each with `--coordinator_address=HOST0:PORT
--num_processes=N --process_id=I` (or JAXSSL_COORDINATOR / JAXSSL_NUM_PROCESSES / JAXSSL_PROCESS_ID);
on Cloud TPU pods and SLURM nothing is needed (JAX reads the cluster). See jaxssl/train/distributed.py.
"""
import logging
import os
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
    from jaxssl.train import loop

    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(), jax.process_count())
    results = loop.train(_CONFIG.value, _WORKDIR.value)
    if jax.process_index() == 0:
        if "loss" in results:
            print(f"loss: {results['loss']:.4f} (last logged step)")
        for k, v in sorted(results.items()):  # accuracies of the final evaluation, in percent
            if k.startswith(("knn_", "linear_top")):
                print(f"{k}: {100 * v:.2f}%")
        if "rankme" in results:  # collapse monitor of the same features (1 = collapsed, feature dim = full rank)
            print(f"rankme: {results['rankme']:.2f}  feature_std: {results['feature_std']:.4f}")


if __name__ == "__main__":
    app.run(main)
