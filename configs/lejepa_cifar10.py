r"""LeJEPA on CIFAR-10 (Balestriero & LeCun, 2025, arXiv:2511.08544), a ViT encoder with multi-crop.

The paper has no CIFAR-10 recipe; the method and optimisation follow the authors' minimal
implementation (galilai-group/lejepa MINIMAL.md: projector 2048-2048-16 with BatchNorm, AdamW lr
2e-3 at batch 256 with weight decay 0.05, a linear warm-up of one epoch then cosine to `eta_min=1e-3`,
i.e. half the peak, 800 epochs) with lambda 0.05 and 1024 slices (the reference defaults lightly
1.6 records; MINIMAL.md's Imagenette run uses 0.02 and 256, see configs/lejepa_imagenette.py).
Views: the paper's global + local multi-crop, here 2 global 32x32 crops (scale 0.08-1, MINIMAL.md's)
and 6 local 16x16 crops (scale 0.05-0.4, DINO's local scale), each with MINIMAL.md's colour
augmentation (jitter 0.8/0.8/0.8/0.2 w.p. 0.8, grayscale 0.2, solarisation 0.2, flip) without the
blur (at 32 px, as SimCLR B.9). Ours for CIFAR: a 192-wide, 12-block, 3-head encoder (ViT-Ti) on
4x4 patches; features = the average-pooled patch tokens.

  python -m jaxssl.main --config configs/lejepa_cifar10.py --workdir workdirs/lejepa_cifar10

`:cpu`: a 64-wide 4-block encoder, a 512-wide projector, 400 steps of 256 (then kNN; compare
`--config.total_steps=0`); `:runlocal`: a few steps of a tiny model for smoke tests.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size)
    view = lambda size, scale: common.simclr_view(size, strength=1.0, solarize_p=0.2, scale=scale)
    views = (view(32, (0.08, 1.0)),) * 2 + (view(16, (0.05, 0.4)),) * 6
    config = common.base_config("lejepa", batch_size=batch_size, total_steps=800 * epoch, views=views,
                                knn_every_steps=50 * epoch,
                                model=dict(name="transformer", modality="image", width=192, depth=12, num_heads=3,
                                           patch_size=4, img_size=32))
    config.method_kw = dict(proj_hidden=(2048, 2048), proj_dim=16, lambda_=0.05, num_slices=1024, knots=17,
                            t_max=3.0, global_views=2)
    config.optimizer = common.adamw(2e-3, warmup_steps=epoch, weight_decay=0.05, end_lr_factor=0.5)
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512, 512), num_slices=256),
                  runlocal_method_kw=dict(proj_hidden=(32, 32), num_slices=16))
    return config
