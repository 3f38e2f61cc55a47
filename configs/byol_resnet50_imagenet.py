r"""BYOL ResNet-50 on ImageNet-1k (Grill et al., 2020, arXiv:2006.07733). For accelerators.

The paper's ImageNet recipe (Sec. 3.3 and Appendix C): batch 4096, 1000 epochs, LARS with lr 0.2 x
batch/256 (3.2), 10 warm-up epochs then cosine, weight decay 1.5e-6 (biases and batch-norm parameters
excluded from LARS adaptation and decay), target EMA 0.996 -> 1 on a cosine schedule, projector and
predictor 4096 -> 256, the asymmetric augmentation of Table 6 at 224 px (blur 1.0 / 0.1, solarisation
0 / 0.2). Images are decoded and cropped on the host (jaxssl/data/encoded.py), colour runs on device.
Data: TFDS `imagenet2012`, prepared by TFDS's builder from `config.data.manual_dir`:

  python -m jaxssl.main --config configs/byol_resnet50_imagenet.py --workdir workdirs/byol_r50 \
      --config.data.manual_dir=/path/to/ILSVRC2012_archives

`:runlocal`: the same recipe for 4 steps of 32 images (a smoke test on an accelerator).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, runlocal=False)
    views = tuple({**v, "mean": common.IMAGENET_MEAN, "std": common.IMAGENET_STD} for v in common.byol_views(224))
    config, epoch = common.imagenet_config("byol", batch_size=4096, epochs=1000, views=views, model=common.RESNET50)
    config.method_kw = dict(proj_hidden=(4096,), proj_dim=256, pred_hidden=(4096,), base_momentum=0.996,
                            total_steps=config.get_ref("total_steps"))
    config.optimizer = common.lars(0.2, warmup_steps=10 * epoch, weight_decay=1.5e-6, trust_coefficient=0.001)
    if arg.runlocal:
        common.shrink_for_runlocal(config, backbone=False)
    return config
