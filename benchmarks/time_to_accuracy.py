r"""Time to accuracy: CIFAR-10 kNN accuracy of SimCLR after a fixed wall-clock budget, jaxssl vs lightly.

Matched settings on both sides: ResNet-18 (CIFAR stem, `--width`), projector 512-128, NT-Xent
tau 0.5, batch `--batch`, LARS (lr 1.0 x batch/256, momentum 0.9, weight decay 1e-4 without
decay/adaptation for biases and BN) with the same warm-up + cosine schedule over `--sched_steps`
(configs/simclr_cifar10.py:cpu), SimCLR CIFAR augmentation (jaxssl: on device in the step;
lightly: SimCLRTransform in a DataLoader with `--workers`). Each side trains on the real
CIFAR-10 training set (/work/shared/data) until `--budget_s` seconds of wall time have passed,
compilation and data loading included. Then the same evaluation for both: backbone features
(eval-mode BN, normalisation only) of `--knn_train` training and `--knn_test` test images and
`jaxssl.evaluate.knn.knn` (k=20/T=0.07 and k=200/T=0.1).

  .venv-bench/bin/python benchmarks/time_to_accuracy.py --budget_s 300

Writes benchmarks/results/time_to_accuracy_<budget>s<tag>.json. CPU-expensive: run it last.
"""
from __future__ import annotations

import time

import _common
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import common, simclr_cifar10
from jaxssl import methods, models
from jaxssl.evaluate import features
from jaxssl.evaluate.knn import knn
from jaxssl.train import optim, sharding as shd, step as step_lib

PROTOCOLS = ((20, 0.07), (200, 0.1))


def optimizer_cfg(args):
    cfg = simclr_cifar10.get_config("cpu").optimizer
    return ml_collections.ConfigDict({**cfg.to_dict(), "warmup_steps": args.sched_steps // 10})


def train_jaxssl(args, x_train, deadline_s: float):
    backbone = models.get("resnet", variant="18", width=args.width, cifar_stem=True)
    method = methods.get("simclr", backbone=backbone, temperature=0.5, proj_hidden=(512,), proj_dim=128)
    tx, lr = optim.make(optimizer_cfg(args), args.batch, args.sched_steps)
    mesh = shd.make_mesh()
    views = [common.simclr_view(32)] * 2
    init = lambda r: step_lib.init_state(method, tx, r, jnp.zeros((2, 32, 32, 3)))
    state = jax.jit(init, out_shardings=shd.state_shardings(jax.eval_shape(init, jax.random.key(0)), mesh))(
        jax.random.key(0))
    train_step = step_lib.make_train_step(method, tx, views, mesh, lr)
    rng, np_rng = jax.random.key(1), np.random.default_rng(0)
    t0, steps, losses, first_step_s = time.perf_counter(), 0, [], None
    while time.perf_counter() - t0 < deadline_s:
        idx = np_rng.choice(len(x_train), args.batch, replace=False)
        state, metrics = train_step(state, shd.to_global({"image": x_train[idx]}, mesh), rng)
        steps += 1
        # Wait for every step: with JAX's asynchronous dispatch the loop would otherwise queue
        # steps past the deadline (the torch side is synchronous on CPU).
        loss = float(metrics["loss"])
        first_step_s = first_step_s or time.perf_counter() - t0
        if steps == 1 or steps % 10 == 0:
            losses.append((steps, loss))
    jax.block_until_ready(state)
    train_s = time.perf_counter() - t0
    variables = {"params": state.params, **state.model_state}
    feats = lambda x: features.of_images(variables, x, model=method.net, mesh=mesh, batch_size=500,
                                         view=dict(mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD))
    return dict(steps=steps, train_s=train_s, first_step_s=first_step_s, losses=losses), feats


def train_lightly(args, x_train, deadline_s: float):
    import torch

    import _peers
    torch.manual_seed(0)
    model = _peers.make_model("simclr", args.width, 512, 128)
    cfg = optimizer_cfg(args)
    peak = optim.peak_learning_rate(cfg, args.batch)
    lr = optim.learning_rate(cfg, args.batch, args.sched_steps)  # the same schedule, evaluated per step
    opt = _peers.lars(model, peak, cfg.weight_decay, cfg.momentum)
    step = _peers.train_step_fn(model, opt, "simclr")
    it = _peers.forever(_peers.loader(x_train, _peers.transform("simclr"), args.batch, args.workers))
    t0, steps, losses, first_step_s = time.perf_counter(), 0, [], None
    model.train()
    while time.perf_counter() - t0 < deadline_s:
        for g in opt.param_groups:
            g["lr"] = float(lr(steps))
        (x0, x1), _ = next(it)
        loss = step(x0, x1).item()
        steps += 1
        first_step_s = first_step_s or time.perf_counter() - t0
        if steps == 1 or steps % 10 == 0:
            losses.append((steps, loss))
    train_s = time.perf_counter() - t0
    feats = lambda x: _peers.features(model.backbone, x)
    return dict(steps=steps, train_s=train_s, first_step_s=first_step_s, losses=losses), feats


def main():
    p = _common.parser(__doc__)
    p.add_argument("--budget_s", type=float, default=300.0, help="training wall-clock budget per library.")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sched_steps", type=int, default=400, help="length of the warm-up+cosine lr schedule.")
    p.add_argument("--workers", type=int, default=0, help="lightly DataLoader workers.")
    p.add_argument("--knn_train", type=int, default=10_000)
    p.add_argument("--knn_test", type=int, default=2_000)
    p.add_argument("--libraries", default="jaxssl,lightly")
    args = p.parse_args()
    x_train, y_train, x_test, y_test = _common.load_cifar10()
    if "lightly" in args.libraries:
        import torch
        torch.set_num_threads(args.threads)
    # Fixed, class-balanced-enough evaluation subsets (the first rows of each array).
    kx, ky = x_train[:args.knn_train], y_train[:args.knn_train]
    tx_, ty = x_test[:args.knn_test], y_test[:args.knn_test]
    record = {"benchmark": "time_to_accuracy", **vars(args), **_common.machine_info()}
    results = {}
    for lib in args.libraries.split(","):
        print(f"{lib}: training for {args.budget_s:.0f} s (load {_common.loadavg():.2f})", flush=True)
        load0 = _common.loadavg()
        train = train_jaxssl if lib == "jaxssl" else train_lightly
        info, feats = train(args, x_train, args.budget_s)
        t = time.perf_counter()
        f_train, f_test = feats(kx), feats(tx_)
        accs = {f"knn_k{k}_t{tau}_top1": knn(f_train, ky, f_test, ty, k=k, temperature=tau, num_classes=10)["top1"]
                for k, tau in PROTOCOLS}
        results[lib] = {**info, **accs, "eval_s": time.perf_counter() - t, "load_avg_train_start": load0,
                        "load_avg_train_end": _common.loadavg()}
        print(f"  {lib}: {info['steps']} steps in {info['train_s']:.0f} s, first step {info['first_step_s']:.1f} s, "
              f"last loss {info['losses'][-1][1]:.3f}, kNN {accs}", flush=True)
    rows = [[lib, r["steps"], r["train_s"], r["first_step_s"], r["steps"] * args.batch / r["train_s"],
             r["losses"][-1][1], *(100 * r[f"knn_k{k}_t{tau}_top1"] for k, tau in PROTOCOLS)]
            for lib, r in results.items()]
    print(_common.table(["library", "steps", "train s", "first step s", "images/s", "last loss",
                         "kNN k=20 top-1 %", "kNN k=200 top-1 %"], rows))
    _common.write_json(f"time_to_accuracy_{args.budget_s:g}s{args.tag}", {**record, "results": results})


if __name__ == "__main__":
    main()
