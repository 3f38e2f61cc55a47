r"""Augmentation throughput: jaxssl's on-device two-view pipeline vs torchvision/lightly DataLoaders.

The same work on the same images and cores: two SimCLR views per image (random resized crop
scale 0.08-1, flip 0.5, colour jitter 0.4/0.4/0.4/0.1 with p=0.8, grayscale 0.2, normalise) of
a batch of uint8 CIFAR-10 images (or 224 px Imagenette images with --size 224).

- jaxssl: `jax.jit(augment.make_views)` on a uint8 batch gathered from a NumPy array and put on
  the device every call (`block_until_ready`): what `train.step` runs before the model.
- torchvision_v2_nw{0,2}: `torchvision.transforms.v2` on uint8 tensors, one image at a time in a
  `Dataset`, batched by a `DataLoader` with 0 or 2 worker processes.
- lightly_nw{0,2}: lightly's `SimCLRTransform` (PIL, torchvision v1), DataLoader 0 or 2 workers.

Reported as source images/s (each gives two views). Target: jaxssl >= 3x torchvision on the same
cores. DataLoader contenders with workers are timed per block on a fresh iterator, worker
start-up included (persistent workers would prefetch while the other contenders run).

  .venv-bench/bin/python benchmarks/augment_throughput.py --batch 256
  .venv-bench/bin/python benchmarks/augment_throughput.py --size 224 --batch 64

Writes benchmarks/results/augment_throughput_<size>px_b<batch><tag>.json.
"""
from __future__ import annotations

import functools
import time

import _common
import jax
import numpy as np

from configs import common
from jaxssl import augment

JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def load(size: int, n: int, min_n: int = 0) -> np.ndarray:
    names = (("cifar10_train_part1.npz", "cifar10_test.npz") if size == 32 else ("imagenette_val_224_sample.npz",))
    path = _common.data_file(*names)
    if path is None:
        raise SystemExit(f"none of {names} found in $BENCH_DATA_DIR, ../shared/data or /work/shared/data.")
    with np.load(path) as z:
        x = z["x"][:n]
    if x.shape[1] != size:
        raise SystemExit(f"{path} holds {x.shape[1]} px images; use --size 32 or 224.")
    if len(x) < min_n:  # 20 Imagenette images at 224 px: repeated, so that one epoch holds a block's batches
        x = np.concatenate([x] * -(-min_n // len(x)))
    return x


def jaxssl_fn(images: np.ndarray, batch: int):
    size = images.shape[1]
    view = {**common.simclr_view(size, strength=0.5), **JITTER}
    fn = jax.jit(functools.partial(augment.make_views, views=[view, view]))
    rng, key = np.random.default_rng(0), jax.random.key(0)
    state = {"i": 0}

    def run():
        x = jax.device_put(images[rng.choice(len(images), batch, replace=False)])
        state["i"] += 1
        jax.block_until_ready(fn(jax.random.fold_in(key, state["i"]), x))

    return run


def torch_fns(images: np.ndarray, batch: int, workers: int, kind: str):
    import torch
    from torchvision.transforms import v2

    import _peers
    size = images.shape[1]
    if kind == "torchvision_v2":
        one = v2.Compose([v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                          v2.RandomApply([v2.ColorJitter(**JITTER)], p=0.8), v2.RandomGrayscale(p=0.2),
                          v2.ToDtype(torch.float32, scale=True), v2.Normalize(_peers.CIFAR10_MEAN, _peers.CIFAR10_STD)])

        class Views(torch.utils.data.Dataset):
            def __len__(self):
                return len(images)

            def __getitem__(self, i):
                x = torch.from_numpy(images[i]).permute(2, 0, 1)  # uint8 CHW, no PIL
                return one(x), one(x)
        dl = torch.utils.data.DataLoader(Views(), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers)
    else:
        from lightly import transforms as T
        tf = T.SimCLRTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0,
                               normalize={"mean": list(_peers.CIFAR10_MEAN), "std": list(_peers.CIFAR10_STD)})
        dl = _peers.loader(images, tf, batch, workers, persistent=False)
    if workers == 0:
        it = _peers.forever(dl)
        return lambda: next(it)

    def block(steps: int):
        # A fresh iterator per block (torch's default: non-persistent workers, forked), timed
        # from its creation to its `steps`-th batch: worker start-up is included, and no batch
        # can have been prepared while the other contenders ran.
        it = iter(dl)
        for _ in range(steps):
            next(it)
        del it

    return block


def main():
    p = _common.parser(__doc__)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--steps", type=int, default=6, help="timed batches per contender per block.")
    p.add_argument("--contenders", default="jaxssl,torchvision_v2_nw0,torchvision_v2_nw2,lightly_nw0,lightly_nw2")
    args = p.parse_args()
    wanted = args.contenders.split(",")
    images = load(args.size, 10_000 if args.size == 32 else 100_000, min_n=(args.steps + 2) * args.batch)
    fns, blocks = {}, {}
    if "jaxssl" in wanted:
        fns["jaxssl"] = jaxssl_fn(images, args.batch)
    torch_wanted = [w for w in wanted if w != "jaxssl"]
    if torch_wanted:
        import torch
        torch.set_num_threads(args.threads)
    for w in torch_wanted:
        kind, nw = w.rsplit("_nw", 1)
        fn = torch_fns(images, args.batch, int(nw), kind)
        (blocks if int(nw) else fns)[w] = fn
    record = {"benchmark": "augment_throughput", **vars(args), "n_images": len(images), **_common.machine_info()}
    print(f"two SimCLR views of {args.size}px uint8 images, batch {args.batch}; load {record['load_avg_start']:.2f}")
    # Per-call contenders (jaxssl, DataLoader without workers) are timed per batch after one
    # warm-up call; DataLoader contenders with workers per block of `steps` batches (time / steps).
    times: dict[str, list[float]] = {n: [] for n in [*fns, *blocks]}
    for b in range(args.blocks):
        t = _common.interleaved(fns, warmup=1 if b == 0 else 0, blocks=1, steps=args.steps, log=False)
        for name in fns:
            times[name] += t[name]
        for name, block in blocks.items():
            t0 = time.perf_counter()
            block(args.steps)
            times[name].append((time.perf_counter() - t0) / args.steps)
        print(f"  block {b + 1}: " + ", ".join(f"{n} {args.batch / np.median(v):.0f} img/s" for n, v in times.items())
              + f" (load {_common.loadavg():.2f})", flush=True)
    stats = {n: _common.summary(t, args.batch) for n, t in times.items()}
    best_torch = max((s["images_per_s"] for n, s in stats.items() if n != "jaxssl"), default=None)
    rows = [[n, s["median_s"], round(s["images_per_s"]), round(2 * s["images_per_s"]),
             f"{stats['jaxssl']['images_per_s'] / s['images_per_s']:.2f}" if "jaxssl" in stats else "-"]
            for n, s in stats.items()]
    print(_common.table(["contender", "median s/batch", "images/s", "views/s", "jaxssl speed-up"], rows))
    if best_torch and "jaxssl" in stats:
        print(f"jaxssl / best PyTorch contender: {stats['jaxssl']['images_per_s'] / best_torch:.2f}x (target >= 3x)")
    _common.write_json(f"augment_throughput_{args.size}px_b{args.batch}{args.tag}",
                       {**record, "stats": stats, "times": times})


if __name__ == "__main__":
    main()
