"""LeJEPA (Balestriero & LeCun, 2025, arXiv:2511.08544): view invariance + SIGReg, no teacher.

"LeJEPA [...] SIGReg [...] constrains embeddings to reach an isotropic Gaussian distribution
[...] a single trade-off hyperparameter [...] heuristics-free (no stop-gradient, no
teacher-student, no hyper-parameter schedulers)" (abstract). Follows the authors' minimal
implementation (galilai-group/lejepa MINIMAL.md) and their library (`lejepa.univariate.EppsPulley`,
`lejepa.multivariate.SlicingUnivariateTest`):

* Network: backbone -> projector MLP (Linear -> BN -> ReLU twice, then Linear; MINIMAL.md
  `MLP(512, [2048, 2048, proj_dim], norm_layer=nn.BatchNorm1d)`), in `heads.MultiCrop`, so views
  of one resolution share one forward pass (and BatchNorm statistics), as MINIMAL.md's
  `net(vs)` on all views at once.
* Views: the first `global_views` of `config.input.views` are global, the rest local (the
  paper's multi-crop); every view is pulled to the centroid of the global views
  (`losses.lejepa_invariance`).
* SIGReg: `losses.sigreg` on every view's projections (each view tested on its own rows of the
  GLOBAL batch, averaged), `num_slices` fresh unit directions per step from the step's key.
* Loss: `lambda * SIGReg + (1 - lambda) * invariance`.
* Evaluation: the backbone's features (for `transformer.Model`, the average-pooled patch tokens).

Difference from MINIMAL.md: its timm ViT ends in a 512-wide linear head (`num_classes=512`)
before the projector; here the projector reads the backbone features directly.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl import losses, monitors
from jaxssl.methods import base
from jaxssl.models import heads


def make(*, backbone: nn.Module, proj_hidden: Sequence[int] = (2048, 2048), proj_dim: int = 16,
         lambda_: float = 0.05, num_slices: int = 1024, knots: int = 17, t_max: float = 3.0,
         global_views: int = 2, dtype=jnp.float32) -> base.Method:
    """LeJEPA.

    Args:
      backbone: a module mapping images (B, H, W, 3) -> features (B, F) at every view size.
      proj_hidden: hidden widths of the projector (2048, 2048; MINIMAL.md).
      proj_dim: projection size (16: MINIMAL.md's recommended `+proj_dim=16`).
      lambda_: weight of SIGReg, the invariance term gets 1 - lambda (0.05: the reference
        implementation's default, as lightly 1.6 `LeJEPALoss` records; the paper explores
        0.01-0.1 and MINIMAL.md's ViT-S/8 Imagenette run uses 0.02).
      num_slices: random directions per step (1024, the LeJEPA setting lightly's `SIGReg` adopts;
        MINIMAL.md draws 256).
      knots, t_max: the Epps-Pulley trapezoid grid (17 nodes on [0, 3]; `EppsPulley` defaults).
      global_views: how many leading views are global (their centroid is the invariance target).
      dtype: compute dtype of the projector.
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}.")
    net = heads.MultiCrop(backbone, heads.MLP(tuple(proj_hidden), proj_dim, dtype=dtype))

    def loss_fn(params, model_state, teacher, extra, views, rng, step):
        del teacher, step
        if not 1 <= global_views <= len(views) or len(views) < 2:
            raise ValueError(f"LeJEPA needs >= 2 views with 1 <= global_views <= len(views), got {len(views)} views "
                             f"and global_views={global_views}; set config.input.views (globals first).")
        b = views[0].shape[0]
        out, new_state = net.apply({"params": params, **model_state}, views, train=True, mutable=list(model_state),
                                   rngs={"dropout": rng})
        z = out["projection"].reshape(len(views), b, proj_dim)
        # One set of slices for every view and every device: drawn from the step's key.
        directions = losses.slice_directions(jax.random.fold_in(rng, 1), proj_dim, num_slices)
        sig = jnp.mean(losses.sigreg(z, directions, knots=knots, t_max=t_max))
        inv = jnp.mean(losses.lejepa_invariance(z, z[:global_views]))
        loss = lambda_ * sig + (1.0 - lambda_) * inv
        metrics = {"sigreg": sig, "invariance": inv, "z_std": monitors.feature_std(z[0]),
                   "h_std": monitors.feature_std(out["features"][:b])}
        return loss, (new_state, extra, metrics)

    return base.Method(net, loss_fn)
