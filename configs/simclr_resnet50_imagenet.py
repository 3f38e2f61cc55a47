r"""SimCLR ResNet-50 on ImageNet-1k (Chen et al., 2020, arXiv:2002.05709). For accelerators.

The paper's default ImageNet setting (Sec. B.1 and google-research/simclr's README pretraining command
`--train_batch_size=4096 --train_epochs=100 --learning_rate=0.3 --weight_decay=1e-6 --temperature=0.1
--image_size=224 --resnet_depth=50 --use_blur=True --color_jitter_strength=1.0`): LARS with lr 0.3 x
batch/256 (4.8 at batch 4096), 10 warm-up epochs then cosine, weight decay 1e-6 (biases and norms
excluded), temperature 0.1, projection MLP 2048 -> 128, augmentation of Appendix A (random resized crop
0.08-1 at 224, flip, colour jitter strength 1.0 w.p. 0.8, grayscale 0.2, blur 0.5). Images are decoded
and cropped on the host (jaxssl/data/encoded.py), colour runs on device. Data: TFDS `imagenet2012`,
prepared by TFDS's builder from the hand-downloaded archives in `config.data.manual_dir`:

  python -m jaxssl.main --config configs/simclr_resnet50_imagenet.py --workdir workdirs/simclr_r50 \
      --config.data.manual_dir=/path/to/ILSVRC2012_archives

`:runlocal`: the same recipe for 4 steps of 32 images (a smoke test on an accelerator).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, runlocal=False)
    view = common.simclr_view(224, strength=1.0, blur_p=0.5, mean=common.IMAGENET_MEAN, std=common.IMAGENET_STD)
    config, epoch = common.imagenet_config("simclr", batch_size=4096, epochs=100, views=(view, view),
                                           model=common.RESNET50, knn_every_epochs=10)
    config.method_kw = dict(temperature=0.1, proj_hidden=(2048,), proj_dim=128)
    config.optimizer = common.lars(0.3, warmup_steps=10 * epoch, weight_decay=1e-6, trust_coefficient=0.001)
    if arg.runlocal:
        common.shrink_for_runlocal(config, backbone=False)
    return config
