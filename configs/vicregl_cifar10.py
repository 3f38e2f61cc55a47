r"""VICRegL on CIFAR-10 (Bardes et al., 2022, arXiv:2210.01571): VICReg with local feature matching.

The default is the official ResNet-50 recipe (facebookresearch/VICRegL README: `--arch resnet50
--optimizer lars --base-lr 0.3 --weight-decay 1e-06 --size-crops 224 --num-crops 2
--min_scale_crops 0.08 --max_scale_crops 1.0 --alpha 0.75`, with `main_vicregl.py`'s defaults
`--num_matches 20 4`, `--l2_all_matches 1`, `--no-flip-grid 1`, coefficients 25/25/1, `--mlp
8192-8192-8192`, `--maps-mlp 512-512-512`, `--warmup-epochs 10`, `--end-lr-ratio 0.001`, lr x
batch/256 (`utils.learning_schedule`); `transforms.py`: jitter 0.4/0.4/0.2/0.1 p=0.8, grayscale
0.2, the first crop blur 1.0 / solarisation 0, the second blur 0.1 / solarisation 0.2), moved to
CIFAR-10 (ours): ResNet-18 with the CIFAR stem (4x4 feature maps of 32 px crops), a 2048-wide
expander as the VICReg CIFAR recipe, `num_matches` (7, 2) (the official 20 / 49 and 4 / 49
fractions of the positions of a 7x7 map, on 4x4), no blur at 32 px (SimCLR B.9), batch 256,
1000 epochs. LARS trust coefficient 0.001 is VICReg's reference LARS (`main_vicreg.py`,
`eta=0.001`); VICRegL's `optimizers.py` was not checked. The views below are photometric only:
the method crops and flips (jaxssl/methods/vicregl.py says why). Run it on an accelerator:

  python -m jaxssl.main --config configs/vicregl_cifar10.py --workdir workdirs/vicregl_cifar10

`:cpu` (1/8-width ResNet-18, a 512-wide expander and 128-wide maps projector, 400 steps),
`:runlocal` a few steps:

  python -m jaxssl.main --config configs/vicregl_cifar10.py:cpu --workdir workdirs/vicregl_cpu
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size)
    # transforms.get_color_distortion: jitter 0.4/0.4/0.2/0.1 p=0.8, grayscale 0.2; crop 1 solarisation 0,
    # crop 2 solarisation 0.2; blur dropped at 32 px. No crop and no flip here: the method crops
    # (scale 1-1 keeps the whole image) and flips itself.
    photometric = {**common.simclr_view(32, strength=0.5, scale=(1.0, 1.0)), "saturation": 0.2, "flip_p": 0.0}
    config = common.base_config("vicregl", batch_size=batch_size, total_steps=1000 * epoch,
                                views=(photometric, {**photometric, "solarize_p": 0.2}), knn_every_steps=20 * epoch)
    config.method_kw = dict(proj_hidden=(2048, 2048), proj_dim=2048, maps_hidden=(512, 512), maps_dim=512,
                            crop_sizes=(32,), num_crops=(2,), crop_scales=((0.08, 1.0),), flip_p=0.5, flip_grid=False,
                            alpha=0.75, inv_coeff=25.0, var_coeff=25.0, cov_coeff=1.0, num_matches=(7, 2),
                            l2_all_matches=True, eps=1e-4)
    # README ResNet-50: LARS, base lr 0.3 x batch/256, weight decay 1e-6; 10 warm-up epochs, cosine to 0.001 x.
    config.optimizer = common.lars(0.3, warmup_steps=10 * epoch, weight_decay=1e-6, trust_coefficient=0.001,
                                   end_lr_factor=0.001)
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512, 512), proj_dim=512, maps_hidden=(128, 128),
                                                  maps_dim=128),
                  runlocal_method_kw=dict(proj_hidden=(64, 64), proj_dim=64, maps_hidden=(32, 32), maps_dim=32))
    return config
