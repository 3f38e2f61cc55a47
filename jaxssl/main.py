r"""Command-line entry point: `python -m jaxssl.main --config configs/<method>_<data>.py --workdir DIR`.

Kept short on purpose: everything happens in `jaxssl.train.loop.train(config, workdir)`.
Override any config field with `--config.<key>=<value>`; unknown keys are rejected.
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
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Library chatter (orbax, TFDS) only from warnings up; jaxssl reports its own progress at INFO.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jaxssl").setLevel(logging.INFO)
    import jax
    from jaxssl.train import loop

    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(), jax.process_count())
    results = loop.train(_CONFIG.value, _WORKDIR.value)
    if jax.process_index() == 0:
        knn = {k: v for k, v in results.items() if k.startswith("knn_")}
        for k, v in sorted(knn.items()):
            print(f"{k}: {100 * v:.2f}%")
        if "rankme" in results:  # collapse monitor of the same features (1 = collapsed, feature dim = full rank)
            print(f"rankme: {results['rankme']:.2f}  feature_std: {results['feature_std']:.4f}")


if __name__ == "__main__":
    app.run(main)
