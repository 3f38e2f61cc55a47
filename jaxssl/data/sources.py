"""Random-access TFDS sources (array_record) with errors that say how to fix them.

``get_source`` wraps ``tfds.data_source``: a ``Sequence`` of decoded records
(``{"image": uint8 (H, W, C), "label": int, ...}``) that grain reads by index,
so every process can read just its own slice. It never downloads: a missing
dataset is a ``FileNotFoundError`` naming the offline and online fixes.
TensorFlow is not imported (TFDS decodes images with Pillow/OpenCV here).
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any, Sequence

_LOG = logging.getLogger(__name__)
_OFFLINE = ("cifar10", "mnist", "imagenette")  # Must match jaxssl.data.prepare._SPECS.
_MARKER = "jaxssl_prepared.json"  # Same as jaxssl.data.prepare.MARKER.


def default_data_dir() -> str:
    """TFDS's default data_dir: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` (the one definition)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _fix_hint(name: str, data_dir: str) -> str:
    """The commands that prepare ``name`` into ``data_dir``."""
    online = (f"with internet: tfds.builder({name!r}, data_dir={data_dir!r})"
              ".download_and_prepare(file_format='array_record')")
    if name in _OFFLINE:
        return (f"Prepare it offline from the shared npz arrays: python -m jaxssl.data.prepare "
                f"{name} --data_dir {data_dir} (or jaxssl.data.ensure_prepared({name!r}, "
                f"{data_dir!r})); or {online}.")
    return f"Prepare it {online}."


def _searched(data_dir: str | os.PathLike | None) -> str:
    """The data_dir(s) TFDS looks in, for error messages."""
    if data_dir is not None:
        return os.fspath(data_dir)
    from tensorflow_datasets.core.utils import file_utils  # pylint: disable=g-import-not-at-top

    return ", ".join(os.fspath(d) for d in file_utils.list_data_dirs())


def get_source(name: str, split: str, data_dir: str | os.PathLike | None = None, *,
               encoded: bool = False) -> Sequence[Any]:
    """Returns ``tfds.data_source(name, split=split, data_dir=data_dir)``.

    ``encoded=True`` keeps the ``"image"`` feature as its stored bytes (``tfds.decode.SkipDecoding``):
    JPEGs of many sizes are decoded and cropped later by ``jaxssl.data.encoded``.

    Args:
      name: TFDS name, optionally with config/version (``"cifar10:3.0.2"``).
      split: TFDS split, slicing allowed (``"train[:90%]"``).
      data_dir: TFDS data dir; None searches TFDS's default dirs
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Returns:
      A random-access source: ``len(src)`` records, ``src[i]`` a dict of numpy
      values (images decoded to uint8).

    Raises:
      FileNotFoundError: the dataset is not prepared in ``data_dir``, or only in
        a format without random access (tfrecord); the message says how to fix.
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    data_dir = None if data_dir is None else os.fspath(pathlib.Path(data_dir).expanduser())
    where = _searched(data_dir)
    hint_dir = data_dir or default_data_dir()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
        # ValueError: a config TFDS does not register and nothing prepared (imagenette/112px-v2).
        raise FileNotFoundError(
            f"Dataset {name!r} is neither a registered TFDS builder nor prepared in "
            f"{where}. {_fix_hint(name.split(':')[0].split('/')[0], hint_dir)} (TFDS: "
            f"{str(e).splitlines()[0]})") from e
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"Dataset {name!r} is not prepared in {where} (looked for "
            f"{builder.data_dir}/dataset_info.json). {_fix_hint(builder.name, hint_dir)}")
    # Datasets from before TFDS recorded a format are tfrecord.
    formats = {str(f.value) for f in builder.info.available_file_formats()} or {"tfrecord"}
    if "array_record" not in formats:
        offline = (f"python -m jaxssl.data.prepare {builder.name} --data_dir NEW_DIR, or "
                   if builder.name in _OFFLINE else "")
        raise FileNotFoundError(
            f"Dataset {name!r} in {builder.data_dir} is stored as {sorted(formats)}, which "
            "has no random access; grain needs array_record. Re-prepare it as array_record "
            f"into another data_dir ({offline}tfds.builder({builder.name!r}, data_dir=NEW_DIR)"
            ".download_and_prepare(file_format='array_record') with internet), or convert "
            f"it: tfds convert_format --dataset_version_dir={builder.data_dir} "
            "--out_file_format=array_record.")
    marker = pathlib.Path(builder.data_dir) / _MARKER
    if marker.is_file() and '"subset": true' in marker.read_text():
        _LOG.warning("%s in %s is a SUBSET prepared for tests (see %s).",
                        name, builder.data_dir, marker)
    # Same as tfds.data_source(name, split=split, data_dir=data_dir, download=False).
    decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
    return builder.as_data_source(split=split, file_format="array_record", decoders=decoders)
