r"""iBOT's student patch head on every patch token or on the masked ones only (`method_kw.patch_head_tokens`).

The official iBOT code (bytedance/ibot main_ibot.py) runs the student's head on every patch token of
the global crops and keeps the masked ones in the loss ("all"); DINOv2 (ssl_meta_arch.py) and lightly's
iBOT example select the masked tokens before the head. jaxssl's default "masked" pads each image's
masked tokens to the most a block mask can hold (`masking.max_block_masked`: half the tokens at
iBOT's ratio 0.5) and gives the same loss and gradients (tests/methods/test_multicrop_grouping.py).
With Sinkhorn centring (`--arg dinov2,cpu`) the teacher's head also skips the unmasked tokens.

jaxssl's full train step of `configs/ibot_cifar10.py:<arg>` (default `cpu`: the ViT-Ti/4-sized
64-wide ViT, 2 x 32 + 4 x 16 px crops, 1024-way head, batch 256) on real CIFAR-10 images, both
variants compiled, then timed in alternating blocks (`_common.interleaved`), with XLA's cost
analysis of the lowered steps beside:

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ibot_patch_head.py                  # :cpu, EMA centring
  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ibot_patch_head.py --arg dinov2,cpu --tag _dinov2

Writes benchmarks/results/ibot_patch_head<tag>.json and prints a table.
"""
from __future__ import annotations

import statistics
import time

import _common  # also puts the repository root on sys.path
import jax
import jax.numpy as jnp

from configs import ibot_cifar10
from jaxssl import methods
from jaxssl.train import optim, sharding as shd, step as step_lib

VARIANTS = ("all", "masked")


def main():
    p = _common.parser(__doc__)
    p.add_argument("--arg", default="cpu", help="argument of configs/ibot_cifar10.py (e.g. cpu, dinov2,cpu).")
    p.add_argument("--batch", type=int, default=256, help="global batch (the config's is 256).")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per block.")
    args = p.parse_args()
    x_train = _common.load_cifar10()[0]
    mesh = shd.make_mesh()
    fns, boxes, rows = {}, {}, []
    for variant in VARIANTS:
        cfg = ibot_cifar10.get_config(args.arg)
        cfg.method_kw.patch_head_tokens = variant
        method = methods.build(cfg)
        tx, lr = optim.make(cfg.optimizer, args.batch, cfg.total_steps)
        views = [dict(v) for v in cfg.input.views]
        state = _common.jaxssl_state(method, tx, jnp.zeros((2, 32, 32, 3), jnp.float32), mesh)
        train_step = step_lib.make_train_step(method, tx, views, mesh, lr)
        example = shd.to_global({"image": x_train[:args.batch]}, mesh)
        t = time.perf_counter()
        lowered = train_step.lower(state, example, jax.random.key(1))
        cost = _common.xla_cost(lowered)
        compiled = lowered.compile()  # timed below as is: calling train_step would compile it again
        rows.append({"variant": variant, "flops": float(cost.get("flops", float("nan"))),
                     "bytes_accessed": float(cost.get("bytes accessed", 0.0)), "compile_s": time.perf_counter() - t})
        print(f"  {variant}: {rows[-1]}", flush=True)
        fns[variant], boxes[variant] = _common.jaxssl_runner(compiled, state, x_train, args.batch, mesh)
    times = _common.interleaved(fns, warmup=args.warmup, blocks=args.blocks, steps=args.steps)
    base = statistics.median(times["all"])
    for row in rows:
        row.update(_common.summary(times[row["variant"]], args.batch), times=times[row["variant"]],
                   speedup_vs_all=base / statistics.median(times[row["variant"]]),
                   flops_vs_all=row["flops"] / rows[0]["flops"], last_loss=float(boxes[row["variant"]]["loss"]))
    print(_common.table(["patch_head_tokens", "median s/step", "q1-q3 s", "speed-up vs all", "FLOPs vs all",
                         "GFLOP/step (lowered)"],
                        [[r["variant"], r["median_s"], f"{r['q1_s']:.3g}-{r['q3_s']:.3g}", r["speedup_vs_all"],
                          r["flops_vs_all"], r["flops"] / 1e9] for r in rows]))
    _common.write_json(f"ibot_patch_head{args.tag}", {"benchmark": "ibot_patch_head", "config_arg": args.arg,
                                                       "batch": args.batch, "warmup": args.warmup,
                                                       "blocks": args.blocks, "steps": args.steps,
                                                       **_common.machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
