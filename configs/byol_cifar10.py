r"""BYOL on CIFAR-10 (Grill et al., 2020, arXiv:2006.07733).

The paper gives no CIFAR-10 recipe; the default follows solo-learn's published CIFAR recipe
(vturrisi/solo-learn, scripts/pretrain/cifar/byol.yaml) for the numbers the paper fixes only for
ImageNet, and the paper for the rest: ResNet-18 with the CIFAR stem, projector and predictor
4096 -> 256 (paper Sec. 3.3 and solo-learn), target momentum 0.99 -> 1 on BYOL's cosine schedule
(solo-learn base_tau 0.99; the paper's ImageNet 0.996), batch 256, 1000 epochs, LARS (eta 0.02,
biases and norms excluded) with lr 1.0 per 256 images, weight decay 1e-5, 10 warm-up epochs then
cosine to 0, and BYOL's asymmetric augmentation (paper Table 6: blur p=1.0 / 0.1, solarisation
p=0 / 0.2). Run it on an accelerator:

  python -m jaxssl.main --config configs/byol_cifar10.py --workdir workdirs/byol_cifar10

`:cpu` is sized for a 2-core CPU: a 1/8-width ResNet-18, 512 -> 128 heads, batch 256, 400 steps
(2 epochs), then kNN of the 10,000 test images against all 50,000 training images:

  python -m jaxssl.main --config configs/byol_cifar10.py:cpu --workdir workdirs/byol_cpu

`:runlocal` shrinks everything further for smoke tests (a few steps).

Differences from solo-learn: it drops blur on CIFAR (augmentations/asymmetric.yaml) where we
keep the paper's; its LARS clips the adaptive rate (`clip_lr`), ours by default does not
(`--config.optimizer.trust_clip=True` does, `jaxssl.train.optim.scale_by_clipped_trust_ratio`); it
trains in 16-bit mixed precision, we in float32.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256  # solo-learn: optimizer.batch_size 256.
    epoch = common.steps_per_epoch(batch_size)
    config = common.base_config("byol", batch_size=batch_size, total_steps=1000 * epoch,  # solo-learn: max_epochs 1000.
                                views=common.byol_views(32), knn_every_steps=20 * epoch)
    # Heads: paper Sec. 3.3 / solo-learn proj_hidden_dim 4096, proj_output_dim 256, pred_hidden_dim
    # 4096. The momentum schedule's K follows config.total_steps (a reference, so command-line
    # overrides of total_steps reach it).
    config.method_kw = dict(proj_hidden=(4096,), proj_dim=256, pred_hidden=(4096,), base_momentum=0.99,
                            total_steps=config.get_ref("total_steps"))
    # solo-learn: LARS, lr 1.0 scaled by batch/256, weight_decay 1e-5, eta 0.02, exclude_bias_n_norm;
    # warmup_cosine with 10 warm-up epochs (as the paper's 10 epochs) and min_lr 0.
    config.optimizer = common.lars(1.0, warmup_steps=10 * epoch, weight_decay=1e-5, trust_coefficient=0.02)
    common.shrink_heads(config, arg)
    return config

