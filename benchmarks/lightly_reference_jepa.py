"""lightly 1.6 reference values for the JEPA losses (jaxssl.losses.sigreg, lejepa_invariance, ijepa).

  PYTHONPATH=. /tmp/bench_i/bin/python benchmarks/lightly_reference_jepa.py

SIGReg draws its slice directions inside `forward`; the script replaces `_generate_unit_vectors`
with the fixed, column-normalised directions stored in the fixture, so jaxssl evaluates the same
slices. lightly has no I-JEPA loss module: its I-JEPA pieces (`lightly.models.utils.apply_masks`,
`repeat_interleave_batch`) gather the layer-normalised targets as facebookresearch/ijepa
src/train.py does, and the loss is that file's `F.smooth_l1_loss` (and `F.mse_loss`, the paper's L2).
"""
import numpy as np
import torch
import torch.nn.functional as F
from lightly.loss import LeJEPALoss, SIGReg
from lightly.models import utils as lightly_utils

from benchmarks import _lightly_reference

torch.set_num_threads(1)


def _sigreg_cases(rng):
    cases = {}
    for name, (v, n, d, k, knots, t_max) in {"small": (1, 32, 6, 8, 17, 3.0), "views": (3, 48, 10, 24, 17, 3.0),
                                             "grid": (2, 40, 5, 12, 9, 5.0)}.items():
        z = np.round(rng.normal(size=(v, n, d)) * 1.3 + 0.2, 6)
        a = rng.normal(size=(d, k))
        a = a / np.linalg.norm(a, axis=0, keepdims=True)
        module = SIGReg(knots=knots, t_max=t_max, num_vectors=k).double()
        module._generate_unit_vectors = lambda device, dtype, num_features, a=a: torch.tensor(a, dtype=dtype)
        cases[f"sigreg_{name}"] = {"z": z, "directions": a, "knots": knots, "t_max": t_max,
                                   "value": module(torch.tensor(z)).item()}
    g = np.round(rng.normal(size=(2, 16, 6)), 6)
    loc = np.round(rng.normal(size=(4, 16, 6)), 6)
    a = rng.normal(size=(6, 32))
    a = a / np.linalg.norm(a, axis=0, keepdims=True)
    loss = LeJEPALoss(lambda_param=0.05, sigreg_num_vectors=32).double()
    loss.sigreg._generate_unit_vectors = lambda device, dtype, num_features: torch.tensor(a, dtype=dtype)
    gt, lt = torch.tensor(g), torch.tensor(loc)
    all_proj = torch.cat([gt, lt])
    from lightly.loss.lejepa_loss import lejepa_invariance_loss
    cases["lejepa"] = {"global_proj": g, "local_proj": loc, "directions": a, "lambda": 0.05,
                       "value": loss(local_proj=lt, global_proj=gt).item(),
                       "invariance": lejepa_invariance_loss(all_proj=all_proj, global_proj=gt).item()}
    return cases


def _ijepa_cases(rng):
    b, n, d, m, k = 3, 16, 8, 4, 5
    h = np.round(rng.normal(size=(b, n, d)) * 2.0 + 0.5, 6)
    ids = np.stack([np.sort(rng.choice(n, size=(m, k), replace=True), axis=-1) for _ in range(b)])  # (B, M, K)
    ht = torch.tensor(h)
    masks_pred = [torch.tensor(ids[:, j]) for j in range(m)]
    with torch.no_grad():
        t = F.layer_norm(ht, (d,))
        t = lightly_utils.apply_masks(t, masks_pred)  # (M * B, K, D), mask-major
        t = lightly_utils.repeat_interleave_batch(t, b, repeat=1)
    z = np.round(rng.normal(size=(m * b, k, d)), 6)
    zt = torch.tensor(z)
    return {"ijepa": {"h": h, "ids": ids, "prediction_mask_major": z, "targets_mask_major": t.numpy(),
                      "smooth_l1": F.smooth_l1_loss(zt, t).item(), "mse": F.mse_loss(zt, t).item()}}


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    _lightly_reference.write("jepa", {**_sigreg_cases(rng), **_ijepa_cases(rng)})
