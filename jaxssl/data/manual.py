"""TFDS datasets whose archives the user downloads by hand (`imagenet2012`), prepared with TFDS's own builder.

ImageNet cannot be downloaded by a script: get `ILSVRC2012_img_train.tar` (138 GB) and
`ILSVRC2012_img_val.tar` (6.3 GB) from https://image-net.org/ after logging in, put them in one folder
(the *manual_dir*), and run (or let the trainer run, with `config.data.manual_dir` set):

  python -m jaxssl.data.manual imagenet2012 --manual_dir /path/to/archives --data_dir ~/tensorflow_datasets

This calls `tfds.builder("imagenet2012").download_and_prepare(file_format="array_record",
download_config=DownloadConfig(manual_dir=...))`: the real builder reads the train tar of per-class tars
and the val tar (labels from TFDS's `validation_labels.txt`), stores the JPEG bytes, and nothing is
downloaded. An already prepared dataset is never rebuilt, deleted or overwritten. The builder's code
uses TensorFlow's file API, so preparing (not reading) needs `tensorflow-cpu` installed.
"""
from __future__ import annotations

import argparse
import os
import pathlib
from typing import Sequence

# The archives each manual-download builder needs in its manual_dir (the first one at least).
ARCHIVES = {"imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")}


def is_manual(name: str) -> bool:
    """Whether `name` (optionally "name:version" or "name/config") is a manual-download builder jaxssl prepares."""
    return name.split(":")[0].split("/")[0] in ARCHIVES


def default_manual_dir(data_dir: str | os.PathLike) -> pathlib.Path:
    """TFDS's default: `<data_dir>/downloads/manual`."""
    return pathlib.Path(data_dir).expanduser() / "downloads" / "manual"


def prepare(name: str, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Prepares `name` from the archives in `manual_dir` with TFDS's builder; returns its data dir.

    Raises FileNotFoundError naming the missing archives and where to get them (nothing is written then).
    A dataset already prepared in `data_dir` is returned as it is.
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    base = name.split(":")[0].split("/")[0]
    data_dir = pathlib.Path(data_dir).expanduser()
    builder = tfds.builder(name, data_dir=str(data_dir))
    if builder.is_prepared():
        return pathlib.Path(builder.data_dir)
    manual = pathlib.Path(manual_dir).expanduser() if manual_dir else default_manual_dir(data_dir)
    archives = ARCHIVES[base]
    found = [a for a in archives if (manual / a).is_file()]
    if not found:
        listing = sorted(p.name for p in manual.iterdir())[:10] if manual.is_dir() else "the folder does not exist"
        raise FileNotFoundError(
            f"{name} is not prepared in {data_dir}, and its manual_dir {manual} holds none of {list(archives)} "
            f"(it holds: {listing}). Download them by hand from https://image-net.org/ (login required), put "
            f"them in one folder and set config.data.manual_dir to it (or run python -m jaxssl.data.manual "
            f"{base} --manual_dir DIR --data_dir {data_dir}).")
    missing = [a for a in archives if a not in found]
    if missing:
        import logging  # pylint: disable=g-import-not-at-top
        logging.getLogger(__name__).warning("%s: %s not in %s; preparing without those splits.", name, missing, manual)
    config = tfds.download.DownloadConfig(manual_dir=str(manual), try_download_gcs=False,
                                          compute_stats=tfds.download.ComputeStatsMode.SKIP)
    builder.download_and_prepare(download_config=config, file_format="array_record")
    return pathlib.Path(builder.data_dir)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(ARCHIVES))
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))
    args = parser.parse_args(argv)
    print(prepare(args.name, args.data_dir, args.manual_dir))


if __name__ == "__main__":
    main()
