r"""Learning parity: jaxssl vs lightly 1.6 on the same budget, CIFAR-10 weighted kNN (issue 19).

For each method of `--methods` and each seed of `--seeds`, trains

* jaxssl's method from its CIFAR-10 `:cpu` config (`configs/<method>_cifar10.py:cpu`, or the
  argument `--config-arg` names, e.g. `vit,cpu` for DINO on the `:cpu` ViT; with
  `total_steps = --steps` and `seed = seed`) through the trainer's own pieces: `methods.build`,
  `train.optim.make`, `train.step.init_state` / `make_train_step` (on-device augmentation of
  `config.input.views`), created and keyed as `jaxssl/train/loop.py` does; and
* lightly's implementation (`benchmarks/_peers.py`: `from_config`) with every number read from
  the same config object: the same backbone (ResNet-18, CIFAR stem, `config.model.width`, the
  same zero-init of the last BN; a transformer: the timm model jaxssl's export maps to), head
  sizes and loss settings (`config.method_kw`), batch size, number of steps, optimiser (lightly's
  LARS / torch SGD / AdamW with jaxssl's decay mask, `fixed_lr_paths`, weight-decay schedule and
  gradient clipping), learning rate (jaxssl's own warm-up + cosine schedule evaluated per step),
  EMA momentum (jaxssl's `Method.teacher_momentum` schedule), and views (lightly's
  `BYOLView1Transform` configured from each jaxssl view dict) in a DataLoader on PIL images, or with
  `--peer-views jaxssl` on jaxssl's own views (a diagnostic that separates views from training; the
  `<side>_<op>_<other>_rest` take the ops up to one from one side and the later ops from the other),
  with `--peer-init jaxssl` from jaxssl's initial backbone weights (a diagnostic that takes the
  random-init draw out), with `--peer-swav-bias off` without the bias of lightly's SwAV prototypes;

on the same CIFAR-10 images in the same order (one index stream per seed: a fresh permutation of
the 50,000 training images per epoch, `batch_size` images per step, the same for both sides).
Then both backbones, and both at random init (before training), go through the same evaluation:
eval-mode backbone features of the first `--knn-train` training and `--knn-test` test images
(normalisation only) and `jaxssl.evaluate.knn.knn_protocols` with the config's protocols
(k=20/T=0.07 and k=200/T=0.1); with `--linear-probe` (by default for MAE and data2vec, `PROBED`)
also jaxssl's own linear probe (`jaxssl.evaluate.linear_probe.linear_probe`, `--probe-epochs`) on
those same features, so the probe itself is identical on both sides. Seed policy: seed s is
`config.seed = s` for jaxssl and `torch.manual_seed(s)` / `np.random.seed(s)` / `random.seed(s)`
for lightly, and the data order of s.

Covered: SimCLR, BYOL, MoCo v2 (lightly's memory bank, `SplitBatchNorm` + `batch_shuffle`), MoCo v3
(lightly's heads; lightly 1.6 has no MoCo v3 loss, the official `ctr` is written out), SimSiam,
VICReg, Barlow Twins, SwAV, DINO (all ResNet-18 at `:cpu`; DINO also on the `:cpu` ViT with
`--config-arg vit,cpu`), MAE (the `:cpu` image transformer) and iBOT (the `:cpu` ViT), the
transformers as the timm model jaxssl's export maps to (`_peers_vit.timm_backbone`; both parameter
counts are printed and recorded as `backbone_params`). SwAV (`_peers_multicrop.py`): lightly's
`SwaVProjectionHead`, `SwaVPrototypes` (frozen for `freeze_prototypes_steps`, `normalize()` each
step), `SwaVLoss` and a `MemoryBankModule` queue per high-resolution crop, filled every step and
used from `queue_start_step` once full, as jaxssl's. DINO (`_peers_dino.py`): lightly's
`DINOProjectionHead` (with the config's BatchNorm), `DINOLoss` with jaxssl's teacher-temperature
schedule, an EMA teacher without drop-path on jaxssl's momentum schedule, the last layer frozen
for `freeze_last_layer_steps`; both sides evaluate the student (jaxssl's `Method.eval_teacher` is
False). MAE (`_peers_vit.py`): lightly's `MaskedVisionTransformerTIMM`, `random_token_mask`,
`MaskedVisionTransformerDecoderTIMM` and a Linear prediction head, MSE on the masked patches with
per-patch normalised targets (`norm_pix_loss`); features: the mean of the final-LayerNorm'd tokens
on both sides. iBOT (`_peers_dino.IBOT`): the DINO pieces on lightly's
`MaskedVisionTransformerTIMM` (mask token, timm's init and learned position table), lightly's
`random_block_mask` on the student's global crops, one head shared by [CLS] and patch tokens,
`DINOLoss` + `IBOTPatchLoss` weighted as the config, AdamW with the weight-decay schedule and
per-tensor clipping; features: the final-LayerNorm'd [CLS] token on both sides. Multi-crop
methods put each run of same-size crops through the backbone in one call
(`_peers_multicrop.by_resolution`), as jaxssl's `crop_grouping="resolution"`. data2vec
image (`--methods data2vec_image`, `JAXSSL_ONLY`) has no lightly counterpart: its jaxssl side runs alone,
on the same transformer as MAE's row, against its own random init and MAE.
Initialisation: the ResNet's convolutions follow `config.model.conv_init` on both sides
(`_peers.conv_init_`: torchvision's kaiming normal for the PyTorch-origin recipes, flax's
lecun_normal for SimCLR and BYOL); lightly's heads are `nn.Linear` with PyTorch's default init,
which is jaxssl's `head_init="torch"` of the PyTorch-origin methods (SimCLR's and BYOL's jaxssl
heads are lecun_normal, their TF/haiku references'). Both matter at this budget (RESULTS.md 7).
Known implementation differences kept on purpose (it is lightly's implementation that is
measured): lightly's head details (e.g. SimCLR's and MoCo v3's output BN is affine, jaxssl's is
not; lightly's `SwaVPrototypes` have a bias, jaxssl's and the reference's have none), its loss
scalings (BYOL/SimSiam: 0.5 x the two negative cosines), the view differences listed in
`_peers.view_transform`, the order of the EMA update (lightly: before the forward), MAE's
init where it is not the reference's (both sides now use MAE's xavier-uniform Linears and
patch projection, jaxssl's `weight_init` default since this comparison found the difference; the
patch bias is jaxssl's torch Conv2d default, as the reference, lightly's not checked) and its target
normalisation (`normalize_mean_var`: unbiased
variance, as the reference; jaxssl: biased), lightly's token count (`int(N (1 - r))` kept;
jaxssl masks `round(r N)`: the same 16 of 64 at `:cpu`), and the prototype freeze (lightly drops
the prototypes' gradient, so LARS skips them; jaxssl zeroes it and still applies the 1e-6 decay).
iBOT: lightly's masking is DINOv2's (exactly `mask_probability` of the images masked, their ratios
spread evenly over `mask_ratio`; jaxssl draws each image's mask and ratio independently), its
patch centre is updated from the masked tokens only (jaxssl and the reference: all patch tokens),
and its mask token (1, 1, D) is weight-decayed by the rank rule (jaxssl's (D,) is not).

  PYTHONPATH=. .venv-bench/bin/python benchmarks/learning_parity.py --methods simclr --steps 500
  PYTHONPATH=. .venv-bench/bin/python benchmarks/learning_parity.py --methods mae --steps 400  # + linear probe
  # tiny end-to-end check of the machinery (minutes; numbers meaningless):
  PYTHONPATH=. .venv-bench/bin/python benchmarks/learning_parity.py --methods byol --steps 5 \
      --knn-train 2000 --knn-test 500 --tag _smoke

  # both sides at once, one process each (each gets about one of two cores), then one table:
  M=byol,vicreg; for side in jaxssl lightly; do PYTHONPATH=. .venv-bench/bin/python \
      benchmarks/learning_parity.py --methods $M --sides $side --tag _$side & done; wait
  PYTHONPATH=. .venv-bench/bin/python benchmarks/learning_parity.py --merge \
      benchmarks/results/learning_parity_byol_vicreg_500steps_{jaxssl,lightly}.json --tag _byol_vicreg

Writes benchmarks/results/learning_parity_<methods>_<steps>steps<tag>.json after every run (a
partial sweep keeps what finished) and prints a markdown table.
"""
from __future__ import annotations

import ast
import importlib
import os
import random
import time
from typing import Sequence

import _common
import numpy as np

COVERED = ("simclr", "byol", "moco_v2", "moco_v3", "simsiam", "vicreg", "barlow_twins", "swav", "dino", "mae",
           "ibot")
# Methods without a lightly counterpart: jaxssl's side only, compared with MAE on the same network and
# with its own random init (issue 19: "data2vec has no lightly counterpart").
JAXSSL_ONLY = ("data2vec_image",)
# Methods whose runs also get the linear probe by default (`--linear-probe auto`): issue 19 asks for it
# for the reconstruction methods, whose features a kNN reads poorly.
PROBED = ("mae", "data2vec_image")


def method_config(method: str, steps: int, seed: int, overrides: Sequence[str] = (), arg: str = "cpu"):
    """`configs/<method>_cifar10.py:<arg>` (`:cpu` by default) with `total_steps` and `seed` set (the
    method's schedules follow `total_steps` through the config's references), then each `--set KEY=VALUE` of
    `overrides` (a dotted config key and a Python literal, e.g. `method_kw.epsilon=0.03`), as the
    trainer's `--config.KEY=VALUE`; the run's recorded config shows them."""
    config = importlib.import_module(f"configs.{method}_cifar10").get_config(arg)
    config.total_steps = steps
    config.seed = seed
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. method_kw.epsilon=0.03.")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise ValueError(f"--set {item!r}: the config has no key {key!r}.")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word: a string
        node[leaf] = value
    return config


def index_batches(n_images: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """`steps` batches of image indices: a fresh permutation per epoch, the last partial batch dropped."""
    rng, out = np.random.default_rng(seed), []
    per_epoch = n_images // batch_size
    while len(out) < steps:
        perm = rng.permutation(n_images)
        out += [perm[i * batch_size:(i + 1) * batch_size] for i in range(min(per_epoch, steps - len(out)))]
    return out


def knn_top1(f_train, y_train, f_test, y_test, protocols) -> dict[str, float]:
    """Top-1 kNN accuracies (fractions) of `jaxssl.evaluate.knn.knn_protocols`, one key per protocol."""
    from jaxssl.evaluate.knn import knn_protocols
    accs = knn_protocols(f_train, y_train, f_test, y_test, protocols=protocols, num_classes=10)
    return {k: v for k, v in accs.items() if k.endswith("_top1")}


def evaluation(train, test, protocols, probe_epochs: int | None, seed: int):
    """feats -> {"knn": ..., ["linear_probe": ...]}: one function for both sides and random init.

    `feats(images)` gives a side's eval-mode backbone features; `train`/`test` are (images, labels).
    The kNN is `knn_top1`; with `probe_epochs`, the linear probe is jaxssl's own
    (`jaxssl.evaluate.linear_probe.linear_probe`: features standardised with the train set's
    statistics as MAE's affine-free BN, SGD momentum 0.9, lr 0.1 per 256, batch 256, cosine, no
    weight decay, mini-batch order from `seed`) on the same features, so the probe is identical.
    """
    from jaxssl.evaluate.linear_probe import linear_probe

    def evaluate(feats):
        f_train, f_test = feats(train[0]), feats(test[0])
        out = {"knn": knn_top1(f_train, train[1], f_test, test[1], protocols)}
        if probe_epochs:
            res = linear_probe(f_train, train[1], f_test, test[1], num_classes=10, epochs=probe_epochs, seed=seed)
            out["linear_probe"] = {k: res[k] for k in ("top1", "top5")}
        return out
    return evaluate


def log_every(steps: int) -> int:
    return max(1, steps // 50)


def progress(side: str, step_loss: tuple[int, float], steps: int, t0: float) -> None:
    """A line every tenth of the run: a long run on a loaded machine shows where it is."""
    step, loss = step_loss
    if step % max(1, steps // 10) == 0 or step == steps:
        print(f"    {side} step {step}/{steps}: loss {loss:.4f}, {time.perf_counter() - t0:.0f} s "
              f"(load {_common.loadavg():.2f})", flush=True)


def jaxssl_init(config):
    """(method, tx, lr schedule, rng, init) of jaxssl's side, keyed as jaxssl/train/loop.py `_setup`:
    rng = key(seed); `init(fold_in(rng, 1))` makes the initial state, the step's base key is fold_in 2."""
    import jax

    from jaxssl import methods
    from jaxssl.data import inputs
    from jaxssl.train import optim, step as step_lib
    method = methods.build(config)
    tx, lr = optim.make(config.optimizer, config.batch_size, config.total_steps)
    init = lambda r: step_lib.init_state(method, tx, r, inputs.example(config))
    return method, tx, lr, jax.random.key(config.seed), init


def train_jaxssl(config, x_train, batches, evaluate):
    """Train jaxssl's method on `batches`; returns (record, random-init kNN, trained kNN)."""
    import jax

    from jaxssl.evaluate import features
    from jaxssl.train import sharding as shd, step as step_lib

    mesh = shd.make_mesh()
    method, tx, lr, rng, init = jaxssl_init(config)
    state_sh = shd.state_shardings(jax.eval_shape(init, jax.random.fold_in(rng, 1)), mesh)
    state = jax.jit(init, out_shardings=state_sh)(jax.random.fold_in(rng, 1))
    view = dict(config.evals.knn.view)
    feats = lambda st, x: features.of_images({"params": st.params, **st.model_state}, x, model=method.net,
                                             mesh=mesh, view=view, batch_size=500)
    t = time.perf_counter()
    random_init = evaluate(lambda x: feats(state, x))
    random_eval_s = time.perf_counter() - t
    train_step = step_lib.make_train_step(method, tx, [dict(v) for v in config.input.views], mesh, lr,
                                          state_shardings=state_sh)
    step_rng, every = jax.random.fold_in(rng, 2), log_every(len(batches))
    losses, t0, first_step_s = [], time.perf_counter(), None
    for i, idx in enumerate(batches):
        state, metrics = train_step(state, shd.to_global({"image": x_train[idx]}, mesh), step_rng)
        if i == 0:  # compilation included
            jax.block_until_ready(metrics["loss"])
            first_step_s = time.perf_counter() - t0
        if (i + 1) % every == 0 or i + 1 == len(batches):
            losses.append((i + 1, float(metrics["loss"])))
            progress("jaxssl", losses[-1], len(batches), t0)
    jax.block_until_ready(state)
    train_s = time.perf_counter() - t0
    t = time.perf_counter()
    trained = evaluate(lambda x: feats(state, x))
    return (dict(steps=len(batches), train_s=train_s, first_step_s=first_step_s, losses=losses,
                 eval_s=time.perf_counter() - t, random_init_eval_s=random_eval_s), random_init, trained)


def _nchw(views) -> "torch.Tensor":
    """A (B, H, W, C) view batch (a jax or NumPy array) as a torch NCHW tensor."""
    import torch
    return torch.from_numpy(np.asarray(views).transpose(0, 3, 1, 2).copy())


def jaxssl_views(config, x_train, batches):
    """`--peer-views jaxssl`: per step, the views of jaxssl's own on-device augmentation
    (`jaxssl.augment.make_views` of `config.input.views`, key `fold_in(key(seed), step)`) as torch
    NCHW tensors, instead of lightly's PIL transforms: the same augmentation code on both sides, so a
    remaining gap is the training side's, and a gap that closes is the views'."""
    import jax

    from jaxssl import augment
    views = [dict(v) for v in config.input.views]
    make = jax.jit(lambda key, x: augment.make_views(key, x, views))
    key = jax.random.key(int(config.seed))
    for i, idx in enumerate(batches):
        out = make(jax.random.fold_in(key, i), x_train[idx])
        yield [_nchw(v) for v in out], None


# The ops of a view in the order both sides apply them; `--peer-views <side>_<op>_<other>_rest` splits after one.
VIEW_OPS = ("crop", "flip", "jitter", "grayscale", "blur", "solarize")
_LIGHTLY_STEP = {"crop": "RandomResizedCrop", "flip": "RandomHorizontalFlip", "jitter": "RandomApply",
                 "grayscale": "RandomGrayscale", "blur": "GaussianBlur", "solarize": "RandomSolarization"}
_JAXSSL_PROB = {"flip": "flip_p", "jitter": "jitter_p", "grayscale": "grayscale_p", "blur": "blur_p",
                "solarize": "solarize_p"}
SPLIT_VIEWS = tuple(f"{a}_{op}_{b}_rest" for a, b in (("lightly", "jaxssl"), ("jaxssl", "lightly"))
                    for op in VIEW_OPS)


def split_views(config, x_train, batches, first: str, last_op: str):
    """`--peer-views <first>_<last_op>_<other>_rest`: each view's ops up to and including `last_op`
    (of `VIEW_OPS`, the order both sides apply them) from side `first`, the later ops and the
    normalisation from the other side (after `solarize`: only the normalisation): which part of the
    views a views gap is in. The hand-over is a uint8 image, as PIL holds every view. lightly's part
    is its view transform (`_peers.view_transform`) cut at that op's step (its no-op vertical flip and
    rotation go with the flip; torch's RNG); jaxssl's part is `jaxssl.augment` with the other side's
    ops switched off (probability 0; after lightly's crop `make_views(..., cropped=True)` crops
    nothing), keyed as `jaxssl_views`. Yields torch NCHW tensors, as `jaxssl_views`."""
    import jax
    import torch
    import torchvision.transforms.v2 as T
    from PIL import Image

    import _peers
    from jaxssl import augment
    views = [{**augment.DEFAULT_VIEW, **dict(v)} for v in config.input.views]
    ours = VIEW_OPS[:VIEW_OPS.index(last_op) + 1] if first == "jaxssl" else VIEW_OPS[VIEW_OPS.index(last_op) + 1:]
    theirs = []
    for v in views:
        steps = _peers.view_transform(v).transform.transforms
        names = [type(t).__name__ for t in steps]
        later = [names.index(_LIGHTLY_STEP[op]) for op in VIEW_OPS[VIEW_OPS.index(last_op) + 1:]]
        cut = min(later) if later else names.index("ToTensor")  # lightly's first step after `last_op`
        theirs.append(T.Compose(steps[:cut] if first == "lightly" else steps[cut:]))
    jv = [{**v, **{_JAXSSL_PROB[op]: 0.0 for op in _JAXSSL_PROB if op not in ours}} for v in views]
    if first == "jaxssl":  # jaxssl's ops as uint8, unnormalised; then lightly's later steps (ToTensor, Normalize)
        jv = [{**v, "mean": None, "std": None} for v in jv]
    key = jax.random.key(int(config.seed))
    if first == "lightly":
        make = jax.jit(lambda key, xs: augment.make_views(key, xs, jv, cropped=True))
        for i, idx in enumerate(batches):
            xs = [np.stack([np.asarray(tf(Image.fromarray(x_train[j]))) for j in idx]) for tf in theirs]
            out = make(jax.random.fold_in(key, i), xs)
            yield [_nchw(v) for v in out], None
        return
    to_uint8 = lambda xs: [jax.numpy.round(x * 255).astype(jax.numpy.uint8) for x in xs]
    make = jax.jit(lambda key, x: to_uint8(augment.make_views(key, x, jv)))
    for i, idx in enumerate(batches):
        out = [np.asarray(x) for x in make(jax.random.fold_in(key, i), x_train[idx])]
        yield [torch.stack([tf(Image.fromarray(im)) for im in x]) for tf, x in zip(theirs, out)], None


def load_jaxssl_init(config, model, images: np.ndarray) -> float:
    """`--peer-init jaxssl`: the peer's ResNet backbone (and its momentum copy, if any) gets jaxssl's
    initial backbone weights for this config and seed (`jaxssl.train.loop`'s init key, exported with
    `jaxssl.models.pytorch_layout.to_torch` in the torchvision layout and renamed to the peer
    `_peers.ResNet18`'s keys), so both sides start from the same network: a diagnostic that takes
    the random-init draw out of a comparison. The heads keep the peer's own init. Checked: the
    eval-mode features of `images` on both sides agree to 1e-4 (returns the largest difference)."""
    import re

    import jax
    import torch

    import _peers
    from jaxssl.evaluate import features
    from jaxssl.models import pytorch_layout
    from jaxssl.train import sharding as shd
    if config.model.name != "resnet" or int(config.method_kw.get("bn_groups", 1)) > 1:
        raise NotImplementedError("--peer-init jaxssl: ResNet backbones with plain BatchNorm only (not the "
                                  "SplitBatchNorm of MoCo v2's bn_groups, whose running statistics are per group).")
    method, _, _, rng, init = jaxssl_init(config)
    state = init(jax.random.fold_in(rng, 1))
    variables = pytorch_layout.backbone_variables({"params": state.params, **state.model_state})
    tensors, _ = pytorch_layout.to_torch(config.model, variables, "torchvision")
    def peer_key(key: str) -> str:
        """torchvision's ResNet keys -> `_peers.ResNet18`'s: conv1/bn1 -> stem.0/1, layer{i}.{j} -> layers.{2(i-1)+j}."""
        key = re.sub(r"^conv1\.", "stem.0.", re.sub(r"^bn1\.", "stem.1.", key))
        return re.sub(r"^layer(\d)\.(\d)\.", lambda m: f"layers.{2 * (int(m[1]) - 1) + int(m[2])}.", key)

    state_dict = {peer_key(k): torch.from_numpy(np.asarray(v)) for k, v in tensors.items()}
    for name in ("backbone", "backbone_momentum"):
        if hasattr(model, name):
            getattr(model, name).load_state_dict(state_dict, strict=True)
    view = config.evals.knn.view
    ours = features.of_images({"params": state.params, **state.model_state}, images, model=method.net,
                              mesh=shd.make_mesh(), view=dict(view), batch_size=len(images))
    theirs = _peers.features(model.backbone, images, view.mean, view.std)
    gap = float(np.abs(np.asarray(ours) - np.asarray(theirs)).max())
    if gap > 1e-4:
        raise AssertionError(f"--peer-init jaxssl: the peer's features of jaxssl's init differ by {gap:.2e}.")
    return gap


def train_lightly(config, x_train, batches, evaluate, workers: int, peer_views: str = "lightly",
                  peer_init: str = "lightly", **peer_kw):
    """Train lightly's implementation (`_peers.from_config`) on `batches`; returns as `train_jaxssl`.
    `peer_views="jaxssl"`: the views come from `jaxssl_views` (a diagnostic of the views);
    `peer_init="jaxssl"`: the backbone starts from jaxssl's init (`load_jaxssl_init`); `peer_kw`: the
    peer's diagnostic switches (`--peer-swav-bias`)."""
    import torch

    import _peers
    from jaxssl import methods
    seed = int(config.seed)
    torch.manual_seed(seed)
    np.random.seed(seed)  # lightly's blur and solarisation draw from NumPy / random
    random.seed(seed)
    model = _peers.from_config(config, **peer_kw)
    if peer_init == "jaxssl":
        gap = load_jaxssl_init(config, model, x_train[:16])
        print(f"    lightly starts from jaxssl's init: features equal to {gap:.1e}", flush=True)
    momentum = methods.build(config).teacher_momentum  # jaxssl's EMA schedule, or None
    backbone_params = None
    if config.model.name != "resnet":  # the same architecture on both sides: the same parameter count
        import _peers_vit
        n_jax, n_torch = _peers_vit.param_counts(config, model.backbone)
        backbone_params = {"jaxssl": n_jax, "torch": n_torch}
        print(f"    backbone parameters (no position tables, mask tokens): jaxssl {n_jax:,}, torch {n_torch:,}",
              flush=True)
    opt, before_step, clip = _peers.optimizer(model, config.optimizer, config.batch_size, config.total_steps)
    view = config.evals.knn.view
    feats = lambda x: _peers.features(model.backbone, x, view.mean, view.std)
    t = time.perf_counter()
    random_init = evaluate(feats)
    random_eval_s = time.perf_counter() - t
    if peer_views == "jaxssl":
        data = jaxssl_views(config, x_train, batches)
    elif peer_views != "lightly":  # "<side>_<op>_<other side>_rest"
        data = split_views(config, x_train, batches, *peer_views.split("_")[:2])
    else:
        data = _peers.batches_loader(x_train, _peers.views_transform(config.input.views), batches, workers)
    every, losses = log_every(len(batches)), []
    model.train()
    t0, first_step_s, steps = time.perf_counter(), None, 0
    for i, (views, _) in enumerate(data):
        before_step(i)
        model.step = i  # schedules inside the model (teacher temperature, frozen layers, queue start) read it
        if momentum is not None:
            model.momentum = float(momentum(i))
        opt.zero_grad(set_to_none=True)
        loss = model.loss(*views)
        loss.backward()
        if hasattr(model, "after_backward"):  # e.g. DINO's frozen last layer: its gradients dropped
            model.after_backward()
        clip()
        opt.step()
        steps += 1
        if i == 0:
            first_step_s = time.perf_counter() - t0
        if (i + 1) % every == 0 or i + 1 == len(batches):
            losses.append((i + 1, float(loss.item())))
            progress("lightly", losses[-1], len(batches), t0)
    train_s = time.perf_counter() - t0
    t = time.perf_counter()
    trained = evaluate(feats)
    return (dict(steps=steps, train_s=train_s, first_step_s=first_step_s, losses=losses,
                 eval_s=time.perf_counter() - t, random_init_eval_s=random_eval_s, backbone_params=backbone_params),
            random_init, trained)


def pct(d: dict, key: str) -> str:
    return f"{100 * d[key]:.1f}" if key in d else "-"


def table(runs: list[dict], protocols) -> str:
    """kNN columns per protocol, linear-probe columns when a run has them, then training times."""
    cols = [("knn", f"knn_k{int(k)}_t{float(t):g}_top1", f"k={k}") for k, t in protocols]
    if any("linear_probe" in r.get(side, {}) for r in runs for side in ("jaxssl", "lightly")):
        cols.append(("linear_probe", "top1", "linear"))
    head = ["method", "seed", "steps"]
    for _, _, name in cols:
        head += [f"jaxssl {name}", f"lightly {name}", f"random jaxssl / lightly {name}"]
    head += ["jaxssl train s", "lightly train s"]
    rows = []
    for r in runs:
        j, lt = r.get("jaxssl", {}), r.get("lightly", {})
        row = [r["method"], r["seed"], r["steps"]]
        for what, key, _ in cols:
            rand = f"random_init_{what}"
            row += [pct(j.get(what, {}), key), pct(lt.get(what, {}), key),
                    f"{pct(j.get(rand, {}), key)} / {pct(lt.get(rand, {}), key)}"]
        row += [f"{j['train_s']:.0f}" if j else "-", f"{lt['train_s']:.0f}" if lt else "-"]
        rows.append(row)
    return _common.table(head, rows)


def merge(paths: list[str], tag: str) -> None:
    """One record from single-side result files: the sides of each (method, seed, steps) side by side."""
    import json
    runs, sources = {}, []
    for path in paths:
        with open(path) as f:
            record = json.load(f)
        sources.append({k: record.get(k) for k in ("sides", "commit", "argv", "finished_utc", "load_avg_end")}
                       | {"file": os.path.relpath(path, _common.ROOT)})
        for run in record["runs"]:
            key = (run["method"], run["seed"], run["steps"])
            runs.setdefault(key, {}).update(run)  # the side keys ("jaxssl", "lightly") of each file join
    record = {"benchmark": "learning_parity", "merged_from": sources, **_common.machine_info(),
              "runs": list(runs.values())}
    _common.write_json(f"learning_parity_merged{tag}", record)
    print(table(record["runs"], ((20, 0.07), (200, 0.1))))


def main():
    p = _common.parser(__doc__)
    p.set_defaults(threads=1)
    p.add_argument("--methods", default=",".join(COVERED),
                   help=f"comma-separated, of {', '.join(COVERED)}; and {', '.join(JAXSSL_ONLY)} (jaxssl's side only).")
    p.add_argument("--steps", type=int, default=500, help="training steps per run (both sides).")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; one run per side per seed.")
    p.add_argument("--knn-train", type=int, default=50_000, help="training images in the kNN bank (first N).")
    p.add_argument("--knn-test", type=int, default=10_000, help="test images evaluated (first N).")
    p.add_argument("--sides", default="jaxssl,lightly", help="which implementations to train.")
    p.add_argument("--workers", type=int, default=0, help="lightly DataLoader workers (0: in the main process).")
    p.add_argument("--peer-views", choices=("lightly", "jaxssl", *SPLIT_VIEWS), default="lightly",
                   help="the lightly side's views: lightly's transforms (the comparison), or jaxssl's own "
                        "augmentation of the same config (a diagnostic: isolates the views from the training), or "
                        "<side>_<op>_<other>_rest: the ops up to <op> from one side, the later ones from the other "
                        "(`split_views`: which part of the views).")
    p.add_argument("--peer-init", choices=("lightly", "jaxssl"), default="lightly",
                   help="the lightly side's backbone init: its own draw (the comparison), or jaxssl's initial "
                        "weights of the same config and seed (a diagnostic that takes the init draw out; ResNet).")
    p.add_argument("--peer-swav-bias", choices=("on", "off"), default="on",
                   help="lightly's SwaVPrototypes have a bias (on, what lightly does); off drops it, as the "
                        "reference's and jaxssl's prototypes (a diagnostic of that difference; SwAV only).")
    p.add_argument("--linear-probe", choices=("auto", "on", "off"), default="auto",
                   help=f"also the linear probe (jaxssl's, on both sides' features of the kNN images): auto = for "
                        f"{', '.join(PROBED)} only.")
    p.add_argument("--probe-epochs", type=int, default=100, help="linear-probe epochs over the --knn-train images.")
    p.add_argument("--config-arg", default="cpu",
                   help="the argument of every `configs/<method>_cifar10.py` (default cpu; e.g. vit,cpu runs DINO on "
                        "the :cpu ViT, the transformer of iBOT's row); tag the run to keep its results apart.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value on both sides (repeatable), e.g. --set method_kw.epsilon=0.03.")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="instead of training: join the runs of these result files (e.g. one `--sides jaxssl` and "
                        "one `--sides lightly` process run at the same time) by method, seed and steps, print "
                        "their table and write results/learning_parity_merged<tag>.json.")
    args = p.parse_args()
    if args.merge:
        return merge(args.merge, args.tag)
    names = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(names) - set(COVERED) - set(JAXSSL_ONLY))
    if unknown:
        p.error(f"not covered: {unknown}; covered: {', '.join(COVERED)}, and {', '.join(JAXSSL_ONLY)} on jaxssl's "
                f"side only (see the docstring).")
    sides = args.sides.split(",")
    if "lightly" in sides:
        import torch
        torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = _common.load_cifar10()
    kx, ky = x_train[:args.knn_train], y_train[:args.knn_train]
    qx, qy = x_test[:args.knn_test], y_test[:args.knn_test]
    record = {"benchmark": "learning_parity", **vars(args), **_common.machine_info(), "runs": []}
    name = f"learning_parity_{'_'.join(names) if len(names) < len(COVERED) else 'all'}_{args.steps}steps{args.tag}"
    protocols = None
    for method in names:
        for seed in (int(s) for s in args.seeds.split(",")):
            config = method_config(method, args.steps, seed, args.overrides, args.config_arg)
            protocols = tuple(tuple(pr) for pr in config.evals.knn.protocols)
            probe = args.linear_probe == "on" or (args.linear_probe == "auto" and method in PROBED)
            evaluate = evaluation((kx, ky), (qx, qy), protocols, args.probe_epochs if probe else None, seed)
            batches = index_batches(len(x_train), config.batch_size, args.steps, seed)
            run = {"method": method, "seed": seed, "steps": args.steps, "batch_size": config.batch_size,
                   "config": config.to_dict()}
            for side in sides:
                if side == "lightly" and method in JAXSSL_ONLY:
                    print(f"{method}: no lightly counterpart, jaxssl's side only", flush=True)
                    continue
                print(f"{method} seed {seed}: {side}, {args.steps} steps (load {_common.loadavg():.2f})", flush=True)
                load0 = _common.loadavg()
                if side == "jaxssl":
                    info, rand, trained = train_jaxssl(config, x_train, batches, evaluate)
                else:
                    peer_kw = {"prototype_bias": False} if method == "swav" and args.peer_swav_bias == "off" else {}
                    info, rand, trained = train_lightly(config, x_train, batches, evaluate, args.workers,
                                                       args.peer_views, args.peer_init, **peer_kw)
                run[side] = {**info, **trained, **{f"random_init_{k}": v for k, v in rand.items()},
                             "load_avg_start": load0, "load_avg_end": _common.loadavg()}
                print(f"  {side}: {info['train_s']:.0f} s train (first step {info['first_step_s']:.1f} s), "
                      f"last loss {info['losses'][-1][1]:.4f}, {trained}, random init {rand}", flush=True)
            record["runs"].append(run)
            _common.write_json(name, record)  # after every run: a partial sweep keeps what finished
    print(table(record["runs"], protocols or ((20, 0.07), (200, 0.1))))


if __name__ == "__main__":
    main()
