r"""Model FLOPs utilisation of jaxssl's train step: FLOPs per step / step time / peak.

Two models at 224 px: ResNet-50 SimCLR (two views) and ViT-S/16 DINO (the two global views;
`--local_views 6` adds the 96 px crops of the recipe). FLOPs come from XLA:
`jit(step).lower(...).cost_analysis()["flops"]` of the unoptimised HLO for the whole step
(augmentation, forward, backward, optimiser, EMA) and, as the "model FLOPs" of the MFU
definition (PaLM, arXiv:2204.02311, App. B), 3 x the forward FLOPs of the network on the step's
images (backward = 2 x forward), from the lowered forward pass. (The *compiled* program's count
leaves out what XLA:GPU hands to cuDNN/cuBLAS; it is kept as `step_flops_xla_compiled`.) Step time: median after
warm-up. MFU = model FLOPs / step time / peak, with the peak from PEAK_TFLOPS for the device
(dense bf16, vendor data sheets); on a CPU no MFU is given, only the achieved FLOP/s.

  .venv/bin/python benchmarks/mfu.py --batch 8 --steps 3                  # CPU: FLOP/s only
  python benchmarks/mfu.py --batch 128 --dtype bfloat16 --local_views 6 --steps 10   # GPU/TPU: MFU
  .venv/bin/python benchmarks/mfu.py --recount benchmarks/results/mfu_NVIDIA_H200_b128.json

Writes benchmarks/results/mfu_<device><tag>.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import _common
import report
import jax
import jax.numpy as jnp
import numpy as np

from configs import common, dino_vits16_imagenet, simclr_cifar10
from jaxssl import methods, models
from jaxssl.train import optim, sharding as shd, step as step_lib

# Dense bf16 peak TFLOP/s per device (NVIDIA/Google data sheets): H100 SXM 989, A100 312,
# H200 989 (same tensor cores as H100 SXM), TPU v4 275, TPU v5e 197. Matched against jax's device_kind.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def peak_tflops(kind: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in kind.lower()), None)


def flops_of(stage) -> float:
    """FLOPs of a `jax.stages.Lowered` (unoptimised HLO) or `Compiled` (optimised HLO) program."""
    return float(_common.xla_cost(stage).get("flops", float("nan")))


def setup(name: str, args):
    """(method, tx, views) of jaxssl for `name`, from the repository's configs."""
    dtype = jnp.dtype(args.dtype)
    if name == "resnet50_simclr":
        cfg = simclr_cifar10.get_config()
        backbone = models.get("resnet", variant="50", width=1.0, cifar_stem=False, dtype=dtype)
        method = methods.get("simclr", backbone=backbone, dtype=dtype, temperature=0.1, proj_hidden=(2048,),
                             proj_dim=128)
        # SimCLR ImageNet views: strength 1.0 and Gaussian blur p=0.5 (arXiv:2002.05709, App. A).
        view = common.simclr_view(224, strength=1.0, blur_p=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        views = [view, view]
    else:
        cfg = dino_vits16_imagenet.get_config()
        backbone = models.get(**{**cfg.model, "dtype": dtype})
        views = list(cfg.input.views)[:2 + args.local_views]
        kw = {**cfg.method_kw, "global_views": 2}
        method = methods.get("dino", backbone=backbone, dtype=dtype, **kw)
    tx, _ = optim.make(cfg.optimizer, args.batch, max(cfg.total_steps, 1))
    return method, tx, views


def count_flops(method, views, args, state, batch, train_step) -> dict:
    """Model and step FLOPs from XLA's cost analysis of the *lowered* (unoptimised) HLO.

    Backend-independent: on a GPU the compiled program's cost analysis leaves out the
    convolutions and matrix products that XLA hands to cuDNN/cuBLAS as custom calls (it gave
    67 GFLOP for a ResNet-50 step of 6,100 on the H200), so the lowered count is the one used;
    on a CPU both agree within 1-2%. `state`/`batch` may be arrays or ShapeDtypeStructs."""
    step_flops = flops_of(train_step.lower(state, batch, jax.random.key(1)))
    # Model FLOPs: the forward pass of the network on every view image of the step, x3.
    variables = {"params": state.params, **state.model_state}
    sizes = [v.get("crop_size", 224) for v in views]
    forward = jax.jit(lambda var, x: method.net.apply(var, x, train=False))
    fwd = 0.0
    for s in sorted(set(sizes)):  # one lowering per crop size (DINO: 224 and 96)
        x = jax.ShapeDtypeStruct((args.batch, s, s, 3), jnp.float32)
        fwd += sizes.count(s) * flops_of(forward.lower(variables, x))
    return {"model_flops": 3 * fwd, "step_flops_xla": step_flops}


def build(name: str, args, mesh, abstract: bool = False):
    """(method, views, state, batch, train_step); abstract=True: shapes only, nothing allocated."""
    method, tx, views = setup(name, args)
    example = jnp.zeros((2, 224, 224, 3), jnp.float32)
    state = _common.jaxssl_state(method, tx, example, mesh, seed=0, abstract=abstract)
    if abstract:
        batch = {"image": jax.ShapeDtypeStruct((args.batch, 224, 224, 3), jnp.uint8, sharding=shd.data_sharded(mesh))}
    else:
        images = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), np.uint8)
        batch = shd.to_global({"image": images}, mesh)
    return method, views, state, batch, step_lib.make_train_step(method, tx, views, mesh)


def measure(name: str, args, mesh) -> dict:
    method, views, state, batch, train_step = build(name, args, mesh)
    t = time.perf_counter()
    compiled = train_step.lower(state, batch, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - t
    counts = count_flops(method, views, args, state, batch, train_step)
    times, state, metrics = _common.time_compiled(compiled, state, batch, warmup=args.warmup, steps=args.steps,
                                                  label=name)
    kind = str(jax.devices()[0].device_kind)
    return dict(model=name, views=[v.get("crop_size") for v in views], compile_s=compile_s,
                step_flops_xla_compiled=flops_of(compiled), times=times, loss=float(metrics["loss"]),
                **rates(counts, statistics.median(times), args.batch, kind, jax.device_count()))


def rates(counts: dict, median_s: float, batch: int, kind: str, n_devices: int) -> dict:
    """Achieved FLOP/s and MFU = model FLOPs / step time / (peak per device x devices)."""
    peak = peak_tflops(kind)
    peak_total = peak * 1e12 * n_devices if peak else None
    return dict(**counts, median_step_s=median_s, images_per_s=batch / median_s,
                achieved_tflops=counts["model_flops"] / median_s / 1e12,
                step_tflops=counts["step_flops_xla"] / median_s / 1e12,
                mfu=counts["model_flops"] / median_s / peak_total if peak_total else None, peak_tflops_per_device=peak)


def recount(path: str) -> None:
    """Re-derive the FLOPs of a results JSON written by an earlier version of this script (which
    took them from the compiled program's cost analysis: too low on a GPU, see count_flops) for
    its models, batch, dtype and views, here, from shapes alone; the measured step times are
    kept. Writes <name>_recount.json next to it."""
    import json
    import os
    with open(path) as f:
        rec = json.load(f)
    args = argparse.Namespace(**{k: rec[k] for k in ("batch", "dtype", "local_views")})
    mesh = shd.make_mesh()
    results = []
    for r in rec["results"]:
        method, views, state, batch, train_step = build(r["model"], args, mesh, abstract=True)
        counts = count_flops(method, views, args, state, batch, train_step)
        results.append({**r, "flops_as_measured": {k: r.get(k) for k in ("model_flops", "step_flops_xla", "mfu")},
                        **rates(counts, r["median_step_s"], rec["batch"], rec["jax_device"], rec["jax_devices"])})
    out = {**rec, "results": results, "recount": {"from": os.path.basename(path), **_common.machine_info()}}
    print_table(results, rec["batch"])
    _common.write_json(os.path.splitext(os.path.basename(path))[0] + "_recount", out)


def print_table(results, batch: int) -> None:
    print(report.mfu({"results": results, "batch": batch}))


def main():
    p = _common.parser(__doc__)
    p.add_argument("--models", default="resnet50_simclr,vits16_dino")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--local_views", type=int, default=0, help="DINO 96 px crops (the recipe has 6).")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--recount", default=None, metavar="JSON",
                   help="re-derive the FLOPs and MFU of an earlier results file (its times kept); runs no step.")
    args = p.parse_args()
    if args.recount:
        return recount(args.recount)
    mesh = shd.make_mesh()
    record = {"benchmark": "mfu", **vars(args), **_common.machine_info()}
    results = [measure(m, args, mesh) for m in args.models.split(",")]
    print_table(results, args.batch)
    _common.write_json(f"mfu_{record['jax_device'].replace(' ', '_')}{args.tag}", {**record, "results": results})


if __name__ == "__main__":
    main()
