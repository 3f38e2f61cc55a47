r"""Multi-crop packing (issue 24): same-size crops concatenated into one backbone call, or one call per crop?

jaxssl's DINO step (`configs/dino_vits16_imagenet.py`: ViT-S/16, 2 x 224 + `--local_views` x 96 crops,
K = 65536, bfloat16; built by `vit_step.build`) with `method_kw.crop_grouping` "resolution" (the
reference's `MultiCropWrapper`: 2 backbone calls for the student, 1 for the teacher) against "view"
(one call per crop: 8 + 2). Both compute the same function for a ViT (tests/methods/test_multicrop_grouping.py).

1. Cost at the recipe's size (`--batch`, lowering only, nothing run): XLA's cost analysis of the
   lowered step (FLOPs, bytes accessed) and the activations the backward pass keeps (`saved_residuals`).
2. `--time`: step time of both variants on real arrays at `--time_batch` with the ViT `--time_backbone`
   (smaller on a CPU), compiled with full optimisation, the two alternating in blocks
   (`_common.interleaved`: A B, B A, ...) so a loaded machine's slow phases hit both alike; the
   compiled programs' cost analysis beside (on a GPU it omits cuDNN/cuBLAS calls: use the lowered counts).

  JAX_PLATFORMS=cpu nice -n 10 .venv/bin/python benchmarks/multicrop_grouping.py --batch 64 --time \
      --time_batch 8 --time_backbone Ti/16                                              # CPU
  python benchmarks/multicrop_grouping.py --no_lowered --time --time_batch 64 --time_backbone S/16 \
      --attention cudnn                                                                   # GPU

Writes benchmarks/results/multicrop_grouping<tag>.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import _common  # also puts the repository root on sys.path
import jax

import vit_step

GROUPINGS = ("resolution", "view")


def lowered_cost(args) -> list[dict]:
    rows = []
    for g in GROUPINGS:
        t = time.perf_counter()
        train_step, state, batch, (method, views) = vit_step.build("dino_vits16", args, args.attention, args.remat,
                                                                   abstract=True, grouping=g)
        cost = _common.xla_cost(train_step.lower(state, batch, jax.random.key(1)))
        rows.append({"grouping": g, "batch": args.batch, "backbone": args.backbone or "S/16", "views": len(views),
                     "flops": float(cost.get("flops", float("nan"))), "bytes_accessed": float(cost.get("bytes accessed", 0)),
                     "saved_activation_bytes": vit_step.saved_activations(method, state, views, args.batch),
                     "lower_s": time.perf_counter() - t})
        print(f"  lowered {g}: {rows[-1]}", flush=True)
    return rows


def timed(args) -> dict:
    targs = argparse.Namespace(**{**vars(args), "batch": args.time_batch, "backbone": args.time_backbone})
    fns, compiled_cost, boxes = {}, {}, {}
    for g in GROUPINGS:
        train_step, state, batch, _ = vit_step.build("dino_vits16", targs, args.attention, args.remat,
                                                     abstract=False, grouping=g)
        t = time.perf_counter()
        compiled = train_step.lower(state, batch, jax.random.key(1)).compile()
        cost = _common.xla_cost(compiled)
        compiled_cost[g] = {"flops": float(cost.get("flops", float("nan"))),
                            "bytes_accessed": float(cost.get("bytes accessed", 0)), "compile_s": time.perf_counter() - t}
        print(f"  compiled {g}: {compiled_cost[g]}", flush=True)
        boxes[g] = {"state": state, "batch": batch, "compiled": compiled}

        def run(box=boxes[g]):
            box["state"], metrics = box["compiled"](box["state"], box["batch"], jax.random.key(0))
            box["loss"] = metrics["loss"]
            jax.block_until_ready(box["state"])

        fns[g] = run
    times = _common.interleaved(fns, warmup=args.warmup, blocks=args.blocks, steps=args.steps)
    out = {g: {**compiled_cost[g], **_common.summary(times[g], args.time_batch), "times": times[g],
               "loss": float(boxes[g]["loss"])} for g in GROUPINGS}
    # The ratio of the medians, and the median of the per-block ratios (robust to a drifting load).
    per_block = lambda g: [statistics.median(times[g][i:i + args.steps]) for i in range(0, len(times[g]), args.steps)]
    out["view_over_resolution"] = out["view"]["median_s"] / out["resolution"]["median_s"]
    out["view_over_resolution_per_block"] = statistics.median(
        v / r for v, r in zip(per_block("view"), per_block("resolution")))
    return out


def main():
    p = _common.parser(__doc__)
    p.add_argument("--batch", type=int, default=64, help="batch of the lowered cost analysis.")
    p.add_argument("--local_views", type=int, default=6)
    p.add_argument("--attention", default="fused", choices=sorted(vit_step.ATTENTION))
    p.add_argument("--remat", default="none")
    p.add_argument("--backbone", default=None, help="ViT of the cost analysis (default: the recipe's S/16).")
    p.add_argument("--time", action="store_true", help="also time both variants, alternating.")
    p.add_argument("--no_lowered", action="store_true",
                   help="skip part 1 (its counts do not depend on the backend: a GPU run can leave them to the CPU).")
    p.add_argument("--time_batch", type=int, default=8)
    p.add_argument("--time_backbone", default="Ti/16")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.set_defaults(dtype="bfloat16")
    args = p.parse_args()
    rows = [] if args.no_lowered else lowered_cost(args)
    ref = rows[0] if rows else None
    if rows:
        print(_common.table(
            ["crop_grouping", "GFLOP (lowered)", "/ resolution", "GiB accessed (lowered)", "/ resolution",
             "activations kept, MiB", "/ resolution"],
            [[r["grouping"], f"{r['flops'] / 1e9:,.1f}", f"{r['flops'] / ref['flops']:.4f}",
              f"{r['bytes_accessed'] / 2**30:,.2f}", f"{r['bytes_accessed'] / ref['bytes_accessed']:.4f}",
              f"{r['saved_activation_bytes'] / 2**20:,.0f}",
              f"{r['saved_activation_bytes'] / ref['saved_activation_bytes']:.4f}"] for r in rows]))
    result = {"benchmark": "multicrop_grouping", **vars(args), "lowered": rows}
    if args.time:
        t = timed(args)
        result["timed"] = t
        r = t["resolution"]
        print(_common.table(
            ["crop_grouping", "GFLOP (compiled)", "/ resolution", "GiB accessed (compiled)", "/ resolution",
             "median s/step", "q1-q3", "/ resolution (medians)"],
            [[g, f"{t[g]['flops'] / 1e9:,.1f}", f"{t[g]['flops'] / r['flops']:.4f}",
              f"{t[g]['bytes_accessed'] / 2**30:,.2f}", f"{t[g]['bytes_accessed'] / r['bytes_accessed']:.4f}",
              f"{t[g]['median_s']:.3f}", f"{t[g]['q1_s']:.3f}-{t[g]['q3_s']:.3f}",
              f"{t[g]['median_s'] / r['median_s']:.3f}"] for g in GROUPINGS]))
        print(f"view / resolution: {t['view_over_resolution']:.3f} (medians), "
              f"{t['view_over_resolution_per_block']:.3f} (median of per-block ratios)")
    _common.write_json(f"multicrop_grouping{args.tag}", {**result, **_common.machine_info()})


if __name__ == "__main__":
    main()
