r"""ViT train steps: XLA cost, memory and (on an accelerator) speed per attention path and remat policy.

The two ViT steps of issue 24, built from the repository's configs through `methods.build` (so
`config.remat` and `config.model.attention_impl` reach the model as in training):

- `dino_vits16`: `configs/dino_vits16_imagenet.py`, ViT-S/16, 2 x 224 + `--local_views` x 96 crops of
  256 px uint8 images (cropped and augmented on device, as `throughput_dino.py`), head K = 65536;
- `mae_vitb16`: `configs/mae_vitb16_imagenet.py`, ViT-B/16 encoder on the 25% visible patches, 8-block
  decoder, one 224 px crop.

Variants are `ATTENTION:REMAT[:GROUPING]`: ATTENTION `einsum` (the explicit softmax(QK^T)V path, what
the ViT ran before issue 24), `fused` (`jax.nn.dot_product_attention`, implementation None: XLA's
composition) or `cudnn` (cuDNN flash attention: GPUs, bfloat16); REMAT a `config.remat` value;
GROUPING DINO's `crop_grouping` ("resolution", the default, or "view"; `multicrop_grouping.py`).
`--backbone Ti/16` swaps the recipe's ViT size (a smaller model for CPU timing).
For each: XLA's cost analysis of the lowered step (FLOPs, bytes accessed; backend-independent), the
activations the loss's backward pass keeps (`saved_residuals` of the jaxpr: the memory remat saves,
backend-independent), and with `--memory` the compiled step's `memory_analysis()` (temporary buffers = activations kept for the
backward pass + workspace; arguments = state + batch; outputs aliased to the donated state).
`--time`: also run `--steps` steps on real arrays: median s/step, images/s and MFU (XLA-counted
step FLOPs / time / dense bf16 peak of `mfu.PEAK_TFLOPS`; on a CPU no MFU).

  .venv/bin/python benchmarks/vit_step.py --batch 8 --memory                 # CPU: cost + memory table
  python benchmarks/vit_step.py --batch 64 --models dino_vits16 --time \
      --variants einsum:none,fused:none,cudnn:none,cudnn:dots_saveable         # GPU: speed per variant
  python benchmarks/vit_step.py --batch 256 --models mae_vitb16 --time --variants fused:none,cudnn:none

Writes benchmarks/results/vit_step_b<batch><tag>.json.
"""
from __future__ import annotations

import statistics
import time

import _common  # also puts the repository root on sys.path
import jax
import jax.numpy as jnp
import numpy as np

import mfu
from configs import dino_vits16_imagenet, mae_vitb16_imagenet
from jaxssl import methods
from jaxssl.train import optim, sharding as shd, step as step_lib

ATTENTION = {"einsum": "einsum", "fused": None, "cudnn": "cudnn"}
SOURCE = 256  # source image size of the 224 px crops (ImageNet's usual resize)
# Compile fast on a CPU (memory layout and counts do not depend on the LLVM optimisation level).
FAST_CPU = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def config_of(name: str, args, attention: str, remat: str, grouping: str = "resolution"):
    if name == "dino_vits16":
        cfg = dino_vits16_imagenet.get_config()
        g1, g2, local = (dict(v) for v in list(cfg.input.views)[:3])
        views = [{**g1, "crop_size": 224}, {**g2, "crop_size": 224}] + [{**local, "crop_size": 96}] * args.local_views
        cfg.method_kw.global_views = 2
        cfg.method_kw.crop_grouping = grouping
    elif name == "mae_vitb16":
        cfg = mae_vitb16_imagenet.get_config()
        views = [{**dict(cfg.input.views[0]), "crop_size": 224}]
    else:
        raise ValueError(f"unknown model {name!r}; use dino_vits16 or mae_vitb16.")
    cfg.dtype, cfg.remat = args.dtype, remat
    if getattr(args, "backbone", None):
        cfg.model.variant = args.backbone
    cfg.model.attention_impl = ATTENTION[attention]
    return cfg, views


def saved_activations(method, state, views, batch: int) -> float:
    """Bytes the loss's backward pass keeps from its forward (`saved_residuals`, on the jaxpr: what
    remat changes, whatever the backend), leaving out residuals that are inputs (parameters, images).

    Backend-independent, unlike a CPU memory analysis: XLA:CPU drops the optimisation barriers that
    keep rematerialised recomputation in the backward pass, so its temp size does not move with remat.
    """
    from jax._src import ad_checkpoint  # pylint: disable=g-import-not-at-top  (no public equivalent)
    images = [jax.ShapeDtypeStruct((batch, v["crop_size"], v["crop_size"], 3), jnp.float32) for v in views]

    def loss(params, images, model_state, teacher, extra):
        return method.loss_fn(params, model_state, teacher, extra, images, jax.random.key(0), jnp.int32(0))[0]

    residuals = ad_checkpoint.saved_residuals(loss, state.params, images, state.model_state, state.teacher,
                                              state.extra)
    return float(sum(np.prod(a.shape) * a.dtype.itemsize for a, why in residuals
                     if not why.startswith("from the argument")))


def build(name: str, args, attention: str, remat: str, abstract: bool, grouping: str = "resolution"):
    """(train_step, state, batch, (method, views)) of jaxssl's step for one variant."""
    cfg, views = config_of(name, args, attention, remat, grouping)
    method = methods.build(cfg)
    tx, lr = optim.make(cfg.optimizer, args.batch, cfg.total_steps)
    mesh = shd.make_mesh()
    state = _common.jaxssl_state(method, tx, jnp.zeros((2, 224, 224, 3), jnp.float32), mesh, abstract=abstract)
    shape = (args.batch, SOURCE, SOURCE, 3)
    if abstract:
        batch = {"image": jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=shd.data_sharded(mesh))}
    else:
        batch = shd.to_global({"image": np.random.default_rng(0).integers(0, 256, shape, np.uint8)}, mesh)
    return step_lib.make_train_step(method, tx, views, mesh, lr), state, batch, (method, views)


def analyse(name: str, variant: str, args) -> dict:
    attention, remat, *grouping = variant.split(":")
    train_step, state, batch, (method, views) = build(name, args, attention, remat, abstract=not args.time,
                                                      grouping=grouping[0] if grouping else "resolution")
    lowered = train_step.lower(state, batch, jax.random.key(1))
    cost = _common.xla_cost(lowered)
    row = {"model": name, "variant": variant, "attention": attention, "remat": remat, "views": len(views),
           "flops": float(cost.get("flops", float("nan"))), "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
           "saved_activation_bytes": saved_activations(method, state, views, args.batch)}
    if args.memory or args.time:
        t = time.perf_counter()
        options = FAST_CPU if jax.default_backend() == "cpu" and not args.time else None
        compiled = lowered.compile(options) if options else lowered.compile()
        row["compile_s"] = time.perf_counter() - t
        mem = compiled.memory_analysis()
        if mem is not None:
            for k in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                      "generated_code_size_in_bytes"):
                row[k] = int(getattr(mem, k, 0))
            row["peak_estimate_bytes"] = (row["argument_size_in_bytes"] + row["output_size_in_bytes"]
                                          - row["alias_size_in_bytes"] + row["temp_size_in_bytes"])
    if args.time:
        times, state, metrics = _common.time_compiled(compiled, state, batch, warmup=args.warmup, steps=args.steps)
        med = statistics.median(times)
        peak = mfu.peak_tflops(str(jax.devices()[0].device_kind))
        row.update(times=times, median_s=med, images_per_s=args.batch / med, loss=float(metrics["loss"]),
                   achieved_tflops=row["flops"] / med / 1e12,
                   mfu_xla_flops=row["flops"] / med / (peak * 1e12 * jax.device_count()) if peak else None)
    print(f"  {name} {variant}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in row.items() if k not in ("times",)), flush=True)
    return row


def table(rows) -> str:
    base = {}
    for r in rows:  # the first variant of each model is the reference of the ratio columns
        base.setdefault(r["model"], r)
    mib = lambda v: f"{v / 2**20:,.0f}" if v is not None else "-"
    out = []
    for r in rows:
        b = base[r["model"]]
        cells = [r["model"], r["variant"], f"{r['flops'] / 1e9:,.1f}", f"{r['flops'] / b['flops']:.4f}",
                 f"{r['bytes_accessed'] / 2**30:,.2f}", f"{r['bytes_accessed'] / b['bytes_accessed']:.3f}",
                 mib(r["saved_activation_bytes"]),
                 f"{r['saved_activation_bytes'] / b['saved_activation_bytes']:.3f}"]
        if "temp_size_in_bytes" in r:
            cells += [mib(r["temp_size_in_bytes"]), f"{r['temp_size_in_bytes'] / b['temp_size_in_bytes']:.3f}",
                      mib(r["peak_estimate_bytes"])]
        if "median_s" in r:
            cells += [f"{r['median_s']:.4g}", f"{r['images_per_s']:,.0f}",
                      f"{100 * r['mfu_xla_flops']:.1f}%" if r["mfu_xla_flops"] else "-"]
        out.append(cells)
    head = ["model", "attention:remat", "GFLOP (lowered)", "/ first", "GiB accessed (lowered)", "/ first",
            "activations kept for backward, MiB", "/ first"]
    if any("temp_size_in_bytes" in r for r in rows):
        head += ["temp MiB (compiled)", "/ first", "peak est. MiB"]
    if any("median_s" in r for r in rows):
        head += ["median s/step", "images/s", "MFU (XLA FLOPs)"]
    return _common.table(head, out)


def main():
    p = _common.parser(__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--local_views", type=int, default=6)
    p.add_argument("--models", default="dino_vits16,mae_vitb16")
    p.add_argument("--backbone", default=None, help="ViT variant instead of the recipe's (e.g. Ti/16).")
    p.add_argument("--variants", default="einsum:none,fused:none,fused:dots_saveable,fused:block",
                   help="ATTENTION:REMAT[:GROUPING], the first being the reference of the ratio columns.")
    p.add_argument("--memory", action="store_true", help="compile each variant and report its memory analysis.")
    p.add_argument("--time", action="store_true", help="also run the steps (accelerators): s/step, images/s, MFU.")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.set_defaults(dtype="bfloat16")
    args = p.parse_args()
    rows = [analyse(name, variant, args) for name in args.models.split(",") for variant in args.variants.split(",")]
    print(table(rows))
    _common.write_json(f"vit_step_b{args.batch}{args.tag}", {"benchmark": "vit_step", **vars(args), "rows": rows,
                                                             **_common.machine_info()})


if __name__ == "__main__":
    main()
