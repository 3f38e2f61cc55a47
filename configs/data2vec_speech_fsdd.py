r"""data2vec speech on the Free Spoken Digit Dataset (Baevski et al., 2022, arXiv:2202.03555).

Default: the paper's speech recipe (Sec. 4.2) -- the wav2vec 2.0 conv feature encoder (512
channels, strides 5,2,2,2,2,2,2) at 16 kHz (FSDD's 8 kHz clips are resampled), a 768-wide
12-layer body, span masking p = 0.65, M = 10, K = 8 instance-normalised top layers, squared error
(beta = 0, fairseq examples/data2vec/config/audio/pretraining/base_librispeech.yaml:67; the paper
text says 0.25), teacher EMA 0.999 -> 0.9999 with the teacher sharing the student's feature encoder
(fairseq `ema_transformer_only`), Adam (b2 0.98). Batch, steps and learning rate are our choices
for 45 minutes of audio. Evaluation: kNN of spoken digits, train clips -> official test clips.

  python -m jaxssl.main --config configs/data2vec_speech_fsdd.py:cpu --workdir workdirs/data2vec_speech_fsdd
"""
import ml_collections

from configs import common
from jaxssl.models import encoders


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = common.sequence_config(
        "data2vec", batch_size=64, total_steps=20_000, data=dict(name="fsdd", sample_rate=16_000, clip_seconds=1.0),
        model=dict(name="transformer", modality="speech", width=768, depth=12, num_heads=12,
                   conv_layers=encoders.WAV2VEC2_CONV, pos_conv_kernel=95, pos_conv_groups=16,
                   # data2vec's audio front-end has 5 positional convs of kernel 95 // 5 = 19 and a
                   # LayerNorm after every feature conv (fairseq audio/pretraining/base_librispeech.yaml:
                   # 57, 73-74). Deviation, on purpose: FSDD clips are zero-padded to 1 s and there is no
                   # padding mask, so the all-zero frames of the padding reach each of those LayerNorms
                   # as constant vectors, whose gradient is scaled by 1/sqrt(eps) per layer: at step 1
                   # the gradient norm overflowed float32 (measured, `:runlocal`). wav2vec 2.0's "default"
                   # mode (GroupNorm over time on the first conv) is used instead; `extractor_mode=
                   # "layer_norm"` is the reference's option.
                   extractor_mode="default", pos_conv_depth=5,
                   # fairseq data2vec_audio: post-norm blocks (`layer_norm_first` False, the model default).
                   norm_first=False),
        evals=dict(knn=common.sequence_knn_eval(num_classes=10)))
    config.method_kw = dict(top_k=8, target_norm="instance", final_norm=False, beta=0.0, mask_prob=0.65,
                            mask_span=10, base_momentum=0.999, final_momentum=0.9999, ema_anneal_steps=10_000,
                            ema_transformer_only=True)
    config.optimizer = common.adamw(5e-4, lr_scaling="none", warmup_steps=1000, weight_decay=0.01, b2=0.98,
                                    grad_clip=1.0)
    common.shrink(config, arg, batch_size=32, total_steps=300, warmup_steps=20, base_lr=1e-3, runlocal_batch_size=16,
                  cpu_method_kw=dict(top_k=3, ema_anneal_steps=200),
                  runlocal_method_kw=dict(top_k=2, ema_anneal_steps=10))
    if arg.cpu or arg.runlocal:
        # 1 s at 8 kHz, a 3-layer 64-channel conv encoder of stride 80 (100 frames, 10 ms each).
        config.data.sample_rate = 8000
        config.model.update(conv_layers=((64, 10, 5), (64, 4, 4), (64, 4, 4)), pos_conv_kernel=16, pos_conv_groups=4)
    return config
