"""DirectCLR (Jing et al., 2022, arXiv:2110.09348): contrastive learning on a sub-vector of the representation, no projector.

"DirectCLR [...] directly optimizes the representation space without relying on an explicit
trainable projector [...] only a subvector of the representation r[0:d0] is fed into the loss
function" (Sec. 6). The paper's analysis: a linear projector only ever trains a low-rank part of
the representation, so the same effect is had by picking d0 coordinates directly.

* Network: the backbone alone (`heads.BackboneWithHeads` without projector: "projection" is the
  representation r, the pooled backbone features).
* Loss: `losses.directclr` on the first `dim` coordinates of r for the two views (the official
  symmetrised InfoNCE, `--dim 360` of ResNet-50's 2048, temperature 0.1), over the global batch.
* Each view is its own forward pass (BatchNorm statistics per view), as the official
  `r1 = self.backbone(y1); r2 = self.backbone(y2)`. No teacher, no extra state.
* The official script also trains an online linear classifier on the detached representation
  (labels); jaxssl evaluates with kNN / linear probes instead, so it is not part of the objective.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, dim: int = 360, temperature: float = 0.1, negatives: str = "cross_view",
         dtype=jnp.float32) -> base.Method:
    """DirectCLR.

    Args:
      backbone: a module mapping images (B,H,W,3) -> features (B,F) with F >= dim.
      dim: d0, the leading representation coordinates the loss sees (official `--dim 360`).
      temperature: tau of the InfoNCE (0.1, the official `infoNCE`).
      negatives: "cross_view" (official: the other view's N keys) or "all" (lightly's NT-Xent form).
      dtype: unused (no heads); accepted for the common `methods.build` signature.
    """
    del dtype
    net = heads.BackboneWithHeads(backbone)

    def objective(params, emb, extra, rng, step):
        del params, rng, step
        if emb["z1"].shape[1] < dim:
            raise ValueError(f"DirectCLR dim={dim} exceeds the representation size {emb['z1'].shape[1]}; lower "
                             "config.method_kw.dim.")
        loss = jnp.mean(losses.directclr(emb["z1"], emb["z2"], dim, temperature=temperature, negatives=negatives))
        metrics = {"h_std": monitors.feature_std(emb["h1"]), "sub_std": monitors.feature_std(emb["z1"][:, :dim]),
                   "h_rank": monitors.effective_rank(emb["h1"])}
        return loss, (extra, metrics)

    return base.two_stage(net, base.embed_each(net, "DirectCLR"), objective)
