"""DCL and DCLW (Yeh et al., 2022, arXiv:2110.06848): SimCLR with the positive pair decoupled from the denominator.

"We identify a noticeable negative-positive-coupling (NPC) effect in the widely used InfoNCE
loss [...] By removing the NPC effect, we propose decoupled contrastive learning (DCL) loss"
(abstract). The framework is SimCLR's (Sec. 5: "we use SimCLR as the baseline and replace its
loss"): backbone -> MLP projection head, two views, `losses.dcl` over the 2N views of the global
batch; `loss="dclw"` weights the positive term with the negative von Mises-Fisher weight (Eq. 7).
No teacher, no extra state. Each view is its own forward pass (`base.embed_each`, as lightly's
DCL example `model(x0)`, `model(x1)`); SimCLR's reference forwards the concatenation.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, loss: str = "dcl", temperature: float = 0.1, sigma: float = 0.5,
         proj_hidden: Sequence[int] = (2048,), proj_dim: int = 128, dtype=jnp.float32) -> base.Method:
    """DCL / DCLW on SimCLR's network.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F).
      loss: "dcl" (Eq. 6) or "dclw" (Eq. 6 with the weight of Eq. 7).
      temperature: tau (0.1, lightly's default; the paper reports DCL less sensitive to tau than SimCLR).
      sigma: sigma of the DCLW weight (0.5, paper Sec. 4.3).
      proj_hidden, proj_dim: SimCLR's projection head (one 2048 hidden layer with BN, 128 outputs).
      dtype: compute dtype of the head.
    """
    if loss not in ("dcl", "dclw"):
        raise ValueError(f"DCL loss must be 'dcl' or 'dclw', got {loss!r}.")
    if not temperature > 0 or not sigma > 0:
        raise ValueError(f"DCL temperature and sigma must be > 0, got {temperature} and {sigma}.")
    net = heads.BackboneWithHeads(backbone, projector=heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype))

    def objective(params, emb, extra, rng, step):
        del params, rng, step
        z1, z2 = emb["z1"], emb["z2"]
        value = jnp.mean(losses.dcl(z1, z2, temperature, weighted=loss == "dclw", sigma=sigma))
        metrics = {"z_std": monitors.feature_std(z1), "h_std": monitors.feature_std(emb["h1"]),
                   **monitors.alignment_uniformity(z1, z2)}
        return value, (extra, metrics)

    return base.two_stage(net, base.embed_each(net, "DCL"), objective)
