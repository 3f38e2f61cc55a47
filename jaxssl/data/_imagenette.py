"""Offline TFDS ``imagenette/112px-v2`` from ``imagenette2-112_train.tar`` (shared/data).

The archive holds fast.ai's ``imagenette2`` train split as JPEGs of unequal size whose
shorter side is 112 px (``imagenette2-112/train/<wnid>/<file>.JPEG``; see the data
README for how they were made). TFDS's own ``imagenette`` builder
(``tensorflow_datasets/datasets/imagenette/imagenette_dataset_builder.py``) names its
configs after fast.ai's archives: ``320px-v2`` is ``imagenette2-320``, ``160px-v2`` is
``imagenette2-160``. This one is therefore ``112px-v2``, with TFDS's features
(``image``: JPEG, ``label``: the wnid ClassLabel) and version; the JPEG bytes are stored
as they are in the tar (no re-encoding).

Splits (the archive has no validation images, so there is no ``validation`` split):

* ``holdout``: the last ``n // 10`` files of each class (``n`` = the class's file count),
  in sorted file-name order: 944 images, for kNN and linear-probe evaluation. It is a
  held-out part of fast.ai's *train* split, not Imagenette's official validation set.
* ``train``: the other 8,525 images.

A subset (``train_limit`` / ``holdout_limit``) is a class-balanced first-N of each split
in that sorted order; which file belongs to ``holdout`` never depends on the limits.
"""

from __future__ import annotations

import pathlib
import tarfile
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from jaxssl.data import _builders

TAR = "imagenette2-112_train.tar"
CONFIG = "112px-v2"
BUILDER = "tensorflow_datasets.datasets.imagenette.imagenette_dataset_builder:Builder"
# Files per class in label order (data README); checked when the tar is read.
CLASS_COUNTS = (963, 955, 993, 858, 941, 956, 961, 931, 951, 960)
HOLDOUT_FRACTION_DENOMINATOR = 10  # holdout = last n // 10 of each class.
SIZES = {"train": sum(CLASS_COUNTS) - sum(n // 10 for n in CLASS_COUNTS),
         "holdout": sum(n // 10 for n in CLASS_COUNTS)}
DESCRIPTION = (
    "112px-v2 variant: fast.ai imagenette2 train images with the shorter side resized to 112 px "
    "(longer side 112-149 px, JPEG quality 85), made from a 224x224 copy of imagenette2; prepared "
    "offline by jaxssl. Splits: 'train' and 'holdout' (last 10% of each class of the train "
    "split in sorted file order, not the official validation set).")


class Member(NamedTuple):
    """One JPEG of the archive."""

    path: str  # path inside the tar, e.g. imagenette2-112/train/n01440764/x.JPEG
    wnid: str
    split: str  # "train" or "holdout"


def list_members(tar_path: str | pathlib.Path, wnids: Sequence[str]) -> list[Member]:
    """All JPEG members, sorted by (class in ``wnids`` order, file name), with their split.

    Raises ValueError (naming the tar) if the layout or the per-class counts differ from
    the data README's, so a different archive is never prepared under this name.
    """
    with tarfile.open(tar_path) as tar:
        paths = sorted(m.name for m in tar.getmembers() if m.isfile())
    by_class: dict[str, list[str]] = {w: [] for w in wnids}
    for path in paths:
        parts = path.split("/")
        if len(parts) != 4 or parts[1] != "train" or parts[2] not in by_class:
            raise ValueError(f"{tar_path}: unexpected member {path!r}; expected "
                             "imagenette2-112/train/<wnid>/<file>.JPEG with the 10 Imagenette "
                             "wnids. Use the archive described in shared/data/README.md.")
        by_class[parts[2]].append(path)
    counts = tuple(len(v) for v in by_class.values())
    if counts != CLASS_COUNTS:
        raise ValueError(f"{tar_path}: per-class file counts {counts} differ from the expected "
                         f"{CLASS_COUNTS} (shared/data/README.md); is it the right archive?")
    members = []
    for wnid, files in by_class.items():
        files.sort(key=lambda p: p.rsplit("/", 1)[1])
        cut = len(files) - len(files) // HOLDOUT_FRACTION_DENOMINATOR
        members += [Member(p, wnid, "train" if i < cut else "holdout") for i, p in enumerate(files)]
    return members


def make_builder_cls(sources: Mapping[str, list[pathlib.Path]], limits: Mapping[str, int | None],
                     marker: Mapping[str, Any], marker_file: str) -> type:
    """Subclass of TFDS's imagenette builder with one config, ``112px-v2``, read from the tar."""
    import importlib  # pylint: disable=g-import-not-at-top

    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    from jaxssl.data.prepare import balanced_subset  # pylint: disable=g-import-not-at-top

    module, cls_name = BUILDER.split(":")
    base = getattr(importlib.import_module(module), cls_name)
    tar_path = sources["train"][0]

    class OfflineImagenette(_builders.marking(marker, marker_file), base,  # type: ignore[misc, valid-type]
                            skip_registration=True):
        """TFDS imagenette, config 112px-v2, from the local tar; bytes stored unchanged."""

        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=CONFIG, description=DESCRIPTION)]

        def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
            """Lists the tar once; one generator per split (subset if asked)."""
            del dl_manager  # Nothing to download.
            members = list_members(tar_path, self.info.features["label"].names)
            gens = {}
            for split in ("train", "holdout"):
                chosen = [m for m in members if m.split == split]
                if limits.get(split) is not None:
                    labels = np.array([self.info.features["label"].str2int(m.wnid) for m in chosen])
                    chosen = [chosen[i] for i in balanced_subset(labels, limits[split])]
                gens[split] = self._generate_examples(chosen)
            return gens

        def _generate_examples(self, members: list[Member]) -> Iterator[tuple[str, dict[str, Any]]]:
            """Yields ``(wnid/file, {'image': JPEG bytes as in the tar, 'label': wnid})``."""
            with tarfile.open(tar_path) as tar:
                for m in members:
                    data = tar.extractfile(m.path).read()  # type: ignore[union-attr]
                    yield m.path.split("/", 2)[2], {"image": data, "label": m.wnid}

    OfflineImagenette.name = base.name
    OfflineImagenette.__module__ = base.__module__
    return OfflineImagenette
