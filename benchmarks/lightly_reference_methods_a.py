"""lightly 1.6 reference values for NNCLR, DCL/DCLW, TiCo, MMCR, W-MSE and alignment-uniformity.

Run from the repository root in the benchmarks venv (torch + lightly 1.6):

  PYTHONPATH=. .venv-bench/bin/python benchmarks/lightly_reference_methods_a.py

writes tests/losses/lightly/methods_a.json (read by tests/losses/test_nnclr_dcl_tico_mmcr_wmse.py). Inputs are
fixed NumPy draws (seed 0); lightly runs in float64. Where lightly's randomness matters (W-MSE's
sub-batch permutation) the permutation is drawn here, fixed with `torch.randperm` patched to
return it, and stored with the case.
"""
from __future__ import annotations

import numpy as np
import torch
from lightly.loss import DCLLoss, DCLWLoss, MMCRLoss, NTXentLoss, TiCoLoss, WMSELoss
from lightly.loss.hypersphere_loss import HypersphereLoss
from lightly.models.modules import NNMemoryBankModule

from benchmarks import _lightly_reference

torch.set_num_threads(1)
T = lambda a: torch.tensor(a, dtype=torch.float64)


def views(rng, n, d, noise=0.5):
    """Two correlated views, float32-representable (the jax side computes in float32)."""
    z1 = rng.normal(size=(n, d))
    z2 = z1 + noise * rng.normal(size=(n, d))
    return z1.astype(np.float32).astype(np.float64), z2.astype(np.float32).astype(np.float64)


def nnclr_case(rng, n=8, d=6, k=20, temperature=0.1):
    z1, z2 = views(rng, n, d)
    p1, p2 = views(rng, n, d)
    queue = rng.normal(size=(k, d)).astype(np.float32).astype(np.float64)
    bank = NNMemoryBankModule(size=(k, d))
    bank.bank = T(queue)
    nn1, nn2 = bank(T(z1)), bank(T(z2))
    # lightly's NNCLR recipe (examples/pytorch/nnclr.py): NTXentLoss on (NN(z), p) both ways.
    ntxent = NTXentLoss(temperature=temperature)
    loss = 0.5 * (ntxent(nn1, T(p2)) + ntxent(nn2, T(p1)))
    return dict(z1=z1, z2=z2, p1=p1, p2=p2, queue=queue, temperature=temperature, nn1=nn1, nn2=nn2,
                lightly_ntxent_loss=loss)


def dcl_case(rng, n=8, d=6, temperature=0.1, sigma=0.5):
    z1, z2 = views(rng, n, d)
    return dict(z1=z1, z2=z2, temperature=temperature, sigma=sigma,
                dcl=DCLLoss(temperature=temperature)(T(z1), T(z2)),
                dclw=DCLWLoss(temperature=temperature, sigma=sigma)(T(z1), T(z2)))


def tico_case(rng, n=8, d=6, beta=0.9, rho=8.0, steps=3):
    """Three successive batches: lightly's running C carries over (its first C starts at zero)."""
    loss_fn = TiCoLoss(beta=beta, rho=rho)
    za, zb, losses, covs = [], [], [], []
    for _ in range(steps):
        a, b = views(rng, n, d)
        losses.append(loss_fn(T(a), T(b)))
        covs.append(loss_fn.C.clone())
        za.append(a)
        zb.append(b)
    return dict(z_a=np.stack(za), z_b=np.stack(zb), beta=beta, rho=rho, losses=torch.stack(losses),
                covs=torch.stack(covs))


def mmcr_case(rng, n=8, k=4, d=6, lmbda=0.005):
    z = rng.normal(size=(n, k, d)).astype(np.float32).astype(np.float64)
    u = z / np.linalg.norm(z, axis=-1, keepdims=True)  # lightly does not normalise; the official code does.
    half = k // 2
    return dict(z=z, lmbda=lmbda, loss=MMCRLoss(lmda=lmbda)(T(u[:, :half]), T(u[:, half:])),
                loss_lmbda0=MMCRLoss(lmda=0.0)(T(u[:, :half]), T(u[:, half:])))


def wmse_case(rng, n=16, d=3, k=2, w_size=8):
    z = rng.normal(size=(k, n, d)) + 0.3 * rng.normal(size=(1, n, d))
    z = z.astype(np.float32).astype(np.float64)
    perm = rng.permutation(n)
    loss_fn = WMSELoss(embedding_dim=d, w_size=w_size, num_samples=k).double()
    original = torch.randperm
    torch.randperm = lambda *a, **kw: torch.tensor(perm)
    try:
        loss = loss_fn(T(z.reshape(k * n, d)))
    finally:
        torch.randperm = original
    return dict(z=z, perm=perm, w_size=w_size, loss=loss)


def hypersphere_case(rng, n=8, d=6, t=2.0, lam=1.0, alpha=2.0):
    z1, z2 = views(rng, n, d)
    return dict(z1=z1, z2=z2, t=t, lam=lam, alpha=alpha, loss=HypersphereLoss(t=t, lam=lam, alpha=alpha)(T(z1), T(z2)))


def main():
    rng = np.random.default_rng(0)
    cases = {"nnclr": nnclr_case(rng), "dcl": dcl_case(rng), "dcl_t05": dcl_case(rng, temperature=0.5, sigma=1.0),
             "tico": tico_case(rng), "mmcr": mmcr_case(rng), "wmse": wmse_case(rng),
             "wmse_4views": wmse_case(rng, n=24, d=4, k=4, w_size=12), "hypersphere": hypersphere_case(rng)}
    _lightly_reference.write("methods_a", cases)


if __name__ == "__main__":
    main()
