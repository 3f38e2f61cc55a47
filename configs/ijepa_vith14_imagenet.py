r"""I-JEPA ViT-H/14 on ImageNet-1k as released (Assran et al., 2023, arXiv:2301.08243). For accelerators.

facebookresearch/ijepa configs/in1k_vith14_ep300.yaml, key by key: `model_name: vit_huge` (1280 wide,
32 blocks, 16 heads), `patch_size: 14`, `crop_size: 224`, `crop_scale: [0.3, 1.0]`, no flip / colour
/ blur; `batch_size: 128` per GPU on 16 GPUs (the log folder `bs.2048`); `pred_depth: 12`,
`pred_emb_dim: 384` (predictor heads = the encoder's, src/helper.py `init_model`); `mask:` 4 targets
of `pred_mask_scale: [0.15, 0.2]`, `aspect_ratio: [0.75, 1.5]`, 1 context of `enc_mask_scale:
[0.85, 1.0]`, `min_keep: 10`, `allow_overlap: false`; `ema: [0.996, 1.0]`; `epochs: 300`,
`warmup: 40`, `lr: 0.001` (absolute, no batch scaling), `final_lr: 1.0e-06`, `weight_decay: 0.04`
-> `final_weight_decay: 0.4`; `use_bfloat16: true`; loss smooth-L1 (src/train.py). One difference:
the yaml's warm-up starts at `start_lr: 0.0002`, jaxssl's at 0. Data: TFDS `imagenet2012`, prepared
by TFDS's builder from `config.data.manual_dir`:

  python -m jaxssl.main --config configs/ijepa_vith14_imagenet.py --workdir workdirs/ijepa_vith14 \
      --config.data.manual_dir=/path/to/ILSVRC2012_archives

kNN on the target encoder's average-pooled patch tokens every 50 epochs (a monitor; the paper
reports linear probes). `:runlocal`: the same recipe for 4 steps of 32 images (a smoke test).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, runlocal=False)
    batch_size = 2048
    epoch = common.steps_per_epoch(batch_size, common.IMAGENET_TRAIN_IMAGES)
    view = {**common.crop_flip_view(224, (0.3, 1.0), mean=common.IMAGENET_MEAN, std=common.IMAGENET_STD),
            "flip_p": 0.0}
    config = common.base_config(
        "ijepa", batch_size=batch_size, total_steps=300 * epoch, views=(view,), knn_every_steps=50 * epoch,
        model=dict(name="transformer", modality="image", width=1280, depth=32, num_heads=16, patch_size=14,
                   img_size=224),
        data=dict(common.IMAGENET_DATA), dtype="bfloat16", log_steps=100, ckpt_steps=5000,
        knn_kw=dict(batch_size=1024, mean=common.IMAGENET_MEAN, std=common.IMAGENET_STD))
    common.imagenet_knn(config)
    config.method_kw = dict(total_steps=config.get_ref("total_steps"), predictor_dim=384, predictor_depth=12,
                            predictor_heads=16, num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                            context_scale=(0.85, 1.0), min_keep=10, allow_overlap=False, loss="smooth_l1",
                            base_momentum=0.996, final_momentum=1.0)
    config.optimizer = common.adamw(1e-3, lr_scaling="none", warmup_steps=40 * epoch, weight_decay=0.04,
                                    weight_decay_end=0.4, end_lr_factor=1e-6 / 1e-3)
    if arg.runlocal:
        common.shrink_for_runlocal(config, backbone=False)
    return config
