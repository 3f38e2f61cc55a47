r"""data2vec text on Tiny Shakespeare with a byte-level tokenizer (Baevski et al., 2022, arXiv:2202.03555).

Default: fairseq's released data2vec 1.0 text recipe on bytes: a RoBERTa-base-sized post-norm
body (768, 12 layers, 12 heads), K = 10 top layers each layer-normalised, a 2-layer regression
head, smooth-L1 with beta = 4 and loss scale 1 regressed at the <mask> positions only (fairseq
examples/data2vec/config/text/pretraining/base.yaml:53,56,60,75 and models/data2vec_text.py),
RoBERTa dynamic masking 15% with 80/10/10 (paper Sec. 4.3, arXiv:1907.11692), teacher EMA
0.999 -> 0.9999, Adam (b2 0.98, weight decay 0.01, RoBERTa), sequences of 512. The batch, steps
and learning rate here are our choices for a 1 MB corpus. Bytes have no labels, so no evaluator runs (`config.evals = {}`):

  python -m jaxssl.main --config configs/data2vec_text_shakespeare.py:cpu --workdir workdirs/data2vec_text_shakespeare
"""
import ml_collections

from configs import common
from jaxssl.data import text


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, cpu=False, runlocal=False)
    config = common.sequence_config(
        "data2vec", batch_size=64, total_steps=20_000, data=dict(name="tiny_shakespeare", seq_len=512),
        model=dict(name="transformer", modality="text", width=768, depth=12, num_heads=12,
                   vocab_size=text.VOCAB_SIZE, max_len=512,
                   # fairseq's data2vec text encoder is post-norm (text/pretraining/base.yaml:75
                   # `normalize_before: false`); the regression head has 2 layers (base.yaml:53, data2vec's default).
                   norm_first=False))
    config.method_kw = dict(top_k=10, target_norm="layer", final_norm=False, beta=4.0, loss_scale=1.0,
                            text_targets="mask_token", mask_prob=0.15,
                            mask_id=text.MASK, num_tokens=text.NUM_BYTES, base_momentum=0.999,
                            final_momentum=0.9999, ema_anneal_steps=10_000, ema_transformer_only=True)
    config.optimizer = common.adamw(2e-4, lr_scaling="none", warmup_steps=1000, weight_decay=0.01, b2=0.98,
                                    grad_clip=1.0)
    common.shrink(config, arg, batch_size=32, total_steps=300, warmup_steps=20, base_lr=1e-3, runlocal_batch_size=16,
                  cpu_method_kw=dict(top_k=3, ema_anneal_steps=200),
                  runlocal_method_kw=dict(top_k=2, ema_anneal_steps=10))
    for flag, seq_len in ((arg.cpu or arg.runlocal, 128), (arg.runlocal, 32)):
        if flag:
            config.model.max_len = config.data.seq_len = seq_len
    return config
