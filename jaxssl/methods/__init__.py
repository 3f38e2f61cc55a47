"""Self-supervised methods, one module each; `get(name, **kw)` picks one by name."""
from jaxssl.methods import simclr
from jaxssl.methods.base import Method, available, get

__all__ = ["Method", "available", "get", "simclr"]
