r"""View statistics: jaxssl's on-device augmentation against lightly's transforms, op by op (issue 19).

`learning_parity.py --peer-views jaxssl` showed that VICReg's 1-2 kNN points below lightly come
from the views, not the training. This script looks for the op: for each augmentation op alone
(probability 1, everything else off) and for whole recipes, it augments the same CIFAR-10 images
once with `jaxssl.augment.apply` and once with lightly's transform built from the same view dict
(`_peers.view_transform`, the one `learning_parity.py` trains with), and prints, per side, the
mean pixel value, the per-image standard deviation, the colourfulness (standard deviation over
the three channels), the mean absolute change from the input, the sharpness (mean absolute
horizontal difference of neighbouring pixels) and the fraction of saturated pixels (0 or 255),
all on [0, 1] pixels before normalisation.

Random ops are compared as distributions (different random draws on each side): with the default
2,000 images a difference below about 0.003 in the mean is sampling noise. Deterministic ops at
probability 1 (grayscale, solarisation, the identity) must agree exactly, up to PIL's rounding
to uint8 after each op (at most 0.5/255 per op; jaxssl stays in float32).

  PYTHONPATH=. .venv-bench/bin/python benchmarks/view_stats.py                 # every op and recipe
  PYTHONPATH=. .venv-bench/bin/python benchmarks/view_stats.py --ops crop,vicreg --images 5000
  PYTHONPATH=. .venv-bench/bin/python benchmarks/view_stats.py --ops identity --paired --tag _paired

`--paired` also applies each colour-jitter op with the same factor on both sides and compares the
views pixel by pixel (`paired`): the ops' arithmetic, not their random draws.

Writes benchmarks/results/view_stats<tag>.json and prints a markdown table.
"""
from __future__ import annotations

import _common
import numpy as np

# Everything off, the whole image at its size, no normalisation: each entry below switches on one op.
_OFF = dict(crop_size=32, crop_scale=(1.0, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.0, brightness=0.0,
            contrast=0.0, saturation=0.0, hue=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0,
            mean=None, std=None)


def _recipe(name: str) -> dict:
    """A method's first CIFAR-10 `:cpu` view, unnormalised (the views `learning_parity.py` trains on)."""
    import importlib
    view = dict(importlib.import_module(f"configs.{name}_cifar10").get_config("cpu").input.views[0])
    return {**view, "mean": None, "std": None}


OPS = {
    "identity": lambda: {},
    "crop": lambda: dict(crop_scale=(0.2, 1.0)),
    "crop_0.08": lambda: dict(crop_scale=(0.08, 1.0)),
    "flip": lambda: dict(flip_p=1.0),
    "brightness": lambda: dict(brightness=0.4, jitter_p=1.0),
    "contrast": lambda: dict(contrast=0.4, jitter_p=1.0),
    "saturation": lambda: dict(saturation=0.2, jitter_p=1.0),
    "hue": lambda: dict(hue=0.1, jitter_p=1.0),
    "jitter": lambda: dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, jitter_p=1.0),
    "grayscale": lambda: dict(grayscale_p=1.0),
    "solarize": lambda: dict(solarize_p=1.0),
    "vicreg": lambda: _recipe("vicreg"),
    "barlow_twins": lambda: _recipe("barlow_twins"),
    "simclr": lambda: _recipe("simclr"),
}
STATS = ("mean", "std", "colour", "change", "sharpness", "saturated")


def stats(out: np.ndarray, src: np.ndarray) -> dict[str, float]:
    """The statistics of the docstring for views `out` (N, H, W, 3) in [0, 1] of images `src` in [0, 1]."""
    out, src = out.astype(np.float64), src.astype(np.float64)
    change = np.abs(out - src).mean() if out.shape == src.shape else float("nan")
    return {"mean": out.mean(), "std": out.std(axis=(1, 2, 3)).mean(), "colour": out.std(axis=-1).mean(),
            "change": change, "sharpness": np.abs(np.diff(out, axis=2)).mean(),
            "saturated": ((out <= 0.5 / 255) | (out >= 254.5 / 255)).mean()}


PAIRED_FACTORS = {"brightness": (0.6, 0.8, 1.2, 1.4), "contrast": (0.6, 0.8, 1.2, 1.4),
                  "saturation": (0.8, 0.9, 1.1, 1.2), "hue": (-0.1, -0.05, 0.05, 0.1)}


def paired(images: np.ndarray) -> list[dict]:
    """Each colour-jitter op alone with the *same* factor on both sides (the ranges of VICReg's view):
    `jaxssl.augment.color_jitter` with a one-point range against torchvision's functional op on the PIL
    image (what lightly's `ColorJitter` calls). Per op and factor, the largest and the mean absolute
    pixel difference and the mean signed difference (jaxssl minus lightly), in grey levels (1/255)."""
    import jax
    import torchvision.transforms.v2.functional as F
    from PIL import Image

    from jaxssl import augment
    neutral = dict(brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=(0.0, 0.0))
    fns = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast, "saturation": F.adjust_saturation,
           "hue": F.adjust_hue}
    rows = []
    for op, factors in PAIRED_FACTORS.items():
        for f in factors:
            ours = np.asarray(augment.color_jitter(jax.random.key(0), augment.to_float(images),
                                                   **{**neutral, op: (f, f)}, p=1.0))
            theirs = np.stack([np.asarray(fns[op](Image.fromarray(im), f)) for im in images]) / 255.0
            d = (ours.astype(np.float64) - theirs) * 255
            rows.append({"op": op, "factor": f, "max_abs": float(np.abs(d).max()),
                         "mean_abs": float(np.abs(d).mean()), "mean": float(d.mean())})
            print(f"paired {op} {f:+.2f}: max {rows[-1]['max_abs']:.2f}, mean |d| {rows[-1]['mean_abs']:.3f}, "
                  f"mean d {rows[-1]['mean']:+.3f} grey levels", flush=True)
    return rows


def main():
    p = _common.parser(__doc__)
    p.set_defaults(threads=1)
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of {', '.join(OPS)}.")
    p.add_argument("--images", type=int, default=2000, help="CIFAR-10 training images (a fixed random subset).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paired", action="store_true",
                   help="also each jitter op with the same factor on both sides, pixel by pixel (`paired`).")
    args = p.parse_args()
    names = [n for n in args.ops.split(",") if n]
    unknown = sorted(set(names) - set(OPS))
    if unknown:
        p.error(f"unknown ops {unknown}; valid: {', '.join(OPS)}.")
    import jax
    import torch
    from PIL import Image

    import _peers
    from jaxssl import augment
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train = _common.load_cifar10()[0]
    images = x_train[np.random.default_rng(args.seed).choice(len(x_train), args.images, replace=False)]
    src = images / 255.0
    record = {"benchmark": "view_stats", **vars(args), **_common.machine_info(), "rows": []}
    for i, name in enumerate(names):
        view = {**_OFF, **OPS[name]()}
        ours = np.asarray(augment.apply(jax.random.key(args.seed * 1000 + i), images, view))
        transform = _peers.view_transform(view)
        theirs = np.stack([np.asarray(transform(Image.fromarray(im))).transpose(1, 2, 0) for im in images])
        row = {"op": name, "view": {k: v for k, v in view.items() if v != _OFF.get(k)},
               "jaxssl": stats(ours, src), "lightly": stats(theirs, src)}
        record["rows"].append(row)
        print(f"{name}: " + ", ".join(f"{k} {row['jaxssl'][k]:.4f} / {row['lightly'][k]:.4f}" for k in STATS),
              flush=True)
    if args.paired:
        record["paired"] = paired(images)
    _common.write_json(f"view_stats{args.tag}", record)
    print(f"\n{args.images} CIFAR-10 images; each cell: jaxssl / lightly (jaxssl minus lightly)\n")
    print("| op | " + " | ".join(STATS) + " |\n|---|" + "---|" * len(STATS))
    for row in record["rows"]:
        cells = [f"{row['jaxssl'][k]:.4f} / {row['lightly'][k]:.4f} ({row['jaxssl'][k] - row['lightly'][k]:+.4f})"
                 for k in STATS]
        print(f"| {row['op']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
