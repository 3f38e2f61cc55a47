"""The PyTorch/lightly side of the benchmarks: the model, heads, augmentation and step users write.

Only benchmarks import this module (it needs `.venv-bench`, see benchmarks/README.md). It mirrors
what jaxssl runs, written the way lightly's own examples write it:

- backbone: torchvision's ResNet `BasicBlock` stacked as ResNet-18 with the CIFAR stem (3x3/1
  conv, no max-pool) and a channel multiplier `width` (1.0 = torchvision `resnet18`, checked by
  parameter count), zero-initialised last BN of each block as jaxssl's ResNet;
- heads/losses: `lightly.models.modules.{SimCLRProjectionHead, BYOLProjectionHead,
  BYOLPredictionHead}`, `lightly.loss.{NTXentLoss, NegativeCosineSimilarity}`,
  `lightly.models.utils.update_momentum`;
- optimiser: `lightly.utils.lars.LARS`, no weight decay and no LARS adaptation for biases and
  BatchNorm parameters (param groups), as jaxssl's optim.decay_mask;
- augmentation: `lightly.transforms.{SimCLRTransform, BYOLTransform}` on PIL images in a
  `torch.utils.data.DataLoader` (per-image, on the host), lightly's standard data path.
"""
from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class ResNet18(nn.Module):
    """torchvision BasicBlock ResNet-18, CIFAR stem, channels 64*width*(1, 2, 4, 8); returns pooled features."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        block = torchvision.models.resnet.BasicBlock
        base = max(1, int(round(64 * width)))
        self.stem = nn.Sequential(nn.Conv2d(3, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True))
        layers, inplanes = [], base
        for i in range(4):
            planes, stride = base * 2 ** i, 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            layers += [block(inplanes, planes, stride, down), block(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.out_dim = inplanes
        for m in self.modules():
            if isinstance(m, block):
                nn.init.zeros_(m.bn2.weight)  # zero_init_residual, as jaxssl's ResNet and torchvision's flag

    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)


def lars(model: nn.Module, lr: float, weight_decay: float = 1e-4, momentum: float = 0.9):
    """lightly's LARS on the trainable parameters; biases and BN parameters (ndim <= 1) get
    neither weight decay nor adaptation."""
    from lightly.utils.lars import LARS
    trainable = [p for p in model.parameters() if p.requires_grad]  # BYOL: not the momentum copies
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]
    # lightly's LARS skips the trust ratio for parameters whose group has weight_decay == 0
    # (lightly/utils/lars.py, 1.6.0), so one group does both exclusions.
    return LARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                momentum=momentum, weight_decay=weight_decay, trust_coefficient=0.001)


class SimCLR(nn.Module):
    def __init__(self, width: float, hidden: int, out: int):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        self.backbone = ResNet18(width)
        self.head = SimCLRProjectionHead(self.backbone.out_dim, hidden, out)
        self.criterion = NTXentLoss(temperature=0.5)

    def loss(self, x0, x1):
        # Both views in one forward pass, as jaxssl's SimCLR (BN statistics over the 2N images).
        z = self.head(self.backbone(torch.cat([x0, x1])))
        z0, z1 = z.chunk(2)
        return self.criterion(z0, z1)


class BYOL(nn.Module):
    def __init__(self, width: float, hidden: int, out: int):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        self.backbone = ResNet18(width)
        self.projection_head = BYOLProjectionHead(self.backbone.out_dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        for p in list(self.backbone_momentum.parameters()) + list(self.projection_head_momentum.parameters()):
            p.requires_grad = False
        self.criterion = NegativeCosineSimilarity()

    def loss(self, x0, x1, momentum: float = 0.99):
        from lightly.models.utils import update_momentum
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        # One forward per view (BN per view), as jaxssl's BYOL (`BackboneWithHeads.each`) and lightly's example.
        p0 = self.prediction_head(self.projection_head(self.backbone(x0)))
        p1 = self.prediction_head(self.projection_head(self.backbone(x1)))
        with torch.no_grad():
            z0 = self.projection_head_momentum(self.backbone_momentum(x0))
            z1 = self.projection_head_momentum(self.backbone_momentum(x1))
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


def make_model(method: str, width: float, hidden: int, out: int) -> nn.Module:
    return {"simclr": SimCLR, "byol": BYOL}[method](width, hidden, out)


def transform(method: str, size: int = 32):
    """lightly's two-view transform matching jaxssl's views for `method` (CIFAR-10 normalisation)."""
    from lightly import transforms as T
    norm = {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    if method == "simclr":  # = configs.common.simclr_view(size, strength=0.5): no blur on CIFAR.
        return T.SimCLRTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0, normalize=norm)
    # = configs.common.byol_views(size): blur 1.0 / 0.1, solarise 0 / 0.2.
    return T.BYOLTransform(view_1_transform=T.BYOLView1Transform(input_size=size, normalize=norm),
                           view_2_transform=T.BYOLView2Transform(input_size=size, normalize=norm))


class _Images(torch.utils.data.Dataset):
    """uint8 (N,H,W,3) arrays as PIL images through a transform, as torchvision's CIFAR10 dataset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, tf):
        self.images, self.labels, self.tf = images, labels, tf

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.tf(Image.fromarray(self.images[i])), (0 if self.labels is None else int(self.labels[i]))


def loader(images: np.ndarray, tf, batch: int, workers: int, labels=None, shuffle: bool = True, seed: int = 0,
           persistent: bool = True, pin_memory: bool = False):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(_Images(images, labels, tf), batch_size=batch, shuffle=shuffle,
                                       drop_last=shuffle, num_workers=workers, generator=g,
                                       persistent_workers=persistent and workers > 0, pin_memory=pin_memory)


def forever(dl) -> Iterator:
    while True:
        yield from dl


def setup_device(device: str) -> torch.device:
    """torch.device for `device`; on CUDA with cuDNN autotuning (`cudnn.benchmark`), as a user
    tuning a fixed-shape training run sets it (TF32 stays at PyTorch's defaults)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def train_step_fn(model: nn.Module, opt, method: str, device: str | torch.device = "cpu", dtype: str = "float32"):
    """step(x0, x1) -> loss tensor: views to `device` (non-blocking from pinned memory), forward
    under bf16 autocast when `dtype == "bfloat16"` (parameters and optimiser stay float32, as
    jaxssl's `dtype=`), backward, optimiser step. Callers synchronise with `loss.item()`."""
    dev = torch.device(device)
    bf16 = dtype == "bfloat16"

    def step(x0, x1):
        x0, x1 = x0.to(dev, non_blocking=True), x1.to(dev, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(x0, x1)
        loss.backward()
        opt.step()
        return loss
    return step


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
