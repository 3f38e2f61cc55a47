"""A miniature ILSVRC2012 manual_dir made of Imagenette JPEGs, in the layout TFDS's imagenet2012 builder reads.

`ILSVRC2012_img_train.tar` holds one `<wnid>.tar` per class, each holding `<wnid>_<n>.JPEG` files
(tensorflow_datasets/datasets/imagenet2012/imagenet2012_dataset_builder.py `_generate_examples`);
`ILSVRC2012_img_val.tar` holds `ILSVRC2012_val_<8 digits>.JPEG` files, which the builder labels with the
first lines of TFDS's `validation_labels.txt` in sorted file-name order (`imagenet_common.
get_validation_labels`), so the val labels here are those lines, not the Imagenette images' classes.
"""
import io
import pathlib
import tarfile

from jaxssl.data import prepare


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make(manual_dir: pathlib.Path, per_class: int = 8, classes: int = 2, val: int = 8) -> pathlib.Path:
    """Writes the two archives into `manual_dir` (created); returns it."""
    with tarfile.open(prepare.find_source_dir() / "imagenette2-112_train.tar") as src:
        by_class: dict[str, list[bytes]] = {}
        for m in src.getmembers():
            if m.isfile():
                by_class.setdefault(m.name.split("/")[2], []).append(m)
        wnids = sorted(by_class)[:classes]
        jpegs = {w: [src.extractfile(m).read() for m in sorted(by_class[w], key=lambda m: m.name)[:per_class + val]]
                 for w in wnids}
    manual_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w") as train:
        for w in wnids:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as cls:
                for i, data in enumerate(jpegs[w][:per_class]):
                    _add(cls, f"{w}_{i}.JPEG", data)
            _add(train, f"{w}.tar", inner.getvalue())
    rest = [d for w in wnids for d in jpegs[w][per_class:]][:val]
    with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as tar:
        for i, data in enumerate(rest):
            _add(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", data)
    return manual_dir
