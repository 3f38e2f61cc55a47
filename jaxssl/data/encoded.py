"""Datasets of encoded images of many sizes (JPEG/PNG): TFDS builders like imagenette and imagenet2012,
and image folders. Decoded and cropped on the host, one fixed-size uint8 array per view.

A TFDS dataset is *encoded* when its ``image`` feature has no fixed height/width (``(None, None, 3)``:
imagenette, imagenet2012, most image-classification builders); a fixed-size one (CIFAR-10 and MNIST,
``(32, 32, 3)``) keeps :mod:`jaxssl.data.pipeline`'s path, whose batches the step crops on device.
A folder is ``config.data.name = "folder:/path/to/images"`` (see :class:`FolderSource`).

Training (:func:`make_train_iter`), the same on every process::

    range(len) -> seed(seed).shuffle() -> repeat() -> batch(GLOBAL batch, drop_remainder)
      -> random_map(_CropBatch: this process's rows of the global batch -> read -> decode + crop views)

Every process walks the same global stream of shuffled record indices and decodes only its own rows
``[i * B_local, (i + 1) * B_local)`` of each global batch. The crop randomness of an example comes from
grain's per-element generator of the *global* batch (seed and batch index) and the example's row in it,
so the global batch is identical for any number of processes (2 processes x 2 devices == 1 x 4), and a
resumed iterator (``set_state``) yields bit-identical views. Output per process::

    {"views": [uint8 (B_local, h_v, w_v, 3) for each view], "label": int32 (B_local,)}

``"label"`` is absent for an unlabelled folder. Photometric augmentation follows on device
(``jaxssl.augment.make_views(..., cropped=True)``). Evaluation (:func:`make_eval_iter`) decodes with
:func:`jaxssl.data.transforms.center_crop` (shorter side to size * 256/224, centre crop). Both resize the
crops with ``resize`` = ``config.data.resize`` in the trainer: "opencv" by default, "pil" for torchvision's
exact pixels (:mod:`jaxssl.data.resize`).
"""
from __future__ import annotations

import logging
import math
import os
import pathlib
from typing import Any, Mapping, Sequence

import grain
import numpy as np
from PIL import Image

from jaxssl.data import pipeline, sources, transforms

log = logging.getLogger(__name__)

FOLDER_PREFIX = "folder:"
_SKIP_NAMES = ("Thumbs.db", "desktop.ini")


def is_folder(name: str) -> bool:
    """True for ``"folder:/path"``."""
    return name.startswith(FOLDER_PREFIX)


def is_encoded(name: str, data_dir: str | os.PathLike | None) -> bool:
    """Whether ``name``'s images are decoded and cropped on the host (see the module docstring)."""
    if is_folder(name):
        return True
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
        feature = tfds.builder(name, data_dir=data_dir).info.features["image"]
    except Exception:  # noqa: BLE001 - not prepared / no image key: the fixed-size path reports it
        return False
    return isinstance(feature, tfds.features.Image) and None in tuple(feature.shape)[:2]


class FolderSource:
    """Random-access records ``{"image": bytes, "label": int, "path": str}`` of the images under ``root``.

    Every regular file below ``root`` (recursively, symlinks followed, names starting with "." and
    ``Thumbs.db``/``desktop.ini`` ignored) must be an image Pillow reads: its header is read once here,
    in sorted path order. An unreadable file (zero bytes, not an image) is a ValueError naming it, or with
    ``skip_bad=True`` it is left out, fully decoded first so that corrupt/truncated files are caught
    too, and the count is logged. Labels: when every image lies in a sub-folder of ``root``, the label
    is the index of its first-level sub-folder in sorted order (torchvision's ``ImageFolder``) and
    ``class_names`` lists them; otherwise the folder is unlabelled (``class_names`` is None).
    """

    def __init__(self, root: str | os.PathLike, *, skip_bad: bool = False):
        self.root = pathlib.Path(os.path.expanduser(os.fspath(root))).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"Image folder {self.root} does not exist or is not a folder. Set "
                                    f"config.data.name='folder:/path/to/images' to an existing folder.")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and p.name not in _SKIP_NAMES and not any(q.startswith(".") for q in p.relative_to(
                           self.root).parts[:-1]))
        good, bad = [], []
        for path in files:
            try:
                _check_image(path, full=skip_bad)
                good.append(path)
            except ValueError as e:
                if not skip_bad:
                    raise ValueError(f"{e} Or set config.data.skip_bad_images=True to leave such files "
                                     f"out (they are counted in the log).") from None
                bad.append(path)
        if bad:
            log.warning("Image folder %s: skipped %d unreadable file(s) of %d (config.data.skip_bad_images), "
                        "e.g. %s.", self.root, len(bad), len(files), ", ".join(str(p) for p in bad[:3]))
        self.skipped = len(bad)
        if not good:
            raise ValueError(f"Image folder {self.root} holds no readable images ({len(files)} file(s), "
                             f"{len(bad)} skipped as unreadable). Put JPEG/PNG files in it (sub-folders "
                             f"are searched, and name the classes when every image is in one).")
        self.paths = good
        rel = [p.relative_to(self.root).parts for p in good]
        if all(len(parts) > 1 for parts in rel):
            self.class_names = sorted({parts[0] for parts in rel})
            index = {c: i for i, c in enumerate(self.class_names)}
            self.labels = np.array([index[parts[0]] for parts in rel], np.int32)
        else:
            self.class_names, self.labels = None, None
        log.info("Image folder %s: %d images, %s.", self.root, len(good),
                 f"{len(self.class_names)} classes by sub-folder" if self.class_names else "unlabelled")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[int(i)]
        record = {"image": path.read_bytes(), "path": str(path)}
        if self.labels is not None:
            record["label"] = self.labels[int(i)]
        return record


def _check_image(path: pathlib.Path, *, full: bool) -> None:
    """ValueError naming ``path`` when Pillow cannot read its header (or, if ``full``, decode it)."""
    if full:
        transforms.decode(path.read_bytes(), name_for_errors=str(path))
        return
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes), not an image. {transforms.FIX_HINT}")
    try:
        with Image.open(path) as img:
            img.size  # pylint: disable=pointless-statement
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e}). {transforms.FIX_HINT}") from e


def get_source(name: str, split: str, data_dir: str | os.PathLike | None, *, skip_bad: bool = False):
    """The records of an encoded dataset: a :class:`FolderSource` or a TFDS source keeping image bytes."""
    if is_folder(name):
        if split not in ("train", ""):
            raise ValueError(f"An image folder has one split, 'train' (all its images); got split {split!r}.")
        return FolderSource(name[len(FOLDER_PREFIX):], skip_bad=skip_bad)
    return sources.get_source(name, split, data_dir, encoded=True)


def _named(record: Mapping[str, Any], where: str, index: int) -> dict[str, Any]:
    """The record with a name for error messages ("path"/"id" if it has one, else dataset[split] #index)."""
    record = dict(record)
    if not any(k in record for k in ("id", "file_name", "filename", "path")):
        record["id"] = f"{where} record {index}"
    return record


class _CropBatch(grain.transforms.RandomMap):
    """Global batch of record indices -> this process's rows, decoded and cropped into fixed-size views."""

    def __init__(self, src, where: str, views: Sequence[Mapping[str, Any]], lo: int, local: int,
                 use_draft: bool, resize: str):
        self.src, self.where, self.lo, self.local = src, where, lo, local
        self.crop = transforms.Views(views, use_draft=use_draft, resize=resize)

    def random_map(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        # One seed per row of the GLOBAL batch, drawn the same on every process: a row's crops never
        # depend on the process count. Not rng.spawn() (grain reuses the generator, see pipeline.py).
        seeds = rng.integers(2**63, size=len(indices))[self.lo:self.lo + self.local]
        rows = [int(i) for i in indices[self.lo:self.lo + self.local]]
        records = pipeline._read(self.src, rows)  # pylint: disable=protected-access
        out = [self.crop.random_map(_named(r, self.where, i), np.random.default_rng(int(s)))
               for r, i, s in zip(records, rows, seeds)]
        batch = {"views": [np.stack([o["views"][v] for o in out]) for v in range(len(self.crop.views))]}
        if "label" in out[0]:
            batch["label"] = np.asarray([o["label"] for o in out], np.int32)
        return batch


def make_train_iter(name: str, split: str, views: Sequence[Mapping[str, Any]], *, data_dir=None,
                    global_batch_size: int, seed: int, process_index: int | None = None,
                    process_count: int | None = None, worker_count: int = 0, num_threads: int = 2,
                    prefetch: int = 4, use_draft: bool = True, resize: str = "pil",
                    skip_bad: bool = False) -> grain.DatasetIterator:
    """Infinite process-local batches of host-cropped views (module docstring); resumes exactly.

    ``views``: the config's view dicts; each needs ``crop_size`` (``crop_scale``/``crop_ratio`` default to
    torchvision's). ``resize``: the crops' resampling backend, "pil" (torchvision's pixels) or "opencv"
    (faster; the trainer's default ``config.data.resize``), see :mod:`jaxssl.data.resize`. Raises
    ValueError for a batch larger than the split, a bad view or an unknown backend.
    """
    index, count = pipeline.processes(process_index, process_count)
    local = pipeline._local_batch(global_batch_size, count, "global_batch_size")  # pylint: disable=protected-access
    src = get_source(name, split, data_dir, skip_bad=skip_bad)
    where = f"{name}[{split}]"
    if global_batch_size > len(src):
        raise ValueError(f"global_batch_size ({global_batch_size}) is larger than {where} ({len(src)} images). "
                         f"Use a smaller batch_size or a larger dataset.")
    crop = _CropBatch(src, where, views, index * local, local, use_draft, resize)
    ds = grain.MapDataset.range(len(src)).seed(seed).shuffle().repeat()
    ds = ds.batch(global_batch_size, drop_remainder=True).random_map(crop)
    return pipeline._to_iter(ds, num_threads, prefetch, worker_count)  # pylint: disable=protected-access


class _EvalBatch(grain.transforms.Map):
    """Padded indices of this process's slice -> {"image": centre crops, "label", "mask"}."""

    def __init__(self, src, where: str, start: int, n: int, size: int, use_draft: bool, resize: str):
        self.src, self.where, self.start, self.n, self.size = src, where, start, n, size
        self.eval_view = transforms.EvalView(size, use_draft=use_draft, resize=resize)

    def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        real = [self.start + int(i) for i in indices if i < self.n]
        records = pipeline._read(self.src, real)  # pylint: disable=protected-access
        images = np.zeros((len(indices), self.size, self.size, 3), np.uint8)
        labels = np.full((len(indices),), -1, np.int32)
        for j, (r, i) in enumerate(zip(records, real)):
            if "label" not in r:
                raise ValueError(f"{self.where}: evaluation needs labels, and this dataset has none (an image "
                                 f"folder is labelled only when every image lies in a class sub-folder).")
            out = self.eval_view.map(_named(r, self.where, i))
            images[j], labels[j] = out["image"], out["label"]
        return {"image": images, "label": labels, "mask": np.arange(len(indices)) < len(real)}


def make_eval_iter(name: str, split: str, size: int, *, data_dir=None, batch_size: int,
                   process_index: int | None = None, process_count: int | None = None, worker_count: int = 0,
                   num_threads: int = 2, prefetch: int = 4, use_draft: bool = True, resize: str = "pil",
                   skip_bad: bool = False) -> grain.DatasetIterator:
    """One padded pass in storage order, ``pipeline.make_eval_iter``'s contract, images centre-cropped to ``size``.

    ``resize`` as :func:`make_train_iter`'s.
    """
    index, count = pipeline.processes(process_index, process_count)
    src = get_source(name, split, data_dir, skip_bad=skip_bad)
    where = f"{name}[{split}]"
    if len(src) == 0:
        raise ValueError(f"{where} is empty.")
    first = src[0]
    if "label" not in first:
        raise ValueError(f"{where}: evaluation needs labels, and this dataset has none (an image folder is "
                         f"labelled only when every image lies in a class sub-folder). Set config.evals to {{}}.")
    start, stop = index * len(src) // count, (index + 1) * len(src) // count
    num_batches = math.ceil(math.ceil(len(src) / count) / batch_size)
    ds = grain.MapDataset.range(num_batches * batch_size).batch(batch_size)
    ds = ds.map(_EvalBatch(src, where, start, stop - start, int(size), use_draft, resize))
    return pipeline._to_iter(ds, num_threads, prefetch, worker_count)  # pylint: disable=protected-access
