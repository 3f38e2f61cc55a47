r"""NNCLR on CIFAR-10 (Dwibedi et al., 2021, arXiv:2104.14548).

The paper gives no CIFAR-10 recipe; the default is solo-learn's published CIFAR recipe
(vturrisi/solo-learn, scripts/pretrain/cifar/nnclr.yaml): ResNet-18 with the CIFAR stem, projector
2048 -> 2048 -> 256 and predictor 4096 -> 256, temperature 0.2, a support set of 65,536, batch 256,
1000 epochs, LARS (eta 0.02, biases and norms excluded) with lr 0.4 per 256 images, weight decay
1e-5, 10 warm-up epochs then cosine, and the asymmetric augmentation (augmentations/asymmetric.yaml:
BYOL's pair without blur). Run it on an accelerator:

  python -m jaxssl.main --config configs/nnclr_cifar10.py --workdir workdirs/nnclr_cifar10

`:cpu` (a 1/8-width ResNet-18, 512-wide heads, batch 256, 400 steps, kNN on the full splits) and
`:runlocal` (a few steps):

  python -m jaxssl.main --config configs/nnclr_cifar10.py:cpu --workdir workdirs/nnclr_cpu

Differences from solo-learn: its LARS clips the adaptive rate (`clip_lr`), ours by default does not
(`--config.optimizer.trust_clip=True` does); it trains in 16-bit mixed precision, we in float32. The
paper's ImageNet values (tau 0.1, K 98,304) are the method's defaults (`jaxssl.methods.nnclr.make`).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    batch_size = 256  # solo-learn nnclr.yaml: optimizer.batch_size 256.
    epoch = common.steps_per_epoch(batch_size)
    # solo-learn augmentations/asymmetric.yaml: BYOL's asymmetric pair with blur off on CIFAR.
    v1, v2 = common.byol_views(32)
    views = ({**v1, "blur_p": 0.0}, {**v2, "blur_p": 0.0})
    config = common.base_config("nnclr", batch_size=batch_size, total_steps=1000 * epoch,  # max_epochs 1000
                                views=views, knn_every_steps=20 * epoch)
    # solo-learn nnclr.yaml method_kwargs: temperature 0.2, proj_hidden_dim 2048, proj_output_dim 256,
    # pred_hidden_dim 4096, queue_size 65536.
    config.method_kw = dict(temperature=0.2, queue_size=65536, proj_hidden=(2048, 2048), proj_dim=256,
                            pred_hidden=(4096,))
    # solo-learn nnclr.yaml: LARS lr 0.4 (x batch/256), weight_decay 1e-5, eta 0.02, exclude_bias_n_norm,
    # warmup_cosine (10 warm-up epochs, its default).
    config.optimizer = common.lars(0.4, warmup_steps=10 * epoch, weight_decay=1e-5, trust_coefficient=0.02)
    # 512-wide heads on CPU; a support set of 16 batches (4096) so that 400 steps cycle it 25 times.
    common.shrink(config, arg, cpu_method_kw=dict(proj_hidden=(512, 512), proj_dim=128, pred_hidden=(512,),
                                                  queue_size=4096),
                  runlocal_method_kw=dict(proj_hidden=(64, 64), proj_dim=32, pred_hidden=(64,), queue_size=64))
    return config
