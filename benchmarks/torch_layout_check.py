"""Exported backbones in timm/torchvision give jaxssl's features (issue 23), and back.

    .venv-bench/bin/python benchmarks/torch_layout_check.py [--cases resnet18,resnet50,vit_s16]

For each backbone and layout, on 32 real images (ImageNette/scikit-image photos at 224 px,
CIFAR-10 test images at 32 px), float32 on CPU:
* export: jaxssl weights (random init with every BatchNorm scale, bias and running statistic
  randomised, so that no mapping error hides behind a zero or a one) -> `pytorch_layout.to_torch`
  -> safetensors file -> `load_state_dict(strict=True)` into the model of `torch_model(...)["code"]`
  -> max |torch features - jaxssl features|;
* import: the PyTorch model's own random init (BatchNorm statistics randomised likewise) ->
  `safetensors.torch.save_file` -> `pytorch_layout.load` + `from_torch` -> jaxssl features, same
  comparison.
Prints a markdown table (quoted in RESULTS.md) and fails when a difference is 1e-4 or more.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import jax
import numpy as np
import safetensors.torch
import timm
import torch
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
import _common  # noqa: E402

from jaxssl import models  # noqa: E402
from jaxssl.models import pytorch_layout  # noqa: E402

CASES = {
    "resnet18": (dict(name="resnet", variant="18"), ("timm", "torchvision")),
    "resnet50": (dict(name="resnet", variant="50"), ("timm", "torchvision")),
    "vit_s16": (dict(name="vit", variant="S/16"), ("timm", "torchvision")),
    "resnet18_cifar": (dict(name="resnet", variant="18", cifar_stem=True), ("timm", "torchvision")),
    "vit_ti4_cifar": (dict(name="vit", variant="Ti/4", img_size=32), ("timm", "torchvision")),
    "transformer_s16": (dict(name="transformer", modality="image", width=384, depth=12, num_heads=6, patch_size=16,
                             img_size=224), ("timm",)),
}
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def images(size: int) -> np.ndarray:
    """32 real images, normalised, NHWC float32."""
    if size == 32:
        with np.load(_common.data_file("cifar10_test.npz")) as z:
            x = z["x"][:32]
    else:
        with np.load(_common.data_file("imagenette_val_224_sample.npz")) as z:
            x = z["x"]
        with np.load(_common.data_file("skimage_photos_224.npz")) as z:
            x = np.concatenate([x, z["x"]])
        x = np.concatenate([x, x[:32 - len(x), :, ::-1]])  # mirrored copies make up 32
    return ((x.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def build_torch(cfg: dict, layout: str) -> torch.nn.Module:
    scope = {"torch": torch, "timm": timm, "torchvision": torchvision}
    exec(pytorch_layout.torch_model(cfg, layout)["code"], scope)  # pylint: disable=exec-used
    return scope["model"].eval()


def randomise_jax(variables, seed: int):
    """Random BatchNorm/LayerNorm scales, biases and running statistics (the init has zeros and ones)."""
    rng = np.random.default_rng(seed)

    def leaf(path, x):
        name = path[-1].key
        x = np.asarray(x)
        if name == "scale":
            return rng.uniform(0.5, 1.5, x.shape).astype(x.dtype)
        if name in ("bias", "mean"):
            return rng.normal(0, 0.1, x.shape).astype(x.dtype)
        if name == "var":
            return rng.uniform(0.5, 2.0, x.shape).astype(x.dtype)
        return x
    return jax.tree_util.tree_map_with_path(leaf, variables)


def randomise_torch(model: torch.nn.Module, seed: int) -> None:
    """As `randomise_jax`, but BN scales in [0.2, 0.6]: PyTorch's fan-out init with scales near 1 grows
    ResNet-50's pooled features to ~200, far from a trained network's (max ~10), and float32's rounding with them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.2 + 0.4 * torch.rand(m.weight.shape, generator=g))
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
        for name, p in model.named_parameters():  # timm/torchvision init the position embedding / CLS token small
            if "pos_embed" in name or "cls_token" in name or "class_token" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def torch_features(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def check(case: str, cfg: dict, layout: str, x: np.ndarray, tmp: str) -> dict:
    kw = {k: v for k, v in cfg.items() if k != "name"}
    net = models.get(cfg["name"], **kw)
    variables = randomise_jax(net.init(jax.random.key(0), x[:1], train=False), seed=0)
    jax_feats = np.asarray(jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, x))
    # Export: jaxssl -> file -> PyTorch.
    tensors, _ = pytorch_layout.to_torch(cfg, variables, layout)
    path = os.path.join(tmp, f"{case}_{layout}.safetensors")
    pytorch_layout.save(path, tensors, layout=layout, model_cfg=cfg)
    model = build_torch(cfg, layout)
    model.load_state_dict(safetensors.torch.load_file(path), strict=True)
    export_err = float(np.max(np.abs(torch_features(model, x) - jax_feats)))
    # Import: PyTorch's own random weights -> file -> jaxssl.
    model = build_torch(cfg, layout)
    randomise_torch(model, seed=1)
    path = os.path.join(tmp, f"{case}_{layout}_torch.safetensors")
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded, _ = pytorch_layout.load(path)
    imported, report = pytorch_layout.from_torch(cfg, loaded, variables)
    t_feats = torch_features(model, x)
    j_feats = np.asarray(jax.jit(lambda v, x: net.apply(v, x, train=False))(imported, x))
    import_err = float(np.max(np.abs(t_feats - j_feats)))
    return dict(case=case, layout=layout, dim=jax_feats.shape[1], export_err=export_err, import_err=import_err,
                scale=float(np.max(np.abs(jax_feats))), import_scale=float(np.max(np.abs(t_feats))),
                fresh=report["fresh"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)  # NOTES.md: 2 threads on a loaded 2-core machine are far slower
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            cfg, layouts = CASES[case]
            x = images(cfg.get("img_size", 32 if cfg.get("cifar_stem") else 224))
            for layout in layouts:
                rows.append(check(case, cfg, layout, x, tmp))
                print(rows[-1], flush=True)
    print(f"\n32 real images, float32, CPU; torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"timm {timm.__version__}, jax {jax.__version__}\n")
    print("| backbone | layout | features | max abs diff, export (jaxssl -> torch) | max abs diff, import "
          "(torch -> jaxssl) | max abs feature (export / import) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['layout']} | {r['dim']} | {r['export_err']:.2e} | {r['import_err']:.2e} | "
              f"{r['scale']:.3g} / {r['import_scale']:.3g} |")
    bad = [r for r in rows if not (r["export_err"] < args.tol and r["import_err"] < args.tol)]
    if bad:
        print(f"FAILED (>= {args.tol}): {[(r['case'], r['layout']) for r in bad]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
