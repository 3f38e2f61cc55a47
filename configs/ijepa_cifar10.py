r"""I-JEPA on CIFAR-10 (Assran et al., 2023, arXiv:2301.08243), a ViT encoder on 4x4 patches.

The paper has no CIFAR-10 recipe; everything that is not a size follows the released ImageNet
recipe (facebookresearch/ijepa configs/in1k_vith14_ep300.yaml, see configs/ijepa_vith14_imagenet.py):
multi-block masks (1 context block of scale 0.85-1.0, 4 targets of scale 0.15-0.2 and aspect
0.75-1.5, no overlap), a predictor 3/10 of the encoder's width (yaml: 384 for ViT-H's 1280) as
deep as the encoder, smooth-L1 loss on layer-normalised targets, EMA 0.996 -> 1.0 (linear),
AdamW with lr 1e-3 per 2048 images (yaml: `lr: 0.001` at 16 x 128 images; warm-up 40 of 300
epochs, cosine to `final_lr: 1.0e-06`), weight decay 0.04 -> 0.4 (cosine), random resized crop
(0.3, 1.0) and no other augmentation (`use_horizontal_flip: false`, no colour distortion).
Ours for CIFAR: a 192-wide, 12-block, 3-head encoder (ViT-Ti) on the 8x8 grid of 4x4 patches,
batch 512, and `min_keep` 4 (the yaml's 10 exceeds the smallest 3x3 target block of an 8x8 grid,
where the official sampler would never terminate). The yaml warms the lr up from `start_lr: 0.0002`;
jaxssl's warm-up starts at 0.

  python -m jaxssl.main --config configs/ijepa_cifar10.py --workdir workdirs/ijepa_cifar10

`:cpu`: a 64-wide 4-block encoder, 32-wide 2-block predictor, 400 steps of 256 (then kNN on the
target encoder's average-pooled patch tokens; compare `--config.total_steps=0`);
`:runlocal`: a few steps of a tiny model for smoke tests.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 512
    epoch = common.steps_per_epoch(batch_size)
    # yaml `crop_scale: [0.3, 1.0]`, `use_horizontal_flip: false`: a crop and nothing else.
    view = {**common.crop_flip_view(32, (0.3, 1.0)), "flip_p": 0.0}
    config = common.base_config("ijepa", batch_size=batch_size, total_steps=300 * epoch, views=(view,),
                                knn_every_steps=20 * epoch,
                                model=dict(name="transformer", modality="image", width=192, depth=12, num_heads=3,
                                           patch_size=4, img_size=32))
    # total_steps is a reference: command-line overrides reach the EMA schedule.
    config.method_kw = dict(total_steps=config.get_ref("total_steps"), predictor_dim=64, predictor_depth=12,
                            predictor_heads=4, num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                            context_scale=(0.85, 1.0), min_keep=4, allow_overlap=False, loss="smooth_l1",
                            base_momentum=0.996, final_momentum=1.0)
    config.optimizer = common.adamw(1e-3 / 8, warmup_steps=40 * epoch, weight_decay=0.04, weight_decay_end=0.4,
                                    end_lr_factor=1e-6 / 1e-3)
    common.shrink(config, arg, base_lr=1e-3, cpu_method_kw=dict(predictor_dim=32, predictor_depth=2, predictor_heads=2),
                  runlocal_method_kw=dict(predictor_dim=16, predictor_depth=1, predictor_heads=2))
    return config
