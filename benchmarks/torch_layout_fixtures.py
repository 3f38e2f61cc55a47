"""Write tests/models/torch_layouts.json: the state-dict names and shapes of the timm/torchvision models
that jaxssl's exports must load into (`jaxssl.models.pytorch_layout`), for CI, which has no torch.

    .venv-bench/bin/python benchmarks/torch_layout_fixtures.py     # needs torch, torchvision, timm

Each model is built by the code `pytorch_layout.torch_model(cfg, layout)["code"]` (what the model
card quotes), so the fixture also pins that code to the right model; the file stores the library
versions it came from. tests/models/test_pytorch_layout.py compares every export's header with it.
"""
from __future__ import annotations

import json
import os

import timm
import torch
import torchvision

from jaxssl.models import pytorch_layout

# (case, jaxssl config.model, layouts): the standard ImageNet models and the CIFAR configs of configs/common.py.
CASES = [
    ("resnet18", dict(name="resnet", variant="18"), ("timm", "torchvision")),
    ("resnet50", dict(name="resnet", variant="50"), ("timm", "torchvision")),
    ("resnet18_cifar", dict(name="resnet", variant="18", width=1.0, cifar_stem=True), ("timm", "torchvision")),
    ("vit_s16", dict(name="vit", variant="S/16"), ("timm", "torchvision")),
    ("vit_ti4_cifar", dict(name="vit", variant="Ti/4", img_size=32), ("timm", "torchvision")),
    ("transformer_s16", dict(name="transformer", modality="image", width=384, depth=12, num_heads=6,
                             patch_size=16, img_size=224), ("timm",)),
]


def build(cfg: dict, layout: str) -> torch.nn.Module:
    scope = {"torch": torch, "timm": timm, "torchvision": torchvision}
    exec(pytorch_layout.torch_model(cfg, layout)["code"], scope)  # pylint: disable=exec-used
    return scope["model"]


def main() -> None:
    out = {"versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__},
           "cases": {}}
    for case, cfg, layouts in CASES:
        for layout in layouts:
            sd = build(cfg, layout).state_dict()
            out["cases"][f"{layout}:{case}"] = {"model": cfg, "layout": layout,
                                                "shapes": {k: list(v.shape) for k, v in sd.items()}}
            print(f"{layout}:{case}: {len(sd)} tensors")
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "models", "torch_layouts.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)
        f.write("\n")
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
