"""Generate the colab/*.ipynb notebooks from the Python cells below (reviewable source of truth).

    python colab/_build.py            # rewrite the notebooks (stored WITHOUT outputs)
    python colab/_build.py --check    # exit 1 if a notebook differs from this file

Every notebook starts with the same setup cell (Colab: clone + pip install; local: the repo
checkout, no network) and a `parameters` cell (`SMALL`, read from $JAXSSL_NOTEBOOK_SMALL; CI
runs the notebooks with SMALL=1, see tests/test_notebooks.py). The notebooks import `jaxssl`
and `configs` only: no library code is copied into them.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

HERE = pathlib.Path(__file__).resolve().parent

SETUP = r'''# Setup: on Colab (GPU/TPU) clone jaxssl and install its pinned requirements with the
# accelerator build of JAX; locally use this repository checkout (nothing is downloaded).
import os
import pathlib
import shutil
import subprocess
import sys

REPO_URL = "https://github.com/jaxssl/jaxssl.git"  # <- the jaxssl repository (or your fork) to install
JAX_VERSION = "0.10.2"
IN_COLAB = "google.colab" in sys.modules


def find_repo() -> pathlib.Path:
    """The checkout holding jaxssl/: $JAXSSL_REPO, else the working directory or one of its parents."""
    if os.environ.get("JAXSSL_REPO"):
        return pathlib.Path(os.environ["JAXSSL_REPO"]).resolve()
    for path in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents]:
        if (path / "jaxssl" / "__init__.py").exists() and (path / "configs").is_dir():
            return path
    raise FileNotFoundError("Run this notebook from a jaxssl checkout (e.g. its colab/ folder) or set $JAXSSL_REPO.")


if IN_COLAB:
    REPO = pathlib.Path("/content/jaxssl")
    if not REPO.exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(REPO)], check=True)
if IN_COLAB and not (REPO / ".installed").exists():
    if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_ACCELERATOR_TYPE") or os.path.exists("/dev/accel0"):
        jax_pkg = f"jax[tpu]=={JAX_VERSION}"
    elif shutil.which("nvidia-smi"):
        jax_pkg = f"jax[cuda12]=={JAX_VERSION}"
    else:
        jax_pkg = f"jax=={JAX_VERSION}"
    # The pinned requirements minus the CPU-only builds (Colab brings TensorFlow for TFDS).
    reqs = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r and not r.startswith(("jax==", "jaxlib==", "tensorflow-cpu"))]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", jax_pkg, *reqs], check=True)
    (REPO / ".installed").touch()
    # If Colab asks to restart the runtime (upgraded preinstalled packages), restart and run this
    # cell again: the clone and the install are skipped the second time.
elif not IN_COLAB:
    REPO = find_repo()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `jaxssl` and `configs` import from the checkout

import jax

print("devices:", jax.devices())
print("backend:", jax.default_backend(), f"({jax.device_count()} device(s))")
ACCELERATOR = jax.default_backend() in ("gpu", "tpu")
'''

PARAMETERS = r'''# Parameters (papermill-style tag "parameters"). CI sets JAXSSL_NOTEBOOK_SMALL=1: a tiny model,
# a few steps and a data subset, so the whole notebook runs in seconds on a CPU.
SMALL = os.environ.get("JAXSSL_NOTEBOOK_SMALL", "0") == "1"
'''

DATA = r'''# Data: CIFAR-10 as a TFDS dataset in DATA_DIR. Colab downloads it with plain TFDS; offline
# machines build the same TFDS dataset from the arrays in ../shared/data (or $JAXSSL_SOURCE_DIR).
import tempfile

import jaxssl

WORKDIR = pathlib.Path(os.environ.get("JAXSSL_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(prefix="jaxssl_nb_"))
# SMALL, offline and no $TFDS_DATA_DIR: a class-balanced subset (2,048 train / 512 test images) in the workdir.
SUBSET = SMALL and not IN_COLAB and not os.environ.get("TFDS_DATA_DIR")
DATA_DIR = str(WORKDIR / "tfds") if SUBSET else (
    os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets"))


def prepare_cifar10(data_dir: str = DATA_DIR) -> str:
    try:
        jaxssl.data.get_source("cifar10", "train", data_dir)  # already there (TFDS or jaxssl.data.prepare)
    except FileNotFoundError:
        if IN_COLAB:
            import tensorflow_datasets as tfds
            tfds.builder("cifar10", data_dir=data_dir).download_and_prepare(file_format="array_record")
        else:
            limits = dict(train_limit=2048, test_limit=512) if SUBSET else {}
            jaxssl.data.ensure_prepared("cifar10", data_dir, **limits)
    return data_dir


prepare_cifar10()
print("CIFAR-10 in", DATA_DIR, "| workdir", WORKDIR)
'''


# ----------------------------------------------------------------------------------------------
# The notebooks: (file name, title markdown, needs CIFAR-10, [("md" | "code", source), ...]).
# ----------------------------------------------------------------------------------------------
NOTEBOOKS: dict[int, tuple[str, str, bool, list[tuple[str, str]]]] = {}

NOTEBOOKS[1] = ("01_quickstart_simclr_cifar10.ipynb", r'''
# jaxssl quickstart: SimCLR on CIFAR-10, then kNN

[Open in Colab](https://colab.research.google.com/github/jaxssl/jaxssl/blob/main/colab/01_quickstart_simclr_cifar10.ipynb)
(Runtime -> Change runtime type -> GPU or TPU).

Pre-train a ResNet-18 with SimCLR (Chen et al., 2020, arXiv:2002.05709) through the same
`configs/simclr_cifar10.py` and `jaxssl.train.loop.train` as the command line
(`python -m jaxssl.main --config configs/simclr_cifar10.py --workdir W`), evaluate the frozen
backbone with weighted kNN on the CIFAR-10 test set and plot the loss from `metrics.jsonl`.
''', True, [
    ("md", "## Config\nThe published recipe on an accelerator (shortened to `EPOCHS`), the `:cpu` variant on a "
           "CPU, and a tiny model on a data subset when `SMALL`."),
    ("code", r'''
from configs import simclr_cifar10

EPOCHS = 100  # the paper trains 1000; 100 epochs already reach a useful kNN accuracy
if SMALL:
    config = simclr_cifar10.get_config("runlocal")
    config.model.width = 0.0625  # 4-8-16-32 channels
    config.method_kw.update(proj_hidden=(32,), proj_dim=16)
    config.input.views = tuple(dict(v, crop_size=16) for v in config.input.views)
    config.update(total_steps=3, log_steps=1)
elif ACCELERATOR:
    config = simclr_cifar10.get_config()  # ResNet-18, batch 512, LARS, T = 0.5
    config.total_steps = EPOCHS * 50_000 // config.batch_size  # 50,000 training images
    config.evals.knn.every_steps = 0  # kNN once, at the end
else:
    config = simclr_cifar10.get_config("cpu")  # ~10 minutes on 2 cores
config.data.data_dir = DATA_DIR
config.progress_bar = not SMALL
print(config.model, "| batch", config.batch_size, "| steps", config.total_steps)
'''),
    ("md", "## Train\nCheckpoints, `metrics.jsonl` and TensorBoard events go to the workdir; re-running the cell "
           "resumes from the newest checkpoint."),
    ("code", r'''
from jaxssl.train import loop

workdir = WORKDIR / "simclr"
results = loop.train(config, str(workdir))
print(f"final loss {results['loss']:.4f}")
print(f"kNN top-1: {results['knn_k20_t0.07_top1']:.2%} (k=20, T=0.07), "
      f"{results['knn_k200_t0.1_top1']:.2%} (k=200, T=0.1)")
'''),
    ("md", "## Loss curve"),
    ("code", r'''
import matplotlib.pyplot as plt

series = jaxssl.viz.metric_series(jaxssl.viz.read_metrics(workdir))
steps, loss = series["loss"]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(steps, loss, marker="o" if len(steps) < 20 else None)
ax.set(xlabel="step", ylabel="NT-Xent loss", title="SimCLR on CIFAR-10")
plt.show()
'''),
])

NOTEBOOKS[2] = ("02_dino_vit_attention.ipynb", r'''
# DINO on a ViT: self-distillation on CIFAR-10 and the CLS attention maps

[Open in Colab](https://colab.research.google.com/github/jaxssl/jaxssl/blob/main/colab/02_dino_vit_attention.ipynb)

Train DINO (Caron et al., 2021, arXiv:2104.14294) with a ViT-tiny with 4x4 patches
(`configs/dino_cifar10.py:vit`), then look at "the self-attention of the [CLS] token on the heads
of the last layer" (DINO Sec. 4.2.1, Fig. 3) with `jaxssl.evaluate.attention`: one map per head
and DINO's masks keeping 60% of each map's mass.
''', True, [
    ("code", r'''
from configs import dino_cifar10

EPOCHS = 100  # on an accelerator; the recipe's 1000 epochs are a multi-hour run
if SMALL:
    config = dino_cifar10.get_config("vit,runlocal")  # 2 blocks, width 32, 2 heads
    config.update(total_steps=3, log_steps=1)
    config.evals.knn.enabled = False
elif ACCELERATOR:
    config = dino_cifar10.get_config("vit")  # ViT-Ti/4, AdamW, DINO's ViT schedules
    config.total_steps = EPOCHS * 50_000 // config.batch_size  # 50,000 training images
    config.evals.knn.every_steps = 0
else:
    config = dino_cifar10.get_config("vit,cpu")  # 4 blocks, width 64, 1000 steps (~28 min on 2 cores)
config.data.data_dir = DATA_DIR
config.progress_bar = not SMALL
print(config.model, "| steps", config.total_steps)
'''),
    ("code", r'''
from jaxssl.train import loop

workdir = WORKDIR / "dino_vit"
results = loop.train(config, str(workdir))
print(f"final loss {results['loss']:.4f}, teacher entropy {results['teacher_entropy']:.3f}")
if "knn_k20_t0.07_top1" in results:
    print(f"kNN top-1: {results['knn_k20_t0.07_top1']:.2%} (k=20, T=0.07)")
'''),
    ("md", "## Attention of the teacher's last block\nThe EMA teacher (what DINO evaluates) is read back "
           "from the last checkpoint; `vit_cls_attention` runs its backbone on test images."),
    ("code", r'''
import jax.numpy as jnp
import orbax.checkpoint as ocp
from configs import common
from jaxssl import augment
from jaxssl.evaluate import attention

step = max(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
vit = jaxssl.models.get(**config.model)
variables = {"params": state["teacher"]["params"]["backbone"]}

images = next(iter(jaxssl.data.make_eval_iter("cifar10", "test", data_dir=DATA_DIR, batch_size=8)))["image"]
x = augment.normalize(augment.to_float(images), common.CIFAR10_MEAN, common.CIFAR10_STD)
cls_attn, grid = attention.vit_cls_attention(vit, variables, x)  # (B, heads, N) over the patch grid
maps = attention.attention_maps(cls_attn, grid, image_size=images.shape[1:3])  # nearest upsampling
masks = attention.threshold_masks(maps, mass=0.6)
kept = jnp.sum(jnp.where(masks, maps, 0.0), axis=(-2, -1))
print(f"attention maps: {tuple(maps.shape)} (images, heads, H, W) from a {grid[0]}x{grid[1]} patch grid")
print(f"mass kept by the masks: {float(kept.min()):.3f} (min over images and heads, >= 0.6)")
'''),
    ("code", r'''
import matplotlib.pyplot as plt
import numpy as np

rows, heads = min(len(images), 6), maps.shape[1]
fig, axes = plt.subplots(rows, heads + 2, figsize=(1.6 * (heads + 2), 1.6 * rows), squeeze=False)
for i in range(rows):
    axes[i, 0].imshow(images[i])
    for h in range(heads):
        axes[i, 1 + h].imshow(np.asarray(maps[i, h]), cmap="inferno")
    axes[i, -1].imshow(images[i])
    axes[i, -1].imshow(np.asarray(masks[i].any(0)), cmap="gray", alpha=0.5)
for j, title in enumerate(["image", *[f"head {h}" for h in range(heads)], "60% mask"]):
    axes[0, j].set_title(title, fontsize=8)
for ax in axes.flat:
    ax.axis("off")
plt.tight_layout()
plt.show()
'''),
])

NOTEBOOKS[3] = ("03_functional_library.ipynb", r'''
# jaxssl as a functional library: compose your own method

[Open in Colab](https://colab.research.google.com/github/jaxssl/jaxssl/blob/main/colab/03_functional_library.ipynb)

No config and no trainer: pick a backbone (`jaxssl.models.get`), augmentation views (plain
dicts for `jaxssl.augment`), a loss (`jaxssl.losses`), wrap them in a `jaxssl.methods.base.Method`
and hand it to the shared, sharded train step (`jaxssl.train.step.make_train_step`) over a
`jax.sharding.Mesh`. Then evaluate the frozen backbone with `jaxssl.evaluate.knn`.
''', True, [
    ("md", "## 1. Backbone, head and views"),
    ("code", r'''
import jax
import jax.numpy as jnp
import numpy as np
import optax
from configs import common
from jaxssl import augment, evaluate, losses, models, monitors
from jaxssl.methods import base
from jaxssl.models import heads
from jaxssl.train import sharding, step as step_lib

if SMALL:  # one ViT block: compiles in seconds on a CPU
    backbone = models.get("vit", variant="Ti/4", width=32, depth=1, num_heads=2, img_size=32)
    BATCH, STEPS, LR, KNN_TRAIN, KNN_TEST = 32, 4, 1e-3, 256, 128
else:  # a ResNet-18 with the CIFAR stem
    backbone = models.get("resnet", variant="18", cifar_stem=True, width=1.0 if ACCELERATOR else 0.125)
    BATCH, STEPS, LR, KNN_TRAIN, KNN_TEST = 256, 2000 if ACCELERATOR else 200, 2e-3, 50_000, 10_000
net = heads.BackboneWithHeads(backbone, projector=heads.MLP(hidden=(256, 256), out=256))

# Two views of each image, described as dicts (see jaxssl.augment.DEFAULT_VIEW for every key).
view = dict(crop_size=32, crop_scale=(0.2, 1.0), flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
            saturation=0.2, hue=0.1, grayscale_p=0.2, solarize_p=0.1,
            mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD)
views = [view, view]
'''),
    ("code", r'''
import matplotlib.pyplot as plt

# The views as the train step will make them (without the normalisation, to display them).
sample = next(iter(jaxssl.data.make_eval_iter("cifar10", "test", data_dir=DATA_DIR, batch_size=8)))["image"]
shown = jax.jit(lambda r, x: augment.make_views(r, x, [dict(v, mean=None, std=None) for v in views]))(
    jax.random.key(0), sample)
fig, axes = plt.subplots(3, 8, figsize=(8, 3))
for j in range(8):
    for i, img in enumerate([sample[j] / 255.0, shown[0][j], shown[1][j]]):
        axes[i, j].imshow(np.clip(np.asarray(img), 0, 1))
        axes[i, j].axis("off")
fig.suptitle("rows: test images, view 1, view 2", fontsize=9)
plt.show()
'''),
    ("md", "## 2. The loss and the `Method`\nA VICReg-style objective (Bardes et al., 2022, arXiv:2105.04906) "
           "with our own weights; swap in `losses.nt_xent(z1, z2, 0.5).mean()` for SimCLR."),
    ("code", r'''
SIM, STD, COV = 25.0, 25.0, 1.0  # lambda, mu, nu


def loss_fn(params, model_state, teacher, extra, views, rng, step):
    del teacher, rng, step  # no EMA teacher, no randomness or schedule in the loss
    # One forward pass per view, so BatchNorm statistics are per view (VICReg's reference).
    outs, new_state = net.apply({"params": params, **model_state}, views, train=True,
                                mutable=list(model_state), method="each")
    z1, z2 = outs[0]["projection"], outs[1]["projection"]
    terms = losses.vicreg_terms(z1, z2)  # invariance, variance, covariance over the GLOBAL batch
    loss = SIM * terms["invariance"] + STD * terms["variance"] + COV * terms["covariance"]
    return loss, (new_state, extra, {**terms, "z_std": monitors.feature_std(z1)})


method = base.Method(net, loss_fn)  # no init_extra, no teacher_momentum
'''),
    ("md", "## 3. The sharded train step, by hand\nState replicated, batch split over the mesh's `data` "
           "axis, old state donated; augmentation runs on device inside the step."),
    ("code", r'''
mesh = sharding.make_mesh()  # every device, one "data" axis
print("mesh:", dict(mesh.shape))
sharding.check_batch_size(BATCH, mesh)
schedule = optax.warmup_cosine_decay_schedule(0.0, LR, max(STEPS // 10, 1), STEPS)
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))

example = jnp.zeros((2, 32, 32, 3), jnp.float32)
state = jax.jit(lambda r: step_lib.init_state(method, tx, r, example),
                out_shardings=sharding.replicated(mesh))(jax.random.key(0))
train_step = step_lib.make_train_step(method, tx, views, mesh)
train_iter = jaxssl.data.make_train_iter("cifar10", "train", data_dir=DATA_DIR, global_batch_size=BATCH, seed=0)
rng, history = jax.random.key(1), []
for step in range(1, STEPS + 1):
    batch = sharding.to_global(next(train_iter), mesh)  # host numpy -> global jax.Array
    state, metrics = train_step(state, batch, rng)
    if step % max(STEPS // 10, 1) == 0 or step == STEPS:
        m = jax.device_get(metrics)
        history.append((step, float(m["loss"])))
        print(f"step {step}: loss {m['loss']:.4f} (inv {m['invariance']:.3f}, var {m['variance']:.3f}, "
              f"cov {m['covariance']:.3f}), z_std {m['z_std']:.3f}")
'''),
    ("md", "## 4. kNN on frozen backbone features"),
    ("code", r'''
# One jitted eval-mode forward (normalisation only, no augmentation), rows sharded over the devices.
embed = jaxssl.evaluate.features.make_fn(method.net, mesh, dict(mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD))
variables = {"params": state.params, **state.model_state}


def features(split: str, limit: int):
    # A padded evaluation pass; padding rows are dropped and features gathered from every process.
    batches = jaxssl.data.make_eval_iter("cifar10", split, data_dir=DATA_DIR, batch_size=128)
    return jaxssl.evaluate.features.of_split(embed, variables, batches, mesh, limit=limit)


acc = evaluate.knn.knn(*features("train", KNN_TRAIN), *features("test", KNN_TEST), k=20, temperature=0.07,
                   num_classes=10, mesh=mesh)
print(f"kNN top-1: {acc['top1']:.2%}, top-5: {acc['top5']:.2%} (k=20, T=0.07)")
'''),
])

NOTEBOOKS[4] = ("04_data2vec_modalities.ipynb", r'''
# data2vec across modalities: images, text and speech with one method

[Open in Colab](https://colab.research.google.com/github/jaxssl/jaxssl/blob/main/colab/04_data2vec_modalities.ipynb)

data2vec (Baevski et al., 2022, arXiv:2202.03555) regresses, at masked positions, the average of
the EMA teacher's top-K layers. One method file (`jaxssl/methods/data2vec.py`) and one Transformer
body (`jaxssl.models.transformer`) with a modality-specific input encoder serve CIFAR-10 images
(patches, block masking), Tiny Shakespeare (a byte tokenizer, BERT masking) and spoken digits
from FSDD (a wav2vec 2.0 conv encoder, span masking). All three go through the one trainer,
`jaxssl.train.loop.train`: `config.data` picks the input (TFDS images, text tokens, waveforms).
''', True, [
    ("code", r'''
# Text and speech sources. Locally: tiny_shakespeare.txt and fsdd.npz in ../shared/data (or
# $JAXSSL_SOURCE_DIR). On Colab: written once from the TFDS datasets tiny_shakespeare and spoken_digit.
import numpy as np


def colab_sources(root: pathlib.Path = pathlib.Path("/content/jaxssl_sources")) -> None:
    import tensorflow_datasets as tfds
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "tiny_shakespeare.txt").exists():
        parts = [next(iter(tfds.as_numpy(tfds.load("tiny_shakespeare", split=s))))["text"].decode()
                 for s in ("train", "validation", "test")]
        (root / "tiny_shakespeare.txt").write_text("".join(parts))
    if not (root / "fsdd.npz").exists():
        clips = list(tfds.as_numpy(tfds.load("spoken_digit", split="train")))
        names = [os.path.basename(c["audio/filename"].decode()).removesuffix(".wav").split("_") for c in clips]
        lengths = np.array([len(c["audio"]) for c in clips], np.int32)
        audio = np.zeros((len(clips), lengths.max()), np.int16)
        for i, c in enumerate(clips):
            audio[i, :lengths[i]] = c["audio"]
        np.savez(root / "fsdd.npz", audio=audio, lengths=lengths, sample_rate=np.int64(8000),
                 digit=np.array([int(d) for d, _, _ in names]), speaker=np.array([s for _, s, _ in names]),
                 index=np.array([int(i) for _, _, i in names]), class_names=np.array(list("0123456789")))
    os.environ["JAXSSL_SOURCE_DIR"] = str(root)


if IN_COLAB:
    colab_sources()
print("sources:", jaxssl.data.find_source_dir())
'''),
    ("md", "## Images (CIFAR-10)\n`:runlocal` sizes when `SMALL`, else `:cpu` sizes (4 blocks of width 64; "
           "`get_config()` is the paper's ViT-B recipe)."),
    ("code", r'''
from configs import data2vec_image_cifar10, data2vec_speech_fsdd, data2vec_text_shakespeare
from jaxssl.train import loop

SIZE = "runlocal" if SMALL else "cpu"
curves = {}

config = data2vec_image_cifar10.get_config(SIZE)
config.data.data_dir = DATA_DIR
config.progress_bar = not SMALL
if SMALL:
    config.update(total_steps=4, log_steps=1)
    config.evals.knn.enabled = False
result = loop.train(config, str(WORKDIR / "data2vec_image"))
curves["image"] = jaxssl.viz.metric_series(jaxssl.viz.read_metrics(WORKDIR / "data2vec_image"))["loss"]
print(f"image: loss {curves['image'][1][0]:.4f} -> {curves['image'][1][-1]:.4f}")
if "knn_k20_t0.07_top1" in result:
    print(f"image kNN top-1: {result['knn_k20_t0.07_top1']:.2%}")
'''),
    ("md", "## Text (Tiny Shakespeare, bytes)"),
    ("code", r'''
config = data2vec_text_shakespeare.get_config(SIZE)
config.progress_bar = not SMALL
if SMALL:
    config.update(total_steps=4, log_steps=1)
result = loop.train(config, str(WORKDIR / "data2vec_text"))
curves["text"] = jaxssl.viz.metric_series(jaxssl.viz.read_metrics(WORKDIR / "data2vec_text"))["loss"]
print(f"text: loss {curves['text'][1][0]:.4f} -> {curves['text'][1][-1]:.4f}")
'''),
    ("md", "## Speech (FSDD spoken digits)"),
    ("code", r'''
config = data2vec_speech_fsdd.get_config(SIZE)
config.progress_bar = not SMALL
if SMALL:
    config.update(total_steps=4, log_steps=1)
    config.evals.knn.enabled = False  # the digit kNN embeds all 3,000 clips
result = loop.train(config, str(WORKDIR / "data2vec_speech"))
curves["speech"] = jaxssl.viz.metric_series(jaxssl.viz.read_metrics(WORKDIR / "data2vec_speech"))["loss"]
print(f"speech: loss {curves['speech'][1][0]:.4f} -> {curves['speech'][1][-1]:.4f}")
if "knn_k20_t0.07_top1" in result:
    print(f"speech kNN top-1 (spoken digit): {result['knn_k20_t0.07_top1']:.2%}")
'''),
    ("code", r'''
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (modality, (steps, values)) in zip(axes, curves.items()):
    ax.plot(steps, values, marker="o" if len(steps) < 20 else None)
    ax.set(title=f"data2vec {modality}", xlabel="step", ylabel="loss")
plt.tight_layout()
plt.show()
'''),
])


def build(n: int) -> nbformat.NotebookNode:
    """Notebook n: title markdown, setup, parameters, [data], then its own cells; no outputs."""
    name, title, needs_cifar10, own = NOTEBOOKS[n]
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell(title.strip()), v4.new_code_cell(SETUP.strip()),
             v4.new_code_cell(PARAMETERS.strip(), metadata={"tags": ["parameters"]})]
    if needs_cifar10:
        cells.append(v4.new_code_cell(DATA.strip()))
    cells += [(v4.new_markdown_cell if kind == "md" else v4.new_code_cell)(src.strip()) for kind, src in own]
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: rebuilding gives byte-identical files
    return v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}, "accelerator": "GPU", "colab": {"provenance": [], "name": name}})


def render(n: int) -> str:
    return nbformat.writes(build(n)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a notebook is stale")
    args = parser.parse_args(argv)
    stale = []
    for n, (name, *_) in NOTEBOOKS.items():
        path, text = HERE / name, render(n)
        nbformat.validate(nbformat.reads(text, as_version=4))
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print("wrote", path)
    if stale:
        print("stale notebooks (run python colab/_build.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
