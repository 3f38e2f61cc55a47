r"""Library overhead: jaxssl's SimCLR train step vs a minimal hand-written jitted JAX step.

Both steps do the same computation on the same device: two on-device augmented views
(`jaxssl.augment.make_views`, identical keys), the same flax ResNet + MLP head, NT-Xent over
the batch, LARS via optax, BatchNorm statistics update. The hand-written step is the smallest
code that does this with plain `jax.jit` (no Method/TrainState/metrics/sharding annotations),
so the ratio is the cost of the library's abstractions (target: <= 1.05x).

  python benchmarks/step_overhead.py --batch 256 --width 0.125 --steps 10

Prints a table and writes benchmarks/results/step_overhead.json. Medians of `--steps` timed
steps after 2 warm-up steps; the two steps alternate so machine noise hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import common  # noqa: E402
from jaxssl import augment, losses, methods, models  # noqa: E402
from jaxssl.train import sharding as shd, step as step_lib  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()

    views = [common.simclr_view(args.size)] * 2
    backbone = models.get("resnet", variant="18", width=args.width, cifar_stem=True)
    method = methods.get("simclr", backbone=backbone, temperature=0.5, proj_hidden=(512,), proj_dim=128)
    tx = optax.lars(0.3, weight_decay=1e-4, weight_decay_mask=lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p),
                    trust_ratio_mask=lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p))
    mesh = shd.make_mesh()
    images = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3), np.uint8)
    rng = jax.random.key(0)

    # --- jaxssl -------------------------------------------------------------------------------
    state = step_lib.init_state(method, tx, jax.random.key(1), jnp.zeros((2, args.size, args.size, 3)))
    lib_step = step_lib.make_train_step(method, tx, views, mesh)
    batch = shd.to_global({"image": images}, mesh)

    # --- hand-written ---------------------------------------------------------------------------
    net = method.net
    variables = net.init(jax.random.key(1), jnp.zeros((2, args.size, args.size, 3)), train=True)
    hand = {"params": variables["params"], "bs": variables["batch_stats"],
            "opt": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32)}

    @jax.jit
    def hand_step(s, x, key):
        key = jax.random.fold_in(key, s["step"])
        aug, _ = jax.random.split(key)
        v1, v2 = augment.make_views(aug, x, views)

        def loss_fn(params):
            out, upd = net.apply({"params": params, "batch_stats": s["bs"]}, jnp.concatenate([v1, v2]),
                                 train=True, mutable=["batch_stats"])
            z = out["projection"]
            return jnp.mean(losses.nt_xent(z[:len(x)], z[len(x):], 0.5)), upd["batch_stats"]

        (loss, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(s["params"])
        u, opt = tx.update(g, s["opt"], s["params"])
        return {"params": optax.apply_updates(s["params"], u), "bs": bs, "opt": opt, "step": s["step"] + 1}, loss

    x_local = jnp.asarray(images)
    for _ in range(2):  # warm-up (compilation)
        state, m = lib_step(state, batch, rng)
        hand, l = hand_step(hand, x_local, rng)
    jax.block_until_ready((state, hand))
    t_lib, t_hand = [], []
    for _ in range(args.steps):
        t = time.perf_counter(); state, m = lib_step(state, batch, rng); jax.block_until_ready(state)
        t_lib.append(time.perf_counter() - t)
        t = time.perf_counter(); hand, l = hand_step(hand, x_local, rng); jax.block_until_ready(hand)
        t_hand.append(time.perf_counter() - t)
    lib, hw = statistics.median(t_lib), statistics.median(t_hand)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = dict(benchmark="step_overhead", device=str(jax.devices()[0].device_kind), n_devices=jax.device_count(),
                  machine=platform.machine(), cpus=os.cpu_count(), commit=commit, batch=args.batch, width=args.width,
                  size=args.size, steps=args.steps, jaxssl_s=lib, handwritten_s=hw, ratio=lib / hw,
                  jaxssl_img_s=args.batch / lib, handwritten_img_s=args.batch / hw)
    print(f"| step | median s/step | images/s |\n|---|---|---|\n| jaxssl make_train_step | {lib:.3f} | "
          f"{args.batch / lib:.0f} |\n| hand-written jit | {hw:.3f} | {args.batch / hw:.0f} |\n"
          f"ratio jaxssl / hand-written: {lib / hw:.3f} ({result['device']}, commit {commit})")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "step_overhead.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
