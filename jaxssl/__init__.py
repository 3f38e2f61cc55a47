"""jaxssl: accelerator-native self-supervised representation learning in JAX/Flax."""
__version__ = "0.1.0"

from jaxssl import augment, data, evaluate, losses, methods, models, monitors, ops, schedules, train  # noqa: E402

__all__ = ["augment", "data", "evaluate", "losses", "methods", "models", "monitors", "ops", "schedules", "train",
           "__version__", "viz"]

_LAZY = ("viz",)  # matplotlib: imported on first use


def __getattr__(name):
    # Lazy (PEP 562): plotting needs matplotlib, which `import jaxssl` should not pay for.
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"jaxssl.{name}")
    raise AttributeError(f"module 'jaxssl' has no attribute {name!r}")
