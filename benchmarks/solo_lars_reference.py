"""Reference steps of solo-learn's LARS (`solo/utils/lars.py`, solo-learn 1.0.2 on PyPI), stored for CI.

Writes `tests/train/solo_lars.json`: fixed float64 parameters and five steps of gradients, and the
parameters after each step of solo-learn's LARS (its `LARSWrapper` around torch SGD with momentum
0.9; eta 0.02; `exclude_bias_n_norm` on: rank-1 tensors get neither adaptation nor decay) with
`clip` on (its recipes' `clip_lr: True`; the later `LARS` class of solo-learn's main branch,
`clip_lars_lr`, computes the same `min(lars_lr / lr, 1)`) and off. `tests/train/test_optim.py` runs jaxssl's LARS (`trust_clip` True / False)
on the same numbers without torch.

The cases are where the two should agree exactly, and say why they must:
- weight decay 0: solo-learn divides by |g| + wd |w|, optax.lars by |g + wd w|; equal at wd = 0.
- a constant learning rate: torch keeps the lr out of the momentum buffer (p -= lr * buf), optax.lars
  puts it in (buf = mu buf + lr d); the two agree while the lr does not change.

Run in the benchmarks venv (`benchmarks/setup.sh`; solo-learn is installed there without its
dependencies, and only this one file of it is loaded, so lightning is not needed):

  .venv-bench/bin/python benchmarks/solo_lars_reference.py   (from the repository root)
"""
from __future__ import annotations

import importlib.metadata
import json
import os

import numpy as np
import torch

from _peers import solo_lars_module  # benchmarks/ is the script's directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "train", "solo_lars.json")
LR, ETA, MOMENTUM, STEPS = 0.3, 0.02, 0.9, 5


def inputs() -> tuple[dict, list[dict]]:
    """Parameters and per-step gradients: one tensor whose small gradients hit the clip, one whose large
    gradients do not, and a bias (rank 1: excluded)."""
    rng = np.random.default_rng(0)
    params = {"small_grad": rng.normal(size=(4, 3)), "large_grad": rng.normal(size=(2, 2, 3, 2)),
              "bias": rng.normal(size=3)}
    # small_grad: |g| ~ 0.035 < eta |w| / lr ~ 0.2, so the clip caps it, and solo-learn's eps 1e-8 in
    # |g| + eps (optax: 0) stays below 1e-6 of it.
    scale = {"small_grad": 1e-2, "large_grad": 30.0, "bias": 0.5}
    grads = [{k: rng.normal(size=v.shape) * scale[k] for k, v in params.items()} for _ in range(STEPS)]
    return params, grads


def run(clip: bool) -> list[dict]:
    """The parameters after each of the STEPS steps of solo-learn's LARS, float64."""
    params, grads = inputs()
    tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    sgd = torch.optim.SGD(list(tensors.values()), lr=LR, momentum=MOMENTUM, weight_decay=0.0)
    opt = solo_lars_module().LARSWrapper(sgd, eta=ETA, clip=clip, exclude_bias_n_norm=True)
    out = []
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
        out.append({k: t.detach().numpy().tolist() for k, t in tensors.items()})
    return out


def main() -> None:
    params, grads = inputs()
    data = {
        "versions": {"solo-learn": importlib.metadata.version("solo-learn"), "torch": torch.__version__},
        "command": "benchmarks/solo_lars_reference.py",
        "settings": {"lr": LR, "eta": ETA, "momentum": MOMENTUM, "weight_decay": 0.0, "steps": STEPS},
        "params": {k: v.tolist() for k, v in params.items()},
        "grads": [{k: v.tolist() for k, v in g.items()} for g in grads],
        "after_step": {"clip": run(True), "no_clip": run(False)},
    }
    with open(OUT, "w") as f:
        json.dump(data, f)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
