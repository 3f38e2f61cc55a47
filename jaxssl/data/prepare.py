"""Offline preparation of TFDS datasets from the shared ``.npz`` arrays and image archives.

TFDS's builders download their archives, which fails offline. Here the
registered builder is subclassed (same name, version, splits, features) and fed
the local arrays, after which ``tfds.data_source(name, split=..., data_dir=D)``
(or ``tfds.load``, see file formats below) works as if TFDS had downloaded it::

    python -m jaxssl.data.prepare cifar10 --data_dir ~/tensorflow_datasets
    python -m jaxssl.data.prepare imagenette --data_dir ~/tensorflow_datasets  # imagenette/112px-v2

Records are written as array_record (random access: ``tfds.data_source`` and
grain) with images PNG-encoded by Pillow (Imagenette: the archive's JPEG bytes,
unchanged; see :mod:`jaxssl.data._imagenette`), so no TensorFlow is imported. TFDS
4.9.10 cannot read array_record through tf.data (``tfds.load`` raises
NotImplementedError) nor, for a registered builder, an alternative format
stored beside it; ``file_format="tfrecord"`` therefore prepares a data_dir for
``tfds.load`` instead (that writer imports TensorFlow).

Subsets (``train_limit``/``test_limit``/``holdout_limit``, for tests) are class-balanced first-N:
the 1st example of every class, then the 2nd, ... in source order. A marker
(``jaxssl_prepared.json``) records the limits. It is written in TFDS's tmp dir,
which TFDS renames into place only once complete, so an interrupted run leaves
an ``incomplete.*`` dir, never a dataset that looks finished. A prepared
dataset that differs from the request (e.g. a subset when the full set is
asked for) is never reused: :func:`prepare` raises unless ``overwrite=True``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from jaxssl.data import _builders, _imagenette
from jaxssl.data.sources import default_data_dir

SOURCE_ENV = "JAXSSL_SOURCE_DIR"
MARKER = "jaxssl_prepared.json"
_SUBSET_RULE = "class-balanced first-N (1st of every class, then 2nd, ...), source order"


class _Arrays(NamedTuple):
    """One split of a source dataset, as loaded from the ``.npz`` files."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int (N,)
    keys: np.ndarray  # int (N,), TFDS example keys (they fix TFDS's record order)
    ids: Sequence[str] | None  # the "id" feature, None if the builder has none
    class_names: list[str]


class _Spec(NamedTuple):
    """How to prepare one dataset: which builder, which files, how to load them."""

    builder: str  # "module:Class" of the registered TFDS builder
    files: Mapping[str, tuple[str, ...]]  # split -> npz files in the source dir
    sizes: Mapping[str, int]  # split -> number of examples of the full split
    load: Callable[[Sequence[pathlib.Path], str], _Arrays] | None
    config: str | None = None  # TFDS builder config name, if the builder has configs
    # (sources, limits, marker, marker file name) -> builder class; None: the npz builder.
    make_builder: Callable[..., type] | None = None


def _load_cifar10(paths: Sequence[pathlib.Path], split: str) -> _Arrays:
    """Loads CIFAR-10 from the shared npz files (see shared/data/README.md).

    Train ids/keys are the original training indices (``train_{orig_index:05d}``,
    as TFDS's own builder numbers them), so TFDS stores the records in the same
    order as its downloaded version. Test rows 0-999 are the original first 1,000
    test images; rows 1000-9999 come in the npz's order, so ``test_{row:05d}``
    equals TFDS's id only for the first 1,000.
    """
    parts = [dict(np.load(path)) for path in paths]
    x, y = (np.concatenate([z[k] for z in parts]) for k in ("x", "y"))
    key = (np.concatenate([z["orig_index"] for z in parts]) if split == "train"
           else np.arange(len(y)))
    names = [str(n) for n in parts[0]["class_names"]]
    return _Arrays(x, y, key, [f"{split}_{int(k):05d}" for k in key], names)


def _load_mnist(paths: Sequence[pathlib.Path], split: str) -> _Arrays:
    """Loads MNIST from ``mnist.npz``; keys are the row (original) indices."""
    with np.load(paths[0]) as z:
        x, y = z[f"x_{split}"], z[f"y_{split}"]
        names = [str(n) for n in z["class_names"]]
    return _Arrays(x, y, np.arange(len(y)), None, names)


_SPECS: dict[str, _Spec] = {
    "cifar10": _Spec("tensorflow_datasets.image_classification.cifar:Cifar10",
                     {"train": ("cifar10_train_part1.npz", "cifar10_train_part2.npz"),
                      "test": ("cifar10_test.npz",)},
                     {"train": 50_000, "test": 10_000}, _load_cifar10),
    "mnist": _Spec("tensorflow_datasets.image_classification.mnist:MNIST",
                   {"train": ("mnist.npz",), "test": ("mnist.npz",)},
                   {"train": 60_000, "test": 10_000}, _load_mnist),
    "imagenette": _Spec(_imagenette.BUILDER,
                        {"train": (_imagenette.TAR,), "holdout": (_imagenette.TAR,)},
                        _imagenette.SIZES, None, _imagenette.CONFIG, _imagenette.make_builder_cls),
}


def _spec(name: str) -> _Spec:
    """Returns the table entry for ``name`` or raises a ValueError listing them."""
    if name not in _SPECS:
        raise ValueError(f"Unknown dataset {name!r} for offline preparation. Available: "
                         f"{sorted(_SPECS)}. Other TFDS datasets need internet: tfds.builder("
                         f"{name!r}, data_dir=DIR).download_and_prepare("
                         "file_format='array_record').")
    return _SPECS[name]


def _base_builder(name: str) -> type:
    """Imports the registered TFDS builder class (TensorFlow stays unimported)."""
    module, cls_name = _spec(name).builder.split(":")
    return getattr(importlib.import_module(module), cls_name)


def find_source_dir() -> pathlib.Path | None:
    """Returns the folder holding the source ``.npz`` arrays (and archives), or None.

    ``$JAXSSL_SOURCE_DIR`` wins when set (returned even if it does not exist, so
    that errors name it); else ``<repo root>/../shared/data`` if it is a folder.
    """
    if os.environ.get(SOURCE_ENV):
        return pathlib.Path(os.environ[SOURCE_ENV]).expanduser()
    shared = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return shared if shared.is_dir() else None


def _source_paths(name: str, source_dir: str | os.PathLike | None) -> dict[str, list[pathlib.Path]]:
    """Resolves the npz files of every split; FileNotFoundError if any is missing."""
    spec = _spec(name)
    root = pathlib.Path(source_dir).expanduser() if source_dir else find_source_dir()
    needed = sorted({f for files in spec.files.values() for f in files})
    missing = needed if root is None else [f for f in needed if not (root / f).is_file()]
    if missing:
        where = "no source folder found" if root is None else f"not found in {root}"
        raise FileNotFoundError(
            f"Cannot prepare {name!r} offline: {', '.join(missing)} {where}. Expected files: "
            f"{', '.join(needed)}. Point source_dir=... / --source_dir or the environment "
            f"variable {SOURCE_ENV} at their folder (default: <repo>/../shared/data). With "
            f"internet, TFDS can download it instead: tfds.builder({name!r}, data_dir=...)"
            ".download_and_prepare(file_format='array_record') for grain, or tfds.load("
            f"{name!r}, data_dir=...) for tf.data (tfrecord).")
    return {split: [root / f for f in files] for split, files in spec.files.items()}


def _normalize_limits(name: str, limits: Mapping[str, int | None]) -> dict[str, int | None]:
    """Validates limits; a limit at or above the full split size means 'full'."""
    sizes = _spec(name).sizes
    extra = sorted(s for s, n in limits.items() if n is not None and s not in sizes)
    if extra:
        raise ValueError(f"{name!r} has no split(s) {extra}; its splits are {list(sizes)}.")
    out: dict[str, int | None] = {}
    for split, size in sizes.items():
        limit = limits.get(split)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{split}_limit must be a positive int or None, got {limit!r}.")
        out[split] = None if limit is None or limit >= size else limit
    return out


def balanced_subset(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of a class-balanced first-``n`` subset, sorted in source order.

    Takes the 1st example of every class, then the 2nd, ... (ties by position),
    so classes get ``n // C`` or ``n // C + 1`` examples while they last.
    """
    labels = np.asarray(labels)
    pos = np.arange(len(labels))
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    ordinal = np.empty_like(pos)
    ordinal[order] = pos - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return np.sort(np.lexsort((pos, ordinal))[:n])


def _png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of one uint8 (H, W, C) image, C in {1, 3}."""
    from PIL import Image  # pylint: disable=g-import-not-at-top

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="png")
    return buf.getvalue()


def _make_builder_cls(name: str, sources: Mapping[str, list[pathlib.Path]],
                      limits: Mapping[str, int | None], marker: Mapping[str, Any]) -> type:
    """Subclass of the registered builder that reads the local arrays."""
    spec, base = _spec(name), _base_builder(name)
    if spec.make_builder is not None:
        return spec.make_builder(sources, limits, marker, MARKER)

    class OfflineBuilder(_builders.marking(marker, MARKER), base,  # type: ignore[misc, valid-type]
                         skip_registration=True):
        """``base`` with its download replaced by the local npz arrays."""

        def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
            """Loads every split (subset if asked) and sets the label names."""
            del dl_manager  # Nothing to download.
            gens = {}
            for split, paths in sources.items():
                arrays = spec.load(paths, split)
                if limits.get(split) is not None:
                    keep = balanced_subset(arrays.labels, limits[split])
                    ids = None if arrays.ids is None else [arrays.ids[i] for i in keep]
                    arrays = arrays._replace(images=arrays.images[keep], labels=arrays.labels[keep],
                                             keys=arrays.keys[keep], ids=ids)
                self.info.features["label"].names = arrays.class_names
                gens[split] = self._generate_examples(arrays)
            return gens

        def _generate_examples(self, arrays: _Arrays) -> Iterator[tuple[int, dict[str, Any]]]:
            """Yields ``(key, {'image': png bytes, 'label': int[, 'id': str]})``."""
            shape = tuple(self.info.features["image"].shape)
            if arrays.images.dtype != np.uint8 or tuple(arrays.images.shape[1:]) != shape:
                raise ValueError(f"{name}: source images are {arrays.images.dtype} "
                                 f"{arrays.images.shape[1:]}, the builder wants uint8 {shape}.")
            for i in range(len(arrays.labels)):
                record = {"image": _png(arrays.images[i]), "label": int(arrays.labels[i])}
                if arrays.ids is not None:
                    record["id"] = arrays.ids[i]
                yield int(arrays.keys[i]), record

    OfflineBuilder.name = base.name
    # dataset_info.json then records the same module as TFDS's own builder.
    OfflineBuilder.__module__ = base.__module__
    return OfflineBuilder


def dataset_path(name: str, data_dir: str | os.PathLike) -> pathlib.Path:
    """``<data_dir>/<name>[/<config>]/<version>``, the variant dir TFDS reads."""
    config = _spec(name).config
    root = pathlib.Path(data_dir).expanduser() / name
    return (root / config if config else root) / str(_base_builder(name).VERSION)


def read_marker(name: str, data_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The jaxssl marker of a prepared dataset, or None (absent or not prepared)."""
    marker = dataset_path(name, data_dir) / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def _check_existing(name: str, path: pathlib.Path, limits: Mapping[str, int | None],
                    file_format: str, overwrite: bool) -> bool:
    """True if ``path`` holds what was asked; a mismatch raises unless overwrite."""
    if not (path / "dataset_info.json").is_file():  # TFDS writes it before the rename.
        return False
    marker_file = path / MARKER
    # No marker: prepared by TFDS itself (online), i.e. the full dataset.
    have = json.loads(marker_file.read_text())["limits"] if marker_file.is_file() else {}
    have = {split: have.get(split) for split in limits}
    # TFDS leaves fileFormat out of old/tfrecord dataset_info.json files.
    have_format = json.loads((path / "dataset_info.json").read_text()).get("fileFormat", "tfrecord")
    if have == dict(limits) and have_format == file_format:
        return True
    if overwrite:
        return False

    def describe(lim: Mapping[str, int | None], fmt: str) -> str:
        """E.g. 'a subset (train_limit=2048) as array_record'."""
        parts = [f"{s}_limit={n}" for s, n in lim.items() if n is not None]
        what = "a subset (" + ", ".join(parts) + ")" if parts else "the full dataset"
        return f"{what} as {fmt}"

    raise ValueError(f"{path} holds {describe(have, have_format)} of {name!r}, but "
                     f"{describe(limits, file_format)} was "
                     f"requested (see {MARKER}). Use another data_dir, or pass overwrite=True "
                     "(CLI: --overwrite) to replace it.")


@contextlib.contextmanager
def _lock(data_dir: pathlib.Path, name: str) -> Iterator[None]:
    """Serialises preparations of ``name`` in ``data_dir`` across processes."""
    import fcntl  # pylint: disable=g-import-not-at-top  # POSIX only.

    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / f".{name}.jaxssl.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # Released when the file is closed.
        yield


def prepare(name: str, data_dir: str | os.PathLike, *, source_dir: str | os.PathLike | None = None,
            train_limit: int | None = None, test_limit: int | None = None,
            holdout_limit: int | None = None, overwrite: bool = False,
            file_format: str = "array_record") -> pathlib.Path:
    """Prepares ``name`` from the local npz arrays (or archive) into ``data_dir``; idempotent.

    Args:
      name: a dataset of the table (``cifar10``, ``mnist``, ``imagenette``).
      data_dir: TFDS data dir; the result lands in ``<data_dir>/<name>[/<config>]/<version>``
        (``imagenette/112px-v2/1.0.0``; read it as ``tfds.data_source("imagenette/112px-v2",
        split="train" | "holdout", data_dir=...)``).
      source_dir: folder with the npz files (default: :func:`find_source_dir`).
      train_limit: keep a class-balanced first-N subset of the train split.
      test_limit: same for the test split (cifar10, mnist).
      holdout_limit: same for imagenette's holdout split.
      overwrite: replace an existing dataset that differs from the request (one
        that matches is always reused).
      file_format: ``"array_record"`` (``tfds.data_source``, grain) or
        ``"tfrecord"`` (``tfds.load``/tf.data; imports TensorFlow).

    Returns:
      The prepared variant directory.

    Raises:
      FileNotFoundError: a source file is missing (message says where to get it).
      ValueError: ``data_dir`` already holds a different subset/full set.
    """
    data_dir = pathlib.Path(data_dir).expanduser()
    limits = _normalize_limits(name, {"train": train_limit, "test": test_limit,
                                      "holdout": holdout_limit})
    path = dataset_path(name, data_dir)
    with _lock(data_dir, name):
        if file_format not in ("array_record", "tfrecord"):
            raise ValueError(f"file_format must be 'array_record' or 'tfrecord', got "
                             f"{file_format!r}.")
        if _check_existing(name, path, limits, file_format, overwrite):
            return path
        sources = _source_paths(name, source_dir)
        if path.exists():  # A mismatch with overwrite=True, or a dir without dataset_info.
            shutil.rmtree(path)
        marker = {"dataset": name, "prepared_by": "jaxssl.data.prepare",
                  "subset": any(v is not None for v in limits.values()), "limits": limits,
                  "subset_rule": _SUBSET_RULE, "file_format": file_format,
                  "sources": {s: [str(p) for p in ps] for s, ps in sources.items()},
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

        config = {"config": _spec(name).config} if _spec(name).config else {}
        builder = _make_builder_cls(name, sources, limits, marker)(data_dir=str(data_dir), **config)
        dl_config = tfds.download.DownloadConfig(
            try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP)
        # Nothing is downloaded; keep TFDS's empty downloads/ folder out of data_dir.
        with tempfile.TemporaryDirectory(prefix="jaxssl_dl_") as dl_dir:
            builder.download_and_prepare(download_dir=dl_dir, download_config=dl_config,
                                         file_format=file_format)
    return path


def ensure_prepared(name: str, data_dir: str | os.PathLike, **kw: Any) -> pathlib.Path:
    """Prepares ``name`` into ``data_dir`` unless exactly that is already there.

    Cheap when prepared: reads ``dataset_info.json`` and the marker only. Takes
    the keyword arguments of :func:`prepare`; raises the same errors (a missing
    source is a FileNotFoundError naming the files, ``$JAXSSL_SOURCE_DIR`` and
    the online alternative).
    """
    limits = _normalize_limits(name, {s: kw.get(f"{s}_limit") for s in ("train", "test", "holdout")})
    path = dataset_path(name, data_dir)
    if _check_existing(name, path, limits, kw.get("file_format", "array_record"),
                       bool(kw.get("overwrite"))):
        return path
    return prepare(name, data_dir, **kw)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``python -m jaxssl.data.prepare NAME --data_dir DIR [...]``."""
    parser = argparse.ArgumentParser(prog="python -m jaxssl.data.prepare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(_SPECS))
    parser.add_argument("--data_dir", default=default_data_dir(),
                        help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--source_dir", default=None,
                        help=f"folder with the npz files / tar (default: ${SOURCE_ENV} or "
                        "<repo>/../shared/data)")
    for split in ("train", "test", "holdout"):
        parser.add_argument(f"--{split}_limit", type=int, default=None,
                            help="class-balanced first-N subset (marked as such)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset that differs from the request")
    parser.add_argument("--file_format", default="array_record",
                        choices=["array_record", "tfrecord"],
                        help="array_record: tfds.data_source/grain; tfrecord: tfds.load/tf.data")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = prepare(args.name, args.data_dir, source_dir=args.source_dir,
                   train_limit=args.train_limit, test_limit=args.test_limit,
                   holdout_limit=args.holdout_limit, overwrite=args.overwrite, file_format=args.file_format)
    info = json.loads((path / "dataset_info.json").read_text())
    sizes = ", ".join(f"{s['name']}={sum(int(n) for n in s['shardLengths']):,}"
                      for s in info["splits"])
    print(f"{args.name} ready in {path} ({sizes}); {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
