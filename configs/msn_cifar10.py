r"""MSN on CIFAR-10 (Assran et al., 2022, arXiv:2204.07141); `:pmsn` for PMSN (arXiv:2210.07277).

The default is the official ViT-S/16 recipe (facebookresearch/msn configs/pretrain/msn_vits16.yaml
with src/msn_train.py, src/data_manager.py) moved to 32x32 images on a ViT-Ti/4 (64 tokens):
one target view and `rand_views: 1` random anchor view of the full size (32 px, crop scale
0.3-1), `focal_views: 10` focal anchor views at half the size (16 px, scale 0.05-0.3),
`color_jitter_strength: 0.5` (jitter 0.4/0.4/0.4/0.1 p=0.8, grayscale 0.2), flip; no blur at
32 px (SimCLR B.9; the official blur p=0.5); `patch_drop: 0.15`; a 2048-2048-256 GELU head with
BatchNorm (`use_bn: true`); `num_proto: 1024`, `temperature: 0.1`, sharpening 0.25, Sinkhorn on,
`memax_weight: 1.0`, `ent_weight: 0.0`; `drop_path_rate: 0.0`; AdamW with lr 0.001 (absolute,
not scaled by batch), 15 warm-up epochs, cosine to `final_lr: 1.0e-06`, weight decay 0.04 ->
0.4, `clip_grad: 3.0` (global norm, `clip_grad_norm_`), 800 epochs, momentum 0.996 -> 1 linearly
over 1.25 x the run. Ours, for CIFAR: batch 256.

Deviations of the optimiser: the official lr warms up from `start_lr: 0.0002` (ours from 0) and
its cosine spans 1.25 x the run (`T_max=int(1.25*num_epochs*ipe)`, so it ends above final_lr);
ours ends at final_lr at the last step. See jaxssl/methods/msn.py for the prototypes' decay.

  python -m jaxssl.main --config configs/msn_cifar10.py --workdir workdirs/msn_cifar10

Arguments (combine with commas): `pmsn`: PMSN's power-law prior (exponent 0.25) in place of
me-max; `cpu`: a 64-wide 4-block ViT, a 512-512-128 head, 256 prototypes, 4 focal views, 400
steps; `runlocal`: a few steps of a tiny model for smoke tests.

  python -m jaxssl.main --config configs/msn_cifar10.py:cpu --workdir workdirs/msn_cpu
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, pmsn=False, cpu=False, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size)
    # data_manager.make_transforms: rand_crop_scale (0.3, 1.0), focal_crop_scale (0.05, 0.3),
    # get_color_distortion(s=0.5); views: [target, rand anchor] + 10 focal.
    rand = common.simclr_view(32, strength=0.5, scale=(0.3, 1.0))
    focal = common.simclr_view(16, strength=0.5, scale=(0.05, 0.3))
    config = common.base_config("msn", batch_size=batch_size, total_steps=800 * epoch,  # epochs: 800
                                views=(rand, rand) + (focal,) * 10,
                                model=dict(common.VIT_TI4_CIFAR, drop_path_rate=0.0),  # drop_path_rate: 0.0
                                knn_every_steps=20 * epoch)
    config.method_kw = dict(total_steps=config.get_ref("total_steps"), num_prototypes=1024, proj_hidden=(2048, 2048),
                            proj_dim=256, use_bn=True, rand_views=1, patch_drop=0.15, temperature=0.1,
                            sharpen_temperature=0.25, sinkhorn_iterations=3, regularization_weight=1.0,
                            entropy_weight=0.0, prior="uniform", power_law_exponent=0.25, base_momentum=0.996,
                            momentum_stretch=1.25)
    if arg.pmsn:
        # PMSN (arXiv:2210.07277): the power-law prior with exponent 0.25 (lightly's PMSNLoss default).
        config.method_kw.prior = "power_law"
    # msn_train.init_opt: AdamW, lr 0.001, warmup 15 epochs, final_lr 1e-6, wd 0.04 -> 0.4, clip 3.0.
    config.optimizer = common.adamw(1e-3, warmup_steps=15 * epoch, weight_decay=0.04, weight_decay_end=0.4,
                                    grad_clip=3.0, lr_scaling="none", end_lr_factor=1e-6 / 1e-3)
    common.shrink(config, arg, cpu_method_kw=dict(num_prototypes=256, proj_hidden=(512, 512), proj_dim=128),
                  runlocal_method_kw=dict(num_prototypes=32, proj_hidden=(64, 64), proj_dim=32))
    if arg.cpu or arg.runlocal:
        config.input.views = config.input.views[:6]  # target + random anchor + 4 focal views
    return config
