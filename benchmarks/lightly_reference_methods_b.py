"""lightly 1.6 reference values for MSN / PMSN, VICRegL, FastSiam and DirectCLR (tests/losses/lightly/methods_b.json).

Run in the benchmarks venv from the repository root:

  PYTHONPATH=. .venv-bench/bin/python benchmarks/lightly_reference_methods_b.py

Fixed float64 NumPy inputs; lightly's losses evaluated in float64 torch. FastSiam has no loss class
in lightly: its example (`examples/pytorch/fastsiam.py`) averages the detached projections of the
other views and applies `NegativeCosineSimilarity`, reproduced here with that class.
"""
import numpy as np
import torch
from lightly.loss import DirectCLRLoss, MSNLoss, NegativeCosineSimilarity, PMSNLoss, VICRegLLoss

from benchmarks import _lightly_reference

torch.set_num_threads(1)
t = lambda x: torch.from_numpy(np.asarray(x, np.float64))


def msn_cases(rng):
    out = {}
    anchors, targets, prototypes = rng.normal(size=(18, 8)), rng.normal(size=(6, 8)), rng.normal(size=(5, 8))
    for name, loss, kw in (
            ("msn", MSNLoss(temperature=0.1, sinkhorn_iterations=3, regularization_weight=1.0), {}),
            ("msn_no_sinkhorn", MSNLoss(temperature=0.1, sinkhorn_iterations=0, regularization_weight=1.0), {}),
            ("pmsn", PMSNLoss(temperature=0.1, sinkhorn_iterations=3, regularization_weight=1.0,
                              power_law_exponent=0.25), {})):
        value = loss(t(anchors), t(targets), t(prototypes), target_sharpen_temperature=0.25)
        out[name] = dict(anchors=anchors, targets=targets, prototypes=prototypes, temperature=0.1,
                         sharpen_temperature=0.25, sinkhorn_iterations=loss.sinkhorn_iterations,
                         prior="power_law" if name == "pmsn" else "uniform", power_law_exponent=0.25, loss=value)
    return out


def directclr_case(rng):
    z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
    value = DirectCLRLoss(loss_dim=6, temperature=0.5)(t(z1), t(z2))
    return dict(z1=z1, z2=z2, dim=6, temperature=0.5, loss=value)


def fastsiam_case(rng):
    p, z = rng.normal(size=(4, 5, 7)), rng.normal(size=(4, 5, 7))
    criterion = NegativeCosineSimilarity()
    ps, zs = t(p), t(z).detach()
    loss = 0.0
    for i in range(4):
        mask = torch.arange(4) != i
        loss = loss + criterion(ps[i], torch.mean(zs[mask], dim=0)) / 4
    return dict(p=p, z=z, loss=loss)


def vicregl_case(rng):
    n, d, c = 6, 8, 5
    sizes = (3, 3, 2, 2)  # 2 global views with 3x3 maps, 2 local views with 2x2 maps
    emb = [rng.normal(size=(n, d)) * rng.uniform(0.3, 2.0, size=d) for _ in sizes]
    maps = [rng.normal(size=(n, s, s, c)) * rng.uniform(0.3, 2.0, size=c) for s in sizes]
    grids = [rng.uniform(0, 32, size=(n, s, s, 2)) for s in sizes]
    loss = VICRegLLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0, alpha=0.75, num_matches=(4, 2))
    value = loss(global_view_features=[(t(e), t(m)) for e, m in zip(emb[:2], maps[:2])],
                 global_view_grids=[t(g) for g in grids[:2]],
                 local_view_features=[(t(e), t(m)) for e, m in zip(emb[2:], maps[2:])],
                 local_view_grids=[t(g) for g in grids[2:]])
    # Globals and locals have maps of different sizes: stored as two stacks each (JSON arrays are rectangular).
    flat = lambda xs, k: np.stack([x.reshape(n, -1, k) for x in xs])
    return dict(embeddings=np.stack(emb), global_maps=flat(maps[:2], c), local_maps=flat(maps[2:], c),
                global_locations=flat(grids[:2], 2), local_locations=flat(grids[2:], 2), num_matches=[4, 2],
                alpha=0.75, loss=value[0])


def main():
    rng = np.random.default_rng(22)
    cases = msn_cases(rng)
    cases["directclr"] = directclr_case(rng)
    cases["fastsiam"] = fastsiam_case(rng)
    cases["vicregl"] = vicregl_case(rng)
    _lightly_reference.write("methods_b", cases)


if __name__ == "__main__":
    main()
