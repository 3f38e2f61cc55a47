r"""Train-step throughput: jaxssl vs a hand-written jitted JAX step vs lightly (PyTorch).

Same model (ResNet-18, CIFAR stem, channel multiplier `--width`), batch, heads, two-view
augmentation and LARS for every contender, timed in one process with alternating blocks
(`_common.interleaved`), medians after warm-up:

- jaxssl: `methods.get(...)` + `optim.make(...)` + `train.step.make_train_step(...)` on a
  random batch drawn from uint8 images and placed with `train.sharding.to_global` every step;
  augmentation runs on device inside the step.
- handwritten: the smallest plain `jax.jit` step doing the same computation: the same flax
  modules and the same augmentation kernels (`jaxssl.augment.random_resized_crop`, ...) but no
  view dicts, Method, TrainState, metrics or shardings; NT-Xent / BYOL loss, EMA and the optax
  LARS chain written inline. jaxssl / handwritten is the library's overhead (target <= 1.05).
- lightly: `_peers.py`: torchvision BasicBlock ResNet-18 + lightly heads/loss/LARS, one batch
  from a DataLoader with lightly's SimCLRTransform/BYOLTransform (per-image, host) per step.
- lightly_model_only: the same torch step on one fixed, pre-augmented batch (no data loading):
  splits lightly's time into augmentation and model compute.

  .venv-bench/bin/python benchmarks/throughput.py --method simclr --width 0.125 --batch 256
  .venv-bench/bin/python benchmarks/throughput.py --method byol --width 0.125 --batch 256
  .venv/bin/python benchmarks/throughput.py --frameworks jaxssl,handwritten   # no torch needed

Writes benchmarks/results/throughput_<method>_w<width>_b<batch><tag>.json.
"""
from __future__ import annotations

import functools

import _common  # noqa: F401  (puts the repository root on sys.path)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from configs import common
from jaxssl import augment, methods, models
from jaxssl.train import optim, sharding as shd, step as step_lib

BASE_LR, WD, TEMPERATURE, MOMENTUM, TOTAL_STEPS = 0.3, 1e-4, 0.5, 0.99, 1000


def views_for(method: str, size: int):
    return [common.simclr_view(size)] * 2 if method == "simclr" else list(common.byol_views(size))


def load_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Real CIFAR-10 images (training part 1, else the test set) at 32 px; random uint8 images
    when no copy of the data is found or another size is asked for."""
    path = _common.data_file("cifar10_train_part1.npz", "cifar10_test.npz") if size == 32 else None
    if path:
        with np.load(path) as z:
            return z["x"][:n]
    print(f"using random uint8 images ({size} px): no CIFAR-10 copy found or size != 32")
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


# --- jaxssl ---------------------------------------------------------------------------------------
def jaxssl_method(method: str, args):
    """jaxssl's SimCLR/BYOL with the benchmark's ResNet-18, heads and compute dtype."""
    dtype = jnp.dtype(args.dtype)
    backbone = models.get("resnet", variant="18", width=args.width, cifar_stem=True, dtype=dtype)
    kw = dict(proj_hidden=(args.hidden,), proj_dim=args.out, dtype=dtype)
    if method == "simclr":
        return methods.get("simclr", backbone=backbone, temperature=TEMPERATURE, **kw)
    return methods.get("byol", backbone=backbone, total_steps=TOTAL_STEPS, pred_hidden=(args.hidden,),
                       base_momentum=MOMENTUM, **kw)


def jaxssl_step(method: str, args, images: np.ndarray):
    m = jaxssl_method(method, args)
    opt_cfg = ml_collections.ConfigDict(dict(name="lars", base_lr=BASE_LR, lr_scaling="none", warmup_steps=0,
                                             weight_decay=WD, momentum=0.9))
    tx, lr = optim.make(opt_cfg, args.batch, TOTAL_STEPS)
    mesh = shd.make_mesh()
    state = _common.jaxssl_state(m, tx, jnp.zeros((2, args.size, args.size, 3)), mesh, seed=1)
    train_step = step_lib.make_train_step(m, tx, views_for(method, args.size), mesh, lr)
    run, box = _common.jaxssl_runner(train_step, state, images, args.batch, mesh)
    return run, box, sum(x.size for x in jax.tree_util.tree_leaves(state.params))


# --- hand-written ---------------------------------------------------------------------------------
def _hand_augment(key, x, view):
    """The view's ops called directly (same kernels as jaxssl.augment.apply, no dict dispatch)."""
    k = jax.random.split(key, 6)
    x = augment.to_float(x)
    x = augment.random_resized_crop(k[0], x, size=view["crop_size"], scale=view["crop_scale"],
                                    ratio=view["crop_ratio"])
    x = augment.random_flip(k[1], x, p=0.5)
    x = augment.color_jitter(k[2], x, brightness=view["brightness"], contrast=view["contrast"],
                             saturation=view["saturation"], hue=view["hue"], p=0.8)
    x = augment.random_grayscale(k[3], x, p=0.2)
    if view["blur_p"]:
        x = augment.gaussian_blur(k[4], x, p=view["blur_p"])
    if view["solarize_p"]:
        x = augment.solarize(k[5], x, p=view["solarize_p"])
    return augment.normalize(x, view["mean"], view["std"])


def _nt_xent(z1, z2, t):
    z = jnp.concatenate([z1, z2])
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    n = z1.shape[0]
    sim = (z @ z.T) / t
    sim = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, sim)
    pos = jnp.concatenate([jnp.diagonal(sim, n), jnp.diagonal(sim, -n)])
    return jnp.mean(jax.nn.logsumexp(sim, axis=1) - pos)


def _byol_loss(p, z):
    cos = jnp.sum(p * z, -1) / (jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(z, axis=-1))
    return jnp.mean(2.0 - 2.0 * cos)


def handwritten_step(method: str, args, images: np.ndarray, net):
    """`net` is the same flax module jaxssl trains (model definition shared; glue by hand)."""
    views = views_for(method, args.size)
    mask = lambda p: jax.tree_util.tree_map(lambda x: x.ndim > 1, p)
    tx = optax.lars(BASE_LR, weight_decay=WD, weight_decay_mask=mask, trust_ratio_mask=mask, momentum=0.9)
    variables = net.init(jax.random.key(1), jnp.zeros((2, args.size, args.size, 3)), train=True)
    s = {"params": variables["params"], "bs": variables["batch_stats"], "opt": tx.init(variables["params"]),
         "step": jnp.zeros((), jnp.int32)}
    if method == "byol":
        s["t_params"], s["t_bs"] = jax.tree_util.tree_map(jnp.copy, (s["params"], s["bs"]))

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(s, x, key):
        key = jax.random.fold_in(key, s["step"])
        v1, v2 = (_hand_augment(jax.random.fold_in(key, i), x, v) for i, v in enumerate(views))

        def loss_fn(params):
            if method == "simclr":
                out, upd = net.apply({"params": params, "batch_stats": s["bs"]}, jnp.concatenate([v1, v2]),
                                     train=True, mutable=["batch_stats"])
                z = out["projection"]
                return _nt_xent(z[:len(x)], z[len(x):], TEMPERATURE), upd["batch_stats"]
            o1, u = net.apply({"params": params, "batch_stats": s["bs"]}, v1, train=True, mutable=["batch_stats"])
            o2, u = net.apply({"params": params, "batch_stats": u["batch_stats"]}, v2, train=True,
                              mutable=["batch_stats"])
            teacher = lambda v: net.apply({"params": s["t_params"], "batch_stats": s["t_bs"]}, v, train=True,
                                          mutable=["batch_stats"])[0]["projection"]
            # stop_gradient: the EMA targets are constants of the online update.
            z1, z2 = jax.lax.stop_gradient(teacher(v1)), jax.lax.stop_gradient(teacher(v2))
            return _byol_loss(o1["prediction"], z2) + _byol_loss(o2["prediction"], z1), u["batch_stats"]

        (loss, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(s["params"])
        u, opt = tx.update(g, s["opt"], s["params"])
        new = {**s, "params": optax.apply_updates(s["params"], u), "bs": bs, "opt": opt, "step": s["step"] + 1}
        if method == "byol":
            m = 1 - (1 - MOMENTUM) * (jnp.cos(jnp.pi * s["step"] / TOTAL_STEPS) + 1) / 2
            new["t_params"], new["t_bs"] = jax.tree_util.tree_map(
                lambda t, o: m * t + (1 - m) * o, (s["t_params"], s["t_bs"]), (new["params"], bs))
        return new, loss

    rng, np_rng = jax.random.key(0), np.random.default_rng(0)
    box = {"state": s}

    def run():
        x = jnp.asarray(images[np_rng.choice(len(images), args.batch, replace=False)])
        box["state"], box["loss"] = step(box["state"], x, rng)
        jax.block_until_ready(box["state"])

    return run, box


# --- lightly --------------------------------------------------------------------------------------
def lightly_steps(method: str, args, images: np.ndarray):
    import torch

    import _peers
    torch.manual_seed(0)
    dev = _peers.setup_device(_common.torch_device(args))
    model = _peers.make_model(method, args.width, args.hidden, args.out).to(dev)
    opt = _peers.lars(model, BASE_LR, WD)
    step = _peers.train_step_fn(model, opt, method, dev, args.dtype)
    it = _peers.forever(_peers.loader(images, _peers.transform(method, args.size), args.batch, args.workers,
                                      pin_memory=dev.type == "cuda"))
    box = {}

    def run():
        (x0, x1), _ = next(it)
        box["loss"] = step(x0, x1).item()

    (f0, f1), _ = next(it)
    f0, f1 = f0.to(dev), f1.to(dev)  # model only: no host-to-device copy either

    def run_fixed():
        box["loss_fixed"] = step(f0, f1).item()

    return run, run_fixed, box, _peers.params(model.backbone)


def main():
    p = _common.parser(__doc__)
    p.add_argument("--method", default="simclr", choices=("simclr", "byol"))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=float, default=0.125, help="ResNet-18 channel multiplier (1.0 = full).")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512, help="projector (and predictor) hidden width.")
    p.add_argument("--out", type=int, default=128, help="projection size.")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per contender per block.")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers on the lightly side (GPU: most cores).")
    p.add_argument("--frameworks", default="jaxssl,handwritten,lightly,lightly_model_only")
    args = p.parse_args()
    wanted = args.frameworks.split(",")
    if any(w.startswith("lightly") for w in wanted) and not _common.have_torch():
        print("torch/torchvision not importable (use .venv-bench, see benchmarks/README.md): lightly columns skipped.")
        wanted = [w for w in wanted if not w.startswith("lightly")]
    if any(w.startswith("lightly") for w in wanted):
        _common.torch_setup(args)
    images = load_images(max(4096, args.batch), args.size)

    fns, boxes, info = {}, {}, {}
    if "jaxssl" in wanted or "handwritten" in wanted:
        fns["jaxssl"], boxes["jaxssl"], info["jax_backbone_params"] = jaxssl_step(args.method, args, images)
    if "handwritten" in wanted:
        net = jaxssl_method(args.method, args).net
        fns["handwritten"], boxes["handwritten"] = handwritten_step(args.method, args, images, net)
    if "jaxssl" not in wanted:
        fns.pop("jaxssl", None)
    if any(w.startswith("lightly") for w in wanted):
        run, run_fixed, boxes["lightly"], info["torch_backbone_params"] = lightly_steps(args.method, args, images)
        if "lightly" in wanted:
            fns["lightly"] = run
        if "lightly_model_only" in wanted:
            fns["lightly_model_only"] = run_fixed

    record = {"benchmark": "throughput", "method": args.method, **vars(args), **info, **_common.machine_info()}
    print(f"{args.method}: ResNet-18 width {args.width}, {args.size}px, batch {args.batch}, {args.dtype}, "
          f"jax on {jax.devices()[0].device_kind}; "
          f"load {record['load_avg_start']:.2f}", flush=True)
    times = _common.interleaved(fns, warmup=args.warmup, blocks=args.blocks, steps=args.steps)
    stats = {n: _common.summary(t, args.batch) for n, t in times.items()}
    rows = []
    for n, s in stats.items():
        ref = {k: s["median_s"] / stats[k]["median_s"] for k in ("handwritten", "lightly") if k in stats}
        rows.append([n, s["median_s"], s["q1_s"], s["q3_s"], round(s["images_per_s"]),
                     *(f"{ref[k]:.3f}" if k in ref else "-" for k in ("handwritten", "lightly"))])
    print(_common.table(["contender", "median s/step", "q1", "q3", "images/s", "time / handwritten",
                         "time / lightly"], rows))
    losses = {n: float(b["loss"]) for n, b in boxes.items() if "loss" in b}
    print("last losses:", losses)
    tag = f"throughput_{args.method}_w{args.width:g}_b{args.batch}{args.tag}"
    _common.write_json(tag, {**record, "stats": stats, "times": times, "last_losses": losses})


if __name__ == "__main__":
    main()
