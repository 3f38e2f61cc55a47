"""jaxssl: accelerator-native self-supervised representation learning in JAX/Flax."""
__version__ = "0.1.0"

from jaxssl import augment, data, evaluate, losses, methods, models, ops, schedules, train  # noqa: E402

__all__ = ["augment", "data", "evaluate", "losses", "methods", "models", "ops", "schedules", "train",
           "__version__"]
