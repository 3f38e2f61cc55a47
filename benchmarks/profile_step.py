r"""Per-phase profile of one SimCLR step, jaxssl vs PyTorch: where does the time go?

Phases, each timed on its own (interleaved blocks, medians after warm-up) on the same batch:
augment (jaxssl only: `augment.make_views`, jitted), forward (train mode, both views in one
pass), forward+backward (loss and gradients), full step (jaxssl `make_train_step` / torch with
`LARS.step`). The differences between rows are the cost of each phase; comparing columns shows
which phase makes one library slower.

  .venv-bench/bin/python benchmarks/profile_step.py --width 1.0 --batch 64 --threads 1

Writes benchmarks/results/profile_step_w<width>_b<batch><tag>.json.
"""
from __future__ import annotations

import functools

import _common
import jax
import jax.numpy as jnp

from jaxssl import augment, losses
from throughput import BASE_LR, TEMPERATURE, WD, jaxssl_method, jaxssl_step, load_images, views_for


def main():
    p = _common.parser(__doc__)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--out", type=int, default=128)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()
    import torch

    import _peers
    torch.set_num_threads(args.threads)
    images = load_images(max(1024, args.batch), args.size)
    x = images[:args.batch]
    views = views_for("simclr", args.size)

    # --- jaxssl phases ---
    full, box, _ = jaxssl_step("simclr", args, images)
    state = box["state"]
    net = jaxssl_method("simclr", args).net  # the module jaxssl_step trains
    # A copy: `full` donates (frees) the state it was given.
    variables = jax.tree_util.tree_map(jnp.copy, {"params": state.params, **state.model_state})
    aug = jax.jit(functools.partial(augment.make_views, views=views))
    v = jnp.concatenate(aug(jax.random.key(0), jnp.asarray(x)))

    def loss(params, v):
        out, _ = net.apply({**variables, "params": params}, v, train=True, mutable=["batch_stats"])
        z = out["projection"]
        return jnp.mean(losses.nt_xent(z[:args.batch], z[args.batch:], TEMPERATURE))

    fwd = jax.jit(loss)
    fwd_bwd = jax.jit(jax.value_and_grad(loss))
    xj = jnp.asarray(x)
    fns = {"jax_augment": lambda: jax.block_until_ready(aug(jax.random.key(1), xj)),
           "jax_forward": lambda: jax.block_until_ready(fwd(variables["params"], v)),
           "jax_forward_backward": lambda: jax.block_until_ready(fwd_bwd(variables["params"], v)),
           "jax_full_step": full}

    # --- torch phases ---
    torch.manual_seed(0)
    model = _peers.make_model("simclr", args.width, args.hidden, args.out)
    opt = _peers.lars(model, BASE_LR, WD)
    (t0, t1), _ = next(iter(_peers.loader(images, _peers.transform("simclr", args.size), args.batch, 0)))

    def t_fwd():
        with torch.no_grad():  # graph building off: the forward arithmetic only
            model.loss(t0, t1).item()

    def t_fwd_bwd():
        model.zero_grad(set_to_none=True)
        model.loss(t0, t1).backward()

    step = _peers.train_step_fn(model, opt, "simclr")
    fns.update({"torch_forward": t_fwd, "torch_forward_backward": t_fwd_bwd,
                "torch_full_step_no_data": lambda: step(t0, t1).item()})
    record = {"benchmark": "profile_step", **vars(args), **_common.machine_info()}
    times = _common.interleaved(fns, warmup=2, blocks=args.blocks, steps=args.steps)
    stats = {n: _common.summary(t, args.batch) for n, t in times.items()}
    print(_common.table(["phase", "median s", "q1", "q3"],
                        [[n, s["median_s"], s["q1_s"], s["q3_s"]] for n, s in stats.items()]))
    _common.write_json(f"profile_step_w{args.width:g}_b{args.batch}{args.tag}",
                       {**record, "stats": stats, "times": times})


if __name__ == "__main__":
    main()
