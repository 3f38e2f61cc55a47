"""Backbones and heads. Backbones are picked by module name: `get("resnet", variant="18")`."""
from __future__ import annotations

import importlib

import flax.linen as nn

from jaxssl.models import conv_ae, heads, resnet, vit
from jaxssl.models import encoders, transformer

BACKBONES = ("resnet", "vit", "transformer", "conv_ae")


def get(name: str, **kw) -> nn.Module:
    """Instantiate `jaxssl.models.<name>.Model(**kw)`; raises ValueError for an unknown name or keyword."""
    try:
        module = importlib.import_module(f"jaxssl.models.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"Unknown model {name!r}. Available models: {', '.join(BACKBONES)}.") from None
    fields = {f for f in module.Model.__dataclass_fields__ if f not in ("parent", "name")}
    unknown = sorted(set(kw) - fields)
    if unknown:
        raise ValueError(f"Unknown keyword(s) {unknown} for model {name!r}; valid keys: {sorted(fields)}.")
    return module.Model(**kw)


__all__ = ["get", "heads", "resnet", "vit", "encoders", "transformer", "conv_ae"]
