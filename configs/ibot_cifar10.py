r"""iBOT on CIFAR-10 (Zhou et al., 2022, arXiv:2111.07832): masked patch-token + [CLS] self-distillation.

The paper has no CIFAR-10 recipe. The default is the official ViT-S/16 run (bytedance/ibot
README: `--teacher_temp 0.07 --warmup_teacher_temp_epochs 30 --norm_last_layer false --epochs
800 --shared_head true --out_dim 8192 --local_crops_number 10 --global_crops_scale 0.25 1
--local_crops_scale 0.05 0.25 --pred_ratio 0 0.3 --pred_ratio_var 0 0.2`) on top of
main_ibot.py's defaults (head 2048 -> 256 -> K with GELU and no BatchNorm, student temperature
0.1, `--lambda1 1 --lambda2 1`, block masking with aspect 0.3-1/0.3, `--momentum_teacher 0.996`,
`--freeze_last_layer 1`, `--drop_path 0.1`, and DINO's ViT optimisation: AdamW, lr 5e-4 per 256,
10 warm-up epochs, cosine to 1e-6, weight decay 0.04 -> 0.4, `--clip_grad 3.0` per parameter),
moved to 32x32 images on a ViT-Ti/4 (64 tokens): global crops of 32 px, local crops of 16 px.
Ours, for CIFAR: batch 256 and therefore teacher EMA 0.9995 (main_ibot.py's help: "use 0.9995
with batch size of 256"), no Gaussian blur at 32 px (SimCLR B.9; solo-learn's CIFAR recipes).

  python -m jaxssl.main --config configs/ibot_cifar10.py --workdir workdirs/ibot_cifar10

Arguments (combine with commas): `dinov2`: DINOv2's choices on the same backbone
(arXiv:2304.07193; facebookresearch/dinov2 ssl_default_config.yaml): Sinkhorn-Knopp centring,
KoLeo weight 0.1, untied [CLS] and patch heads (`ibot.separate_head`), masking probability 0.5 and
ratio 0.1-0.5. `cpu`: a 64-wide 4-block ViT with a 512 -> 128 -> 1024 head and 4 local crops, 1500
steps of 256 (about 75 min on a 2-core CPU; iBOT's kNN gain over its random init, k=20 / k=200:
+4.0 / +2.1 at 500 steps, +7.1 / +4.2 at 1000, +8.4 / +5.5 at 1500, +7.8 / +5.1 at 1500 with seed 1:
benchmarks/RESULTS.md 7);
`runlocal`: a few steps of a tiny model for smoke tests.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, dinov2=False, cpu=False, runlocal=False)
    batch_size = 256
    epoch = common.steps_per_epoch(batch_size)
    # --global_crops_scale 0.25 1 --local_crops_number 10 --local_crops_scale 0.05 0.25.
    config = common.base_config("ibot", batch_size=batch_size, total_steps=800 * epoch,  # --epochs 800
                                views=common.dino_views(32, 16, 10, global_scale=(0.25, 1.0),
                                                        local_scale=(0.05, 0.25)),
                                model=dict(common.VIT_TI4_CIFAR, mask_token=True), knn_every_steps=20 * epoch)
    # --pred_ratio 0 0.3 --pred_ratio_var 0 0.2: each image is masked with ratio 0 or U(0.1, 0.5),
    # i.e. probability 0.5; BEiT/iBOT blocks of at least (min(h, w) // 3)^2 = 4 patches on 8x8.
    config.method_kw = dict(total_steps=config.get_ref("total_steps"), out_dim=8192, hidden_dim=2048,
                            bottleneck_dim=256, norm_last_layer=False, global_views=2, student_temperature=0.1,
                            teacher_temperature=0.07, warmup_teacher_temperature=0.04,
                            warmup_teacher_temperature_steps=30 * epoch, centering="ema", center_momentum=0.9,
                            separate_head=False, dino_loss_weight=1.0, ibot_loss_weight=1.0,
                            koleo_loss_weight=0.0, mask_ratio=(0.1, 0.5), mask_probability=0.5,
                            # The student's patch head on the masked tokens only: main_ibot.py's loss
                            # and gradients at fewer FLOPs ("all": its head on every token).
                            patch_head_tokens="masked",
                            min_mask_patches=4, base_momentum=0.9995, freeze_last_layer_steps=epoch)
    config.optimizer = common.dino_vit_optimizer(epoch)
    if arg.dinov2:
        config.method_kw.update(centering="sinkhorn", koleo_loss_weight=0.1, separate_head=True)

    # `:cpu`: 1500 steps, the budget at which iBOT clears +5 kNN points over random init at both k
    # (1000 steps: k=20 only).
    common.shrink(config, arg, total_steps=1500, cpu_method_kw=dict(out_dim=1024, hidden_dim=512, bottleneck_dim=128,
                                                  warmup_teacher_temperature_steps=40, freeze_last_layer_steps=20,
                                                  base_momentum=0.996),
                  runlocal_method_kw=dict(out_dim=64, hidden_dim=64, bottleneck_dim=32,
                                          warmup_teacher_temperature_steps=2, freeze_last_layer_steps=1))
    if arg.cpu or arg.runlocal:
        config.input.views = config.input.views[:6]  # 2 global + 4 local crops
    return config
