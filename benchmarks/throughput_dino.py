r"""ViT-S/16 DINO train-step throughput: jaxssl vs a hand-written jitted JAX step vs lightly (PyTorch).

The recipe of `configs/dino_vits16_imagenet.py` (ViT-S/16 with drop-path 0.1, DINO head 2048 ->
256 -> K = 65536 without `norm_last_layer`, student temperature 0.1, teacher temperature
schedule, centre EMA 0.9, teacher EMA 0.996 -> 1, AdamW with lr 5e-4 x batch/256, weight decay
0.04 -> 0.4, per-tensor gradient clipping 3.0) on 2 global crops (224 px) and `--local_views`
local crops (96 px) of random 256 px uint8 images, timed in one process with alternating blocks
(`_common.interleaved`), medians after warm-up:

- jaxssl: `methods.get("dino", ...)` + `optim.make(config.optimizer, ...)` +
  `train.step.make_train_step(...)`; the batch is placed with `train.sharding.to_global` every
  step and augmented on device inside the step (jaxssl's DINO views).
- handwritten: the smallest plain `jax.jit` step doing the same computation on the same flax
  modules (`method.net`, the teacher a copy without drop-path) and the same augmentation kernels
  (`throughput._hand_augment`), with the DINO cross entropy, centring/sharpening, centre EMA,
  clipping, optax AdamW and teacher EMA written inline: no Method, TrainState, metrics or
  shardings; state donated. jaxssl / handwritten is the library's overhead (target <= 1.05).
- lightly: `_peers_dino.py`: timm ViT-S/16 + lightly's DINOProjectionHead/DINOLoss/
  update_momentum + torch AdamW, one batch per step from a DataLoader with lightly's
  DINOTransform (per image, host workers), bfloat16 autocast with `--dtype bfloat16`.
  With DataLoader workers it is timed after the other contenders, on consecutive steps once the
  prefetch queue that filled meanwhile is drained (`sustained_times`): its steady state.
- lightly_model_only: the same torch step on one fixed, pre-augmented batch already on the device
  (no data loading): splits lightly's time into augmentation and model compute.

The last layer is trainable (as in every epoch but the first); `--freeze_last_layer` times the
first epoch instead (jaxssl cuts the gradient, lightly drops it). `--tiny` shrinks everything
(2-block 64-wide ViT, 64/32 px, batch 4, K = 1024) to check the script on a CPU in seconds.

  python benchmarks/throughput_dino.py --batch 64 --dtype bfloat16               # GPU, all four
  .venv-bench/bin/python benchmarks/throughput_dino.py --tiny --torch_device cpu
  .venv/bin/python benchmarks/throughput_dino.py --tiny --frameworks jaxssl,handwritten

Writes benchmarks/results/throughput_dino_vits16_b<batch><tag>.json.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
import statistics
import traceback

import _common  # also puts the repository root on sys.path
import report
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import dino_vits16_imagenet
from jaxssl import methods, models
from jaxssl.models import heads
from jaxssl.train import optim, sharding as shd, step as step_lib
from throughput import _hand_augment

INIT_SEED = 1
# --tiny: a CPU smoke test of every code path (ViT with 2 blocks of width 64, 4x4 / 2x2 patch grids).
TINY = dict(batch=4, global_size=64, local_size=32, width=64, depth=2, heads=2, out_dim=1024, hidden_dim=256,
            bottleneck_dim=64, warmup=1, blocks=2, steps=2)
FULL = dict(batch=64, global_size=224, local_size=96, warmup=3, blocks=5, steps=5)


def load_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random uint8 (n, size, size, 3) source images (crops are taken from them on either side)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


def setup(args):
    """(config, method_kw, method, tx, lr, views): jaxssl's DINO from the config, resized by args."""
    cfg = dino_vits16_imagenet.get_config()
    dtype = jnp.dtype(args.dtype)
    model_kw = {**cfg.model, "img_size": args.global_size, "dtype": dtype, "attention_impl": args.attention_impl}
    model_kw.update({k: v for k, v in (("width", args.width), ("depth", args.depth), ("num_heads", args.heads)) if v})
    kw = {**cfg.method_kw, "global_views": 2, "freeze_last_layer_steps": cfg.method_kw.freeze_last_layer_steps
          if args.freeze_last_layer else 0}
    kw.update({k: getattr(args, k) for k in ("out_dim", "hidden_dim", "bottleneck_dim") if getattr(args, k)})
    method = methods.get("dino", backbone=models.get(**model_kw), dtype=dtype, **kw)
    tx, lr = optim.make(cfg.optimizer, args.batch, cfg.total_steps)
    g1, g2, local = (dict(v) for v in list(cfg.input.views)[:3])
    views = [{**g1, "crop_size": args.global_size}, {**g2, "crop_size": args.global_size}]
    views += [{**local, "crop_size": args.local_size}] * args.local_views
    return cfg, kw, method, tx, lr, views


def _example(args):
    return jnp.zeros((2, args.global_size, args.global_size, 3), jnp.float32)


# --- jaxssl ---------------------------------------------------------------------------------------
def jaxssl_step(args, images: np.ndarray, method, tx, lr, views):
    mesh = shd.make_mesh()
    state = _common.jaxssl_state(method, tx, _example(args), mesh, seed=INIT_SEED)
    train_step = step_lib.make_train_step(method, tx, views, mesh, lr)
    run, box = _common.jaxssl_runner(train_step, state, images, args.batch, mesh)
    return run, box, sum(x.size for x in jax.tree_util.tree_leaves(state.params["backbone"]))


# --- hand-written ---------------------------------------------------------------------------------
def handwritten_step(args, images: np.ndarray, net, kw, opt_cfg, total_steps: int, views):
    """`net` is jaxssl's student MultiCrop module (model definition shared; the rest by hand).

    Initialised with the key jaxssl's `init_state` gives `net.init`, and fed the same images and
    step key, so its first loss equals jaxssl's (printed below).
    """
    k, t_views, n_views, b = kw["out_dim"], 2, len(views), args.batch
    teacher_net = heads.MultiCrop(net.backbone.clone(drop_path_rate=0.0), net.head)  # no drop-path
    # optax AdamW with the config's numbers: lr 0 -> peak (warm-up) -> cosine, wd cosine 0.04 -> 0.4.
    peak = opt_cfg.base_lr * b / 256
    lr = optax.warmup_cosine_decay_schedule(0.0, peak, opt_cfg.warmup_steps, total_steps,
                                            peak * opt_cfg.end_lr_factor)
    wd0, wd1 = opt_cfg.weight_decay, opt_cfg.weight_decay_end
    wd = lambda t: wd1 + (wd0 - wd1) * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(t / total_steps, 1.0)))
    tx = optax.adamw(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=wd,
                     mask=lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p))
    variables = net.init(jax.random.split(jax.random.key(INIT_SEED))[0], _example(args), train=True)
    assert set(variables) == {"params"}, f"expected params only (no BatchNorm), got {set(variables)}"
    p = variables["params"]
    s = {"params": p, "teacher": jax.tree_util.tree_map(jnp.copy, p), "opt": tx.init(p),
         "center": jnp.zeros((k,), jnp.float32), "step": jnp.zeros((), jnp.int32)}
    warm_t, tau_t_end, warm_steps = kw["warmup_teacher_temperature"], kw["teacher_temperature"], \
        kw["warmup_teacher_temperature_steps"]
    freeze, clip = kw["freeze_last_layer_steps"], opt_cfg.grad_clip

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(s, x, key):
        key = jax.random.fold_in(key, s["step"])
        aug_key, drop_key = jax.random.split(key)
        crops = [_hand_augment(jax.random.fold_in(aug_key, i), x, v) for i, v in enumerate(views)]
        t = s["step"].astype(jnp.float32)
        tau_t = warm_t + (tau_t_end - warm_t) * jnp.minimum(t / max(warm_steps, 1), 1.0)
        # Teacher on the global crops only; its outputs are targets (no gradient to anything).
        t_logits = jax.lax.stop_gradient(
            teacher_net.apply({"params": s["teacher"]}, crops[:t_views], train=True)["projection"])
        t_logits = t_logits.reshape(t_views, b, k)
        targets = jax.nn.softmax((t_logits - s["center"]) / tau_t, axis=-1)  # centring + sharpening

        def loss_fn(params):
            if freeze:  # first epoch: the last layer gets no gradient
                last = params["head"]["last_layer"]
                last = jax.tree_util.tree_map(lambda w: jnp.where(s["step"] < freeze, jax.lax.stop_gradient(w), w),
                                              last)
                params = {**params, "head": {**params["head"], "last_layer": last}}
            z = net.apply({"params": params}, crops, train=True, rngs={"dropout": drop_key})["projection"]
            log_p = jax.nn.log_softmax(z.reshape(n_views, b, k) / kw["student_temperature"], axis=-1)
            # H(P_t(x_t), P_s(x_v)) averaged over the batch, for every pair with v != t (DINO Eq. 3).
            ce = -jnp.einsum("tbk,vbk->tv", targets, log_p) / b
            pairs = 1.0 - jnp.eye(t_views, n_views)
            return jnp.sum(ce * pairs) / jnp.sum(pairs)

        loss, g = jax.value_and_grad(loss_fn)(s["params"])
        if clip:  # DINO's clip_gradients: each tensor's gradient to norm <= clip
            g = jax.tree_util.tree_map(lambda x: x * jnp.minimum(1.0, clip / (jnp.linalg.norm(x.ravel()) + 1e-6)), g)
        u, opt = tx.update(g, s["opt"], s["params"])
        params = optax.apply_updates(s["params"], u)
        m = 1 - (1 - kw["base_momentum"]) * 0.5 * (jnp.cos(jnp.pi * jnp.minimum(t / total_steps, 1.0)) + 1)
        teacher = jax.tree_util.tree_map(lambda a, q: m * a + (1 - m) * q, s["teacher"], params)
        cm = kw["center_momentum"]
        center = cm * s["center"] + (1 - cm) * jnp.mean(t_logits.reshape(-1, k), axis=0)
        return {"params": params, "teacher": teacher, "opt": opt, "center": center, "step": s["step"] + 1}, loss

    rng, np_rng = jax.random.key(0), np.random.default_rng(0)
    box = {"state": s, "step": step}  # the jitted step: its cost analysis can be compared with jaxssl's

    def run():
        x = jnp.asarray(images[np_rng.choice(len(images), b, replace=False)])
        box["state"], box["loss"] = step(box["state"], x, rng)
        box.setdefault("first_loss", box["loss"])
        jax.block_until_ready(box["state"])

    return run, box


# --- lightly --------------------------------------------------------------------------------------
def lightly_steps(args, images: np.ndarray, cfg, kw):
    import torch

    import _peers_dino as peers
    torch.manual_seed(0)
    import _peers
    device = _common.torch_device(args)
    if _peers.setup_device(device).type == "cuda":
        # TF32 matmuls in float32, as XLA does by default on GPUs (torch's default is full fp32).
        torch.set_float32_matmul_precision("high")
    opt_cfg = cfg.optimizer
    warm_t, tau_t, warm_steps = (kw["warmup_teacher_temperature"], kw["teacher_temperature"],
                                 kw["warmup_teacher_temperature_steps"])
    teacher_temperature = lambda i: warm_t + (tau_t - warm_t) * min(i / max(warm_steps, 1), 1.0)
    vit = lambda drop_path_rate: peers.vit(args.global_size, drop_path_rate, args.width, args.depth, args.heads)
    model = peers.DINO(vit(cfg.model.drop_path_rate), vit(0.0), out_dim=kw["out_dim"], hidden_dim=kw["hidden_dim"],
                       bottleneck_dim=kw["bottleneck_dim"], norm_last_layer=kw["norm_last_layer"],
                       freeze_last_layer=1 if args.freeze_last_layer else -1,
                       student_temperature=kw["student_temperature"], center_momentum=kw["center_momentum"],
                       teacher_temperature=teacher_temperature).to(device)
    total = cfg.total_steps
    peak = opt_cfg.base_lr * args.batch / 256
    opt = peers.adamw(model, peak, opt_cfg.weight_decay, (opt_cfg.b1, opt_cfg.b2))
    step = peers.train_step_fn(
        model, opt, device=device, bf16=args.dtype == "bfloat16",
        lr=peers.cosine(peak, peak * opt_cfg.end_lr_factor, total, opt_cfg.warmup_steps),
        weight_decay=peers.cosine(opt_cfg.weight_decay, opt_cfg.weight_decay_end, total),
        total_steps=total, base_momentum=kw["base_momentum"], grad_clip=opt_cfg.grad_clip)
    tf = peers.transform(args.global_size, args.local_size, args.local_views)
    it = iter(peers.loader(images, tf, args.batch, args.workers, pin_memory=device.startswith("cuda")))
    box = {}

    def run():
        views, _ = next(it)
        box["loss"] = step(views).item()  # .item(): the step ends synchronised
        box.setdefault("first_loss", box["loss"])

    fixed = [v.to(device) for v in next(it)[0]]

    def run_fixed():
        box["loss_fixed"] = step(fixed).item()

    return run, run_fixed, box, sum(p.numel() for p in model.student_backbone.parameters())


def sustained_times(run, args) -> list[float]:
    """lightly with DataLoader workers, timed on its own: consecutive steps after the prefetch queue
    (filled while the other contenders ran) is drained, so the per-image host augmentation counts
    at its steady-state rate. Interleaved blocks of a few steps would read a full queue."""
    import time

    import _peers_dino
    drain = 2 * args.workers * _peers_dino.PREFETCH + args.warmup
    for _ in range(drain):
        run()
    times = []
    for _ in range(args.blocks * args.steps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    print(f"  lightly (DataLoader, {args.workers} workers) after {drain} untimed steps: "
          f"median {statistics.median(times):.3f}s", flush=True)
    return times


def step_costs(args, images, cfg, kw, method, tx, lr, views) -> None:
    """Same device work? XLA's cost analysis of the two steps' lowered (unoptimised) programs at
    the benchmark's shapes: equal counts put a measured time gap on the host side (dispatch,
    input placement) or the machine, not on extra computation in jaxssl's step."""
    mesh = shd.make_mesh()
    abstract = _common.jaxssl_state(method, tx, _example(args), mesh, seed=INIT_SEED, abstract=True)
    batch = {"image": jax.ShapeDtypeStruct(images[:args.batch].shape, jnp.uint8, sharding=shd.data_sharded(mesh))}
    lowered = {"jaxssl": step_lib.make_train_step(method, tx, views, mesh, lr).lower(abstract, batch, jax.random.key(0))}
    _, box = handwritten_step(args, images, method.net, kw, cfg.optimizer, cfg.total_steps, views)
    hand = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), box["state"])
    lowered["handwritten"] = box["step"].lower(hand, jax.ShapeDtypeStruct(batch["image"].shape, jnp.uint8),
                                               jax.random.key(0))
    keys = ("flops", "bytes accessed", "transcendentals")
    costs = {name: {k: float(_common.xla_cost(lo).get(k, float("nan"))) for k in keys} for name, lo in lowered.items()}
    print(report.step_cost({"costs": costs}))
    print("jaxssl / handwritten: " + ", ".join(f"{k} {costs['jaxssl'][k] / costs['handwritten'][k]:.4f}" for k in keys))
    _common.write_json(f"dino_step_cost_b{args.batch}{args.tag}", {"benchmark": "dino_step_cost", **vars(args),
                                                                   "costs": costs, **_common.machine_info()})


def main():
    p = _common.parser(__doc__)
    p.add_argument("--tiny", action="store_true", help="tiny ViT/head/images/batch: a CPU check of every path.")
    p.add_argument("--batch", type=int, default=None, help=f"images per step ({FULL['batch']}; tiny {TINY['batch']}).")
    p.add_argument("--global_size", type=int, default=None, help="global crop size (224; tiny 64).")
    p.add_argument("--local_size", type=int, default=None, help="local crop size (96; tiny 32).")
    p.add_argument("--local_views", type=int, default=6, help="local crops (lightly DINOTransform's default 6).")
    p.add_argument("--width", type=int, default=None, help="ViT width override (ViT-S: 384).")
    p.add_argument("--depth", type=int, default=None, help="ViT depth override (ViT-S: 12).")
    p.add_argument("--heads", type=int, default=None, help="ViT attention heads override (ViT-S: 6).")
    p.add_argument("--out_dim", type=int, default=None, help="DINO head K override (config: 65536).")
    p.add_argument("--hidden_dim", type=int, default=None, help="DINO head hidden width override (2048).")
    p.add_argument("--bottleneck_dim", type=int, default=None, help="DINO head bottleneck override (256).")
    p.add_argument("--attention_impl", default=None, choices=(None, "xla", "cudnn", "einsum"),
                   help="the ViT's attention (jaxssl and handwritten share the modules): default "
                        "jax.nn.dot_product_attention as JAX chooses; cudnn: flash attention (GPU, bfloat16).")
    p.add_argument("--freeze_last_layer", action="store_true", help="time a first-epoch step (last layer frozen).")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--blocks", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per contender per block.")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers on the lightly side (default: min(8, nproc - 2) on cuda, 0 on cpu).")
    p.add_argument("--frameworks", default="jaxssl,handwritten,lightly,lightly_model_only")
    p.add_argument("--cost_only", action="store_true",
                   help="run nothing: compare XLA's cost analysis (FLOPs, bytes, transcendentals) of the jaxssl "
                        "and hand-written steps' lowered programs (any backend; full size on a CPU in seconds).")
    args = p.parse_args()
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    wanted = args.frameworks.split(",")
    missing = [m for m in ("torch", "torchvision", "lightly", "timm") if importlib.util.find_spec(m) is None]
    if any(w.startswith("lightly") for w in wanted) and missing:
        print(f"{', '.join(missing)} not importable (use .venv-bench, see benchmarks/README.md; timm: "
              f"benchmarks/requirements.txt): lightly columns skipped.")
        wanted = [w for w in wanted if not w.startswith("lightly")]
    torch_wanted = any(w.startswith("lightly") for w in wanted)
    if torch_wanted:
        on_gpu = _common.torch_setup(args) != "cpu"
        if args.workers is None:
            args.workers = min(8, max((os.cpu_count() or 1) - 2, 0)) if on_gpu else 0
    # 256 px sources for 224 px crops (ImageNet's usual resize); enough that batches differ.
    images = load_images(max(512, 2 * args.batch), round(args.global_size * 8 / 7))

    cfg, kw, method, tx, lr, views = setup(args)  # builds modules only: no JAX backend yet
    if args.cost_only:
        return step_costs(args, images, cfg, kw, method, tx, lr, views)
    fns, boxes, info = {}, {}, {}
    torch_fns = {}
    if torch_wanted:
        # Before JAX starts its runtime threads: the DataLoader forks its (persistent) workers here.
        try:
            run, run_fixed, boxes["lightly"], info["torch_backbone_params"] = lightly_steps(args, images, cfg, kw)
            run_fixed()  # one step now: a torch-side failure drops the lightly columns, not the JAX ones
            torch_fns = {"lightly": run, "lightly_model_only": run_fixed}
        except Exception as e:  # noqa: BLE001  (reported, and recorded in the JSON)
            traceback.print_exc()
            info["lightly_error"] = f"{type(e).__name__}: {e}"
            print(f"lightly columns skipped: {info['lightly_error']}", flush=True)
            boxes.pop("lightly", None)
    if "jaxssl" in wanted or "handwritten" in wanted:
        fns["jaxssl"], boxes["jaxssl"], info["jax_backbone_params"] = jaxssl_step(args, images, method, tx, lr, views)
    if "handwritten" in wanted:
        fns["handwritten"], boxes["handwritten"] = handwritten_step(args, images, method.net, kw, cfg.optimizer,
                                                                    cfg.total_steps, views)
    if "jaxssl" not in wanted:
        fns.pop("jaxssl", None)
        boxes.pop("jaxssl", None)
    fns.update({n: f for n, f in torch_fns.items() if n in wanted})

    boxes = {n: boxes[n] for n in ("jaxssl", "handwritten", "lightly") if n in boxes}
    record = {"benchmark": "throughput_dino", "method": "dino", **vars(args), "out_dim_used": kw["out_dim"],
              "views": [v["crop_size"] for v in views], **info, **_common.machine_info()}
    print(f"DINO ViT-S/16{' (tiny)' if args.tiny else ''}: {args.global_size}px x 2 + {args.local_size}px x "
          f"{args.local_views}, batch {args.batch}, K {kw['out_dim']}, {args.dtype}; "
          f"load {record['load_avg_start']:.2f}", flush=True)
    sustained = fns.pop("lightly") if "lightly" in fns and args.workers > 0 else None
    times = _common.interleaved(fns, warmup=args.warmup, blocks=args.blocks, steps=args.steps)
    if sustained is not None:
        times = {**times, "lightly": sustained_times(sustained, args)}
    times = {n: times[n] for n in ("jaxssl", "handwritten", "lightly", "lightly_model_only") if n in times}
    stats = {n: _common.summary(t, args.batch) for n, t in times.items()}
    rows = []
    for n, s in stats.items():
        ref = {r: s["median_s"] / stats[r]["median_s"] for r in ("handwritten", "lightly") if r in stats}
        rows.append([n, s["median_s"], s["q1_s"], s["q3_s"], round(s["images_per_s"], 1),
                     *(f"{ref[r]:.3f}" if r in ref else "-" for r in ("handwritten", "lightly"))])
    print(_common.table(["contender", "median s/step", "q1", "q3", "images/s", "time / handwritten",
                         "time / lightly"], rows))
    losses = {n: float(b["loss"]) for n, b in boxes.items() if "loss" in b}
    if "loss_fixed" in boxes.get("lightly", {}):
        losses["lightly_model_only"] = float(boxes["lightly"]["loss_fixed"])
    first = {n: float(b["first_loss"]) for n, b in boxes.items() if "first_loss" in b}
    print(f"first losses: {first} (ln K = {math.log(kw['out_dim']):.3f}; jaxssl and handwritten start from the "
          f"same parameters, images and keys)")
    print("last losses:", losses)
    bad = [n for n, v in {**first, **losses}.items() if not math.isfinite(v)]
    if bad:
        print(f"WARNING: non-finite loss for {bad}")
    _common.write_json(f"throughput_dino_vits16_b{args.batch}{args.tag}",
                       {**record, "stats": stats, "times": times, "first_losses": first, "last_losses": losses})


if __name__ == "__main__":
    main()
