"""Self-supervised methods, one module each; `get(name, **kw)` picks one by name."""
from jaxssl.methods import simclr
from jaxssl.methods import barlow_twins, vicreg
from jaxssl.methods import byol, moco_v2, moco_v3, simsiam
from jaxssl.methods import dino, ibot, swav
from jaxssl.methods import ae, data2vec, mae
from jaxssl.methods import ijepa, lejepa
from jaxssl.methods.base import Method, available, build, config_parameters, get, make_defaults

__all__ = ["Method", "available", "build", "config_parameters", "get", "make_defaults", "simclr", "vicreg", "barlow_twins", "byol", "moco_v2", "moco_v3", "simsiam", "dino", "swav", "ibot", "data2vec", "mae", "ae",
           "ijepa", "lejepa"]
