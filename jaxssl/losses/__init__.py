"""Self-supervised losses: pure functions of arrays returning per-example values.

Implementations live in private family modules; this is the only import path users see.
"""
from jaxssl.losses._contrastive import nt_xent

__all__ = ["nt_xent"]
