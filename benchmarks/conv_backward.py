r"""Why is XLA:CPU's convolution backward slow, and does an im2col formulation close the gap? (issue #10)

For NHWC convolutions of ResNet-18 shapes, times one call of `jax.jit(jax.value_and_grad(f,
argnums=(0, 1)))` with f(x, w) = sum(conv(x, w)**2), i.e. forward + the gradients with respect
to the input AND the kernel, for these implementations of conv (same x, w; SAME padding):

  lax          `jax.lax.conv_general_dilated` (what flax `nn.Conv` runs); XLA differentiates it
               into a transposed conv (dx) and a batch-contracting conv (dW).
  lax fwd-only the loss alone, no gradient. XLA fuses sum(y**2) into the conv (one YNNPACK
               fusion) and never writes y, so this is a lower bound on the forward: with 64
               output channels a conv that returns y took ~2x as long (~96 vs ~200 GFLOP/s).
  lax dx-only  the same, gradient with respect to x only   } diagnosis: which of the two
  lax dW-only  the same, gradient with respect to w only   } backward convs is slow?
  im2col       y = P(x) @ W.reshape(kh*kw*C, F), P(x) (B,Ho,Wo,kh*kw*C) = the kh*kw shifted
               (strided) slices of the padded x concatenated on channels. Autodiff gives
               dW = P(x)^T dy (one matmul) and dx = P^T(dy @ W^T) (a matmul + kh*kw pad-adds).
  lax+mm dW    `jax.custom_vjp`: forward `lax`, dW by the im2col matmul P(x)^T dy, dx by XLA's
               own transposed conv.
  lax+im2col   `jax.custom_vjp`: forward `lax`, both gradients from the vjp of `im2col`.
  torch        (with torch installed) `F.conv2d` NCHW, `torch.set_num_threads(--threads)`;
               `torch fwd-only` without autograd. SAME padding is an explicit `F.pad` copy
               (torch's own `padding=` is symmetric), which adds a little to these rows.

Every JAX variant's loss and gradients are checked against `lax` (max relative error printed).
Rows: the `--cases` below. JAX uses every core of the machine; torch uses `--threads`. The
minor page faults per call are counted too (process-wide): glibc hands blocks above its mmap
threshold back to the OS on free, so every fresh large buffer is faulted in again, 4 KiB at a
time; `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (transparent huge pages) is one way to cut that.

  .venv-bench/bin/python benchmarks/conv_backward.py --threads 1
  .venv/bin/python benchmarks/conv_backward.py            # JAX only

Writes benchmarks/results/conv_backward<tag>.json.
"""
from __future__ import annotations

import functools
import resource
import statistics

import _common
import jax
import jax.numpy as jnp
import numpy as np

# name -> (height=width, in channels, out channels, kernel, stride, how many ResNet-18 (CIFAR stem,
# width 1) has): every conv shape of that network, so the count-weighted sum of a row is the
# network's convolution cost at that batch.
CASES = {
    "stem_3x3_s1_32px_3to64c": (32, 3, 64, 3, 1, 1),
    "3x3_s1_32px_64c": (32, 64, 64, 3, 1, 4),  # stage 1
    "3x3_s2_32px_64to128c": (32, 64, 128, 3, 2, 1),  # stage 2 first conv
    "1x1_s2_32px_64to128c": (32, 64, 128, 1, 2, 1),  # stage 2 projection shortcut
    "3x3_s1_16px_128c": (16, 128, 128, 3, 1, 3),
    "3x3_s2_16px_128to256c": (16, 128, 256, 3, 2, 1),
    "1x1_s2_16px_128to256c": (16, 128, 256, 1, 2, 1),
    "3x3_s1_8px_256c": (8, 256, 256, 3, 1, 3),
    "3x3_s2_8px_256to512c": (8, 256, 512, 3, 2, 1),
    "1x1_s2_8px_256to512c": (8, 256, 512, 1, 2, 1),
    "3x3_s1_4px_512c": (4, 512, 512, 3, 1, 3),
}
DN = ("NHWC", "HWIO", "NHWC")


def _pads(x_shape, k, s):
    """SAME padding of the two spatial dims: ((lo, hi), (lo, hi)), as lax/flax compute it."""
    return tuple(jax.lax.padtype_to_pads(x_shape[1:3], (k, k), (s, s), "SAME"))


def lax_conv(x, w, s):
    """y[b,ho,wo,f] = sum_{i,j,c} x_pad[b, s*ho+i, s*wo+j, c] w[i,j,c,f]: NHWC x, HWIO w, SAME."""
    return jax.lax.conv_general_dilated(x, w, (s, s), _pads(x.shape, w.shape[0], s), dimension_numbers=DN)


def patches(x, k, s, pads):
    """P(x): (B,H,W,C) -> (B,Ho,Wo,k*k*C); channel index (i*k + j)*C + c = x_pad[b, s*ho+i, s*wo+j, c]."""
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    b, hp, wp, c = x.shape
    ho, wo = (hp - k) // s + 1, (wp - k) // s + 1
    cols = [jax.lax.slice(x, (0, i, j, 0), (b, i + (ho - 1) * s + 1, j + (wo - 1) * s + 1, c), (1, s, s, 1))
            for i in range(k) for j in range(k)]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def im2col_conv(x, w, s):
    """The same conv as `lax_conv`: P(x) @ W with W (k,k,C,F) reshaped row-major to (k*k*C, F)."""
    k, _, c, f = w.shape
    return jnp.dot(patches(x, k, s, _pads(x.shape, k, s)), w.reshape(k * k * c, f))


def custom_conv(dx_impl: str):
    """lax forward; dW = P(x)^T dy by one matmul; dx by XLA's transposed conv or by im2col's vjp."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def conv(x, w, s):
        return lax_conv(x, w, s)

    def fwd(x, w, s):
        return lax_conv(x, w, s), (x, w)

    def bwd(s, res, dy):
        x, w = res
        if dx_impl == "im2col":
            return jax.vjp(lambda x, w: im2col_conv(x, w, s), x, w)[1](dy)
        k = w.shape[0]
        dw = jnp.einsum("bhwp,bhwf->pf", patches(x, k, s, _pads(x.shape, k, s)), dy).reshape(w.shape)
        dx = jax.vjp(lambda x: lax_conv(x, w, s), x)[1](dy)[0]
        return dx, dw

    conv.defvjp(fwd, bwd)
    return conv


def jax_variants(s):
    """name -> jitted (x, w) -> (loss, (dx, dw)); a gradient a row does not compute is None."""
    def vg(conv, argnums=(0, 1)):
        loss = lambda x, w: jnp.sum(jnp.square(conv(x, w, s)))
        g = jax.value_and_grad(loss, argnums=argnums)
        if argnums == 0:
            return jax.jit(lambda x, w: (lambda l, dx: (l, (dx, None)))(*g(x, w)))
        if argnums == 1:
            return jax.jit(lambda x, w: (lambda l, dw: (l, (None, dw)))(*g(x, w)))
        return jax.jit(g)
    return {
        "lax": vg(lax_conv),
        "lax fwd-only": jax.jit(lambda x, w: (jnp.sum(jnp.square(lax_conv(x, w, s))), (None, None))),
        "lax dx-only": vg(lax_conv, 0),
        "lax dW-only": vg(lax_conv, 1),
        "im2col": vg(im2col_conv),
        "lax+mm dW": vg(custom_conv("xla")),
        "lax+im2col": vg(custom_conv("im2col")),
    }


def torch_fn(x, w, s, threads, grad=True):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy(), requires_grad=True)  # NCHW
    wt = torch.tensor(np.asarray(w).transpose(3, 2, 0, 1).copy(), requires_grad=True)  # OIHW
    k = w.shape[0]
    # torch's `padding=` is symmetric; SAME for even sizes and stride 2 pads (0, 1): pad explicitly.
    (plo, phi), (qlo, qhi) = _pads(x.shape, k, s)

    def run():
        xt.grad = wt.grad = None
        with torch.set_grad_enabled(grad):
            y = F.conv2d(F.pad(xt, (qlo, qhi, plo, phi)), wt, stride=s)
            loss = (y * y).sum()
        if grad:
            loss.backward()
        return loss, xt.grad, wt.grad
    return run


def counted(fn, faults: list):
    """`fn` that appends the process's minor page faults during each call to `faults`.

    A fresh large buffer costs one fault per 4 KiB page on first touch (glibc returns big blocks
    to the OS on free), which on this machine is a visible part of a conv's time.
    """
    def run():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out = fn()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return out
    return run


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


def network_totals(record: dict) -> dict[str, float]:
    """sum over cases of count * median time, per implementation found in every case (a missing
    `lax+im2col` 1x1 row counts as `im2col`, the same gradients); `best jax` picks the fastest
    full-gradient JAX row of each case."""
    full = ("lax", "im2col", "lax+mm dW", "lax+im2col")
    totals: dict[str, float] = {}
    for name in (*full, "torch", "lax fwd-only", "torch fwd-only"):
        cost = 0.0
        for r in record.values():
            st = r["stats"].get(name) or (r["stats"].get("im2col") if name == "lax+im2col" else None)
            if st is None:
                break
            cost += r["shape"]["count"] * st["median_s"]
        else:
            totals[name] = cost
    totals["best jax"] = sum(r["shape"]["count"] * min(r["stats"][n]["median_s"] for n in full if n in r["stats"])
                             for r in record.values())
    return totals


def main():
    p = _common.parser(__doc__)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {list(CASES)}")
    p.add_argument("--batch", type=int, default=128, help="images (128 = a SimCLR step at batch 64, 2 views).")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--no_torch", action="store_true")
    args = p.parse_args()
    use_torch = not args.no_torch and _common.have_torch()
    if use_torch:
        import torch  # noqa: F401 (recorded by machine_info)
    info = _common.machine_info()
    rows, record = [], {}
    for case in args.cases.split(","):
        hw, c, f, k, s, count = CASES[case]
        b = args.batch
        kx, kw = jax.random.split(jax.random.key(0))
        x = jax.random.normal(kx, (b, hw, hw, c), jnp.float32)
        w = jax.random.normal(kw, (k, k, c, f), jnp.float32) * (2.0 / (k * k * c)) ** 0.5
        variants = jax_variants(s)
        if k == 1:  # lax+im2col == im2col's gradients; keep the table short
            variants.pop("lax+im2col")
        ref = jax.block_until_ready(variants["lax"](x, w))
        errs, fns, faults = {}, {}, {}
        for name, fn in variants.items():
            out = fn(x, w)
            errs[name] = max([rel_err(out[0], ref[0]),
                              *(rel_err(g, r) for g, r in zip(out[1], ref[1]) if g is not None)])
            fns[name] = counted(lambda fn=fn: jax.block_until_ready(fn(x, w)), faults.setdefault(name, []))
        if use_torch:
            fns["torch"] = counted(torch_fn(x, w, s, args.threads), faults.setdefault("torch", []))
            fns["torch fwd-only"] = counted(torch_fn(x, w, s, args.threads, grad=False),
                                            faults.setdefault("torch fwd-only", []))
            out = fns["torch"]()
            errs["torch"] = max(rel_err(out[0].detach().numpy(), ref[0]),
                                rel_err(out[1].numpy().transpose(0, 2, 3, 1), ref[1][0]),
                                rel_err(out[2].numpy().transpose(2, 3, 1, 0), ref[1][1]))
            errs["torch fwd-only"] = rel_err(fns["torch fwd-only"]()[0].numpy(), ref[0])
        print(f"{case}: x {x.shape}, w {w.shape}, stride {s} (load {_common.loadavg():.2f})", flush=True)
        times = _common.interleaved(fns, warmup=args.warmup, blocks=args.blocks, steps=args.steps)
        base = statistics.median(times["lax"])
        stats = {}
        for name, t in times.items():
            med = statistics.median(t)
            flt = statistics.median(faults[name][-len(t):])  # the timed calls only
            stats[name] = dict(median_s=med, vs_lax=base / med, max_rel_err=errs[name], minor_faults=flt, times=t)
            rows.append([case, name, med, f"{base / med:.2f}x", int(flt), f"{errs[name]:.1e}"])
        record[case] = dict(shape=dict(batch=b, hw=hw, cin=c, cout=f, kernel=k, stride=s, count=count), stats=stats)
    print(_common.table(["case", "implementation", "median s (fwd + dx + dW)", "speed vs lax",
                         "page faults / call", "max rel err vs lax"], rows))
    totals = network_totals(record)
    if totals:
        print(f"\nCount-weighted sum over the cases run ({len(record)} shapes, "
              f"{sum(r['shape']['count'] for r in record.values())} convs):")
        base = totals["lax"]
        print(_common.table(["implementation", "total s", "speed vs lax"],
                            [[n, v, f"{base / v:.2f}x"] for n, v in totals.items()]))
    _common.write_json(f"conv_backward{args.tag}", {"benchmark": "conv_backward", **vars(args), **info,
                                                     "torch_used": use_torch, "cases": record,
                                                     "network_totals": totals})


if __name__ == "__main__":
    main()
