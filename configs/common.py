"""Pieces shared by the configs: argument parsing, view presets, evaluation blocks."""
from __future__ import annotations

import ml_collections

# CIFAR-10 training-set channel statistics (see ../shared/data/README.md; the published values).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parse "key=value,flag" from `--config path.py:ARG` into a ConfigDict over `defaults`.

    A bare word sets a boolean default to True (`:cpu`, `:runlocal`). Unknown names raise.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"Unknown config argument {key!r}; valid arguments: {sorted(defaults)}.")
        if not value:
            out[key] = True
        else:
            out[key] = type(defaults[key])(value) if not isinstance(defaults[key], bool) else value.lower() in ("1", "true", "yes")
    return out


def simclr_view(size: int, *, strength: float = 0.5, blur_p: float = 0.0, solarize_p: float = 0.0,
                scale=(0.08, 1.0), mean=CIFAR10_MEAN, std=CIFAR10_STD) -> dict:
    """The SimCLR augmentation of one view (arXiv:2002.05709, Appendix A).

    Random resized crop (scale 0.08-1, ratio 3/4-4/3), flip p=0.5, colour jitter p=0.8 with
    brightness/contrast/saturation 0.8*s and hue 0.2*s (s = `strength`; s=0.5 for CIFAR-10,
    Sec. B.9), grayscale p=0.2; Gaussian blur is left out on CIFAR-10 (B.9: "we do not use
    Gaussian blur" at 32x32).
    """
    return dict(crop_size=size, crop_scale=tuple(scale), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                brightness=0.8 * strength, contrast=0.8 * strength, saturation=0.8 * strength,
                hue=0.2 * strength, jitter_p=0.8, grayscale_p=0.2, blur_p=blur_p, solarize_p=solarize_p,
                mean=tuple(mean), std=tuple(std))


def knn_eval(every_steps: int, *, train_examples: int = -1, test_examples: int = -1,
             batch_size: int = 500, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> ml_collections.ConfigDict:
    """Weighted kNN (k=20/T=0.07 as DINO, k=200/T=0.1 as InstDisc) on train -> test features.

    `train_examples`/`test_examples` = -1 uses the whole split.
    """
    return ml_collections.ConfigDict(dict(
        enabled=True, every_steps=every_steps, train_split="train", test_split="test",
        train_examples=train_examples, test_examples=test_examples, batch_size=batch_size,
        protocols=((20, 0.07), (200, 0.1)), view=dict(mean=tuple(mean), std=tuple(std))))
