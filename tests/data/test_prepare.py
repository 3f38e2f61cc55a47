"""Tests for jaxssl.data.prepare: offline TFDS datasets from the shared npz arrays."""

from __future__ import annotations

import collections
import hashlib
import importlib
import json
import pathlib
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxssl.data import make_eval_iter

# The module, not the function jaxssl.data.prepare that shadows it as an attribute.
prep = importlib.import_module("jaxssl.data.prepare")

REPO = pathlib.Path(__file__).resolve().parents[2]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def _digest(image: np.ndarray) -> bytes:
    """Content hash of one image (TFDS reorders records, so match by content)."""
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def _source_dir() -> pathlib.Path:
    """The shared arrays; the fixture has already skipped if they are missing."""
    src = prep.find_source_dir()
    assert src is not None
    return src


def test_data_source_has_tfds_splits_and_features(cifar10_data_dir):
    """Plain tfds.data_source/builder see cifar10 3.0.2 with TFDS's own features."""
    train = tfds.data_source("cifar10", split="train", data_dir=cifar10_data_dir)
    test = tfds.data_source("cifar10", split="test", data_dir=cifar10_data_dir)
    assert (len(train), len(test)) == (2048, 512)
    info = tfds.builder("cifar10", data_dir=cifar10_data_dir).info
    assert str(info.version) == "3.0.2"
    assert set(info.features) == {"id", "image", "label"}
    assert info.features["image"].shape == (32, 32, 3)
    assert info.features["image"].np_dtype == np.uint8
    assert info.features["label"].num_classes == 10
    assert info.features["label"].names == CIFAR10_NAMES
    assert info.features["label"].np_dtype == np.int64
    assert info.supervised_keys == ("image", "label")
    record = train[0]
    assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8


@pytest.mark.parametrize("split, files, per_class", [
    ("train", ["cifar10_train_part1.npz", "cifar10_train_part2.npz"], {204, 205}),
    ("test", ["cifar10_test.npz"], {51, 52}),
])
def test_records_are_the_real_images(cifar10_data_dir, split, files, per_class):
    """Every record's pixels, label and id come from the npz (exact, any order)."""
    table = {}
    for f in files:
        with np.load(_source_dir() / f) as z:
            keys = z["orig_index"] if split == "train" else np.arange(len(z["y"]))
            for x, y, k in zip(z["x"], z["y"], keys):
                table.setdefault(_digest(x), (int(y), f"{split}_{int(k):05d}"))
    src = tfds.data_source("cifar10", split=split, data_dir=cifar10_data_dir)
    records = src.__getitems__(range(len(src)))
    found = [table.get(_digest(r["image"])) for r in records]
    assert None not in found, "a prepared image is not in the source arrays"
    assert [lab for lab, _ in found] == [int(r["label"]) for r in records]
    assert [i for _, i in found] == [r["id"].decode() for r in records]
    assert len({r["id"] for r in records}) == len(records)
    assert set(collections.Counter(lab for lab, _ in found).values()) == per_class


def test_tfrecord_format_for_tfds_load(tmp_path):
    """file_format='tfrecord' serves tfds.load (tf.data); grain refuses it with the fix."""
    from jaxssl.data import get_source  # pylint: disable=g-import-not-at-top

    prep.prepare("cifar10", tmp_path, train_limit=20, test_limit=10, file_format="tfrecord")
    ds = tfds.load("cifar10", split="test", data_dir=tmp_path, as_supervised=True)
    images, labels = zip(*[(x.numpy(), int(y)) for x, y in ds])
    assert len(images) == 10 and images[0].shape == (32, 32, 3)
    assert sorted(labels) == list(range(10))
    with pytest.raises(FileNotFoundError, match=r"tfrecord.*array_record.*python -m "
                                                r"jaxssl\.data\.prepare cifar10"):
        get_source("cifar10", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="as tfrecord.*as array_record"):
        prep.ensure_prepared("cifar10", tmp_path, train_limit=20, test_limit=10)


def test_marker_records_subset_and_blocks_reuse_as_full(cifar10_data_dir):
    """A test subset is marked and ensure_prepared refuses it as the full set."""
    marker = prep.read_marker("cifar10", cifar10_data_dir)
    assert marker["subset"] is True
    assert marker["limits"] == {"train": 2048, "test": 512}
    with pytest.raises(ValueError, match=r"subset \(train_limit=2048, test_limit=512\).*"
                                         r"the full dataset.*overwrite=True"):
        prep.ensure_prepared("cifar10", cifar10_data_dir)
    with pytest.raises(ValueError, match="train_limit=100"):
        prep.ensure_prepared("cifar10", cifar10_data_dir, train_limit=100, test_limit=512)
    # The matching request is a cheap no-op, and the data is untouched.
    path = prep.ensure_prepared("cifar10", cifar10_data_dir, train_limit=2048, test_limit=512)
    assert path == pathlib.Path(cifar10_data_dir) / "cifar10" / "3.0.2"
    assert len(tfds.data_source("cifar10", split="train", data_dir=cifar10_data_dir)) == 2048


def test_missing_sources_raise_helpful_error(tmp_path, monkeypatch):
    """No npz files: FileNotFoundError naming the files, the env var and tfds.load."""
    empty = tmp_path / "no_arrays"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        prep.prepare("cifar10", tmp_path / "dd", source_dir=empty)
    msg = str(e.value)
    for part in ["cifar10_train_part1.npz", "cifar10_test.npz", str(empty), "JAXSSL_SOURCE_DIR",
                 "tfds.load('cifar10'"]:
        assert part in msg
    monkeypatch.setenv("JAXSSL_SOURCE_DIR", str(empty))
    assert prep.find_source_dir() == empty
    with pytest.raises(FileNotFoundError, match="mnist.npz"):
        prep.ensure_prepared("mnist", tmp_path / "dd")
    assert not (tmp_path / "dd" / "mnist" / "3.0.1").exists()


def test_unknown_dataset_lists_the_table(tmp_path):
    """Only table entries can be prepared offline; the error lists them."""
    with pytest.raises(ValueError, match=r"\['cifar10', 'imagenette', 'mnist'\]"):
        prep.prepare("imagenet2012", tmp_path)
    with pytest.raises(ValueError, match=r"no split\(s\) \['holdout'\]"):
        prep.prepare("cifar10", tmp_path, holdout_limit=5)


def test_balanced_subset_round_robins_over_classes():
    """1st of every class, then 2nd, ...; short classes run out; source order kept."""
    labels = np.array([0, 0, 0, 1, 2, 2, 0, 1])
    np.testing.assert_array_equal(prep.balanced_subset(labels, 3), [0, 3, 4])
    np.testing.assert_array_equal(prep.balanced_subset(labels, 6), [0, 1, 3, 4, 5, 7])
    np.testing.assert_array_equal(prep.balanced_subset(labels, 100), np.arange(8))


def test_killed_preparation_is_not_taken_as_finished(tmp_path):
    """SIGKILL mid-way leaves TFDS's incomplete.* dir only; the next call starts afresh."""
    code = textwrap.dedent(f"""
        import importlib, os, signal
        prep = importlib.import_module("jaxssl.data.prepare")
        real_png, calls = prep._png, []
        def png(image):
            calls.append(1)
            if len(calls) == 25:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_png(image)
        prep._png = png
        prep.prepare("cifar10", {str(tmp_path)!r}, train_limit=40, test_limit=20)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert list((tmp_path / "cifar10").glob("incomplete.*"))  # The partial write survives,
    assert not tfds.builder("cifar10", data_dir=tmp_path).is_prepared()  # but is not "prepared".
    assert not (tmp_path / "cifar10" / "3.0.2").exists()
    path = prep.ensure_prepared("cifar10", tmp_path, train_limit=40, test_limit=20)
    info_file = path / "dataset_info.json"
    stamp = info_file.stat().st_mtime_ns
    assert prep.prepare("cifar10", tmp_path, train_limit=40, test_limit=20) == path  # Idempotent.
    assert info_file.stat().st_mtime_ns == stamp
    assert len(tfds.data_source("cifar10", split="train", data_dir=tmp_path)) == 40
    # overwrite=True replaces a mismatching subset.
    prep.prepare("cifar10", tmp_path, train_limit=30, test_limit=20, overwrite=True)
    assert prep.read_marker("cifar10", tmp_path)["limits"] == {"train": 30, "test": 20}
    assert len(tfds.data_source("cifar10", split="train", data_dir=tmp_path)) == 30


def test_mnist_cli_and_grayscale_to_rgb(tmp_path, capsys):
    """The CLI prepares MNIST (28x28x1, TFDS's features); the pipeline makes it RGB."""
    prep.main(["mnist", "--data_dir", str(tmp_path), "--train_limit", "30", "--test_limit", "20"])
    out = capsys.readouterr().out
    assert "mnist ready in" in out and "train=30" in out and "test=20" in out
    info = tfds.builder("mnist", data_dir=tmp_path).info
    assert set(info.features) == {"image", "label"}
    assert info.features["image"].shape == (28, 28, 1)
    assert info.features["label"].names == [str(i) for i in range(10)]
    meta = json.loads((tmp_path / "mnist" / "3.0.1" / prep.MARKER).read_text())
    assert meta["limits"] == {"train": 30, "test": 20}
    with np.load(_source_dir() / "mnist.npz") as z:
        first = {_digest(x) for x in z["x_test"][:100]}
    batch = next(make_eval_iter("mnist", "test", data_dir=tmp_path, batch_size=32,
                                process_index=0, process_count=1))
    assert batch["image"].shape == (32, 28, 28, 3) and batch["image"].dtype == np.uint8
    assert (batch["image"][..., :1] == batch["image"]).all()  # Channel repeated.
    assert int(batch["mask"].sum()) == 20
    assert {_digest(x[..., :1]) for x in batch["image"][batch["mask"]]} <= first


# ---------------------------------------------------------------- imagenette/112px-v2

IMAGENETTE_TRAIN_LIMIT, IMAGENETTE_HOLDOUT_LIMIT = 100, 30
IMAGENETTE = "imagenette/112px-v2"


@pytest.fixture(scope="module")
def imagenette_data_dir(tmp_path_factory) -> pathlib.Path:
    """A class-balanced subset (100 train / 30 holdout) prepared by the CLI, offline."""
    tar = _source_dir() / "imagenette2-112_train.tar"
    if not tar.is_file():
        pytest.fail(f"{tar} is missing (see shared/data/README.md).")
    data_dir = tmp_path_factory.mktemp("tfds_imagenette")
    prep.main(["imagenette", "--data_dir", str(data_dir),
               "--train_limit", str(IMAGENETTE_TRAIN_LIMIT),
               "--holdout_limit", str(IMAGENETTE_HOLDOUT_LIMIT)])
    return data_dir


def _tar_members() -> dict[str, tuple[str, str]]:
    """sha256 of every JPEG in the tar -> (path in the tar, wnid)."""
    import tarfile  # pylint: disable=g-import-not-at-top

    with tarfile.open(_source_dir() / "imagenette2-112_train.tar") as tar:
        return {hashlib.sha256(tar.extractfile(m).read()).hexdigest(): (m.name, m.name.split("/")[2])
                for m in tar.getmembers() if m.isfile()}


def test_imagenette_holdout_is_last_tenth_of_each_class_in_sorted_order(tmp_path):
    """The split rule on the whole archive: 8,525 train / 944 holdout, disjoint, per class."""
    tfds_builder = tfds.builder_cls("imagenette")(config="160px-v2", data_dir=tmp_path)
    wnids = tfds_builder.info.features["label"].names  # TFDS's own label order.
    members = importlib.import_module("jaxssl.data._imagenette").list_members(
        _source_dir() / "imagenette2-112_train.tar", wnids)
    assert len(members) == 9469 and len({m.path for m in members}) == 9469
    counts = collections.Counter(m.split for m in members)
    assert counts == {"train": 8525, "holdout": 944}
    for wnid, n in zip(wnids, (963, 955, 993, 858, 941, 956, 961, 931, 951, 960)):
        files = [m for m in members if m.wnid == wnid]
        names = [m.path.rsplit("/", 1)[1] for m in files]
        assert len(files) == n and names == sorted(names)
        assert [m.split for m in files] == ["train"] * (n - n // 10) + ["holdout"] * (n // 10)


def test_imagenette_splits_counts_features(imagenette_data_dir):
    """tfds.builder / data_source read the 112px-v2 config with TFDS imagenette's features."""
    builder = tfds.builder(IMAGENETTE, data_dir=imagenette_data_dir)
    info = builder.info
    assert builder.builder_config.name == "112px-v2" and str(info.version) == "1.0.0"
    assert {s: info.splits[s].num_examples for s in info.splits} == {
        "train": IMAGENETTE_TRAIN_LIMIT, "holdout": IMAGENETTE_HOLDOUT_LIMIT}
    assert set(info.features) == {"image", "label"} and info.supervised_keys == ("image", "label")
    assert info.features["label"].names[:2] == ["n01440764", "n02102040"]
    assert prep.read_marker("imagenette", imagenette_data_dir)["limits"] == {
        "train": IMAGENETTE_TRAIN_LIMIT, "holdout": IMAGENETTE_HOLDOUT_LIMIT}
    assert prep.dataset_path("imagenette", imagenette_data_dir) == \
        pathlib.Path(imagenette_data_dir) / "imagenette" / "112px-v2" / "1.0.0"
    decoded = tfds.data_source(IMAGENETTE, split="train", data_dir=imagenette_data_dir)[0]
    assert decoded["image"].dtype == np.uint8 and min(decoded["image"].shape[:2]) == 112


@pytest.mark.parametrize("split, limit", [("train", IMAGENETTE_TRAIN_LIMIT),
                                          ("holdout", IMAGENETTE_HOLDOUT_LIMIT)])
def test_imagenette_records_are_the_tar_bytes(imagenette_data_dir, split, limit):
    """Every record is a tar member's exact bytes, labelled with its folder's wnid, in the
    right split (the first limit // 10 of each class of that split in sorted order)."""
    members = _tar_members()
    src = tfds.data_source(IMAGENETTE, split=split, data_dir=imagenette_data_dir,
                           decoders={"image": tfds.decode.SkipDecoding()})
    names = tfds.builder(IMAGENETTE, data_dir=imagenette_data_dir).info.features["label"].names
    records = src.__getitems__(range(len(src)))
    found = [members.get(hashlib.sha256(r["image"]).hexdigest()) for r in records]
    assert None not in found, "a record's bytes are not a tar member's (re-encoded?)"
    assert [w for _, w in found] == [names[int(r["label"])] for r in records]
    rule = importlib.import_module("jaxssl.data._imagenette").list_members(
        _source_dir() / "imagenette2-112_train.tar", names)
    want = set()
    for wnid in names:  # limit // 10 per class: the first ones of the split, sorted order.
        in_split = [m.path for m in rule if m.wnid == wnid and m.split == split]
        want |= set(in_split[:limit // 10])
    assert {p for p, _ in found} == want


def test_imagenette_through_host_views(imagenette_data_dir):
    """data_source (undecoded) -> grain -> transforms.Views -> batch: fixed-size uint8 views."""
    import grain  # pylint: disable=g-import-not-at-top

    from jaxssl.data import transforms  # pylint: disable=g-import-not-at-top

    src = tfds.data_source(IMAGENETTE, split="holdout", data_dir=imagenette_data_dir,
                           decoders={"image": tfds.decode.SkipDecoding()})
    views = transforms.Views([{"crop_size": 64, "crop_scale": (0.25, 1.0)}] * 2 +
                             [{"crop_size": 32, "crop_scale": (0.05, 0.25)}])
    ds = grain.MapDataset.source(src).seed(0).shuffle().random_map(views).batch(8)
    batch = ds[0]
    assert [v.shape for v in batch["views"]] == [(8, 64, 64, 3)] * 2 + [(8, 32, 32, 3)]
    assert batch["views"][0].dtype == np.uint8 and batch["label"].shape == (8,)
    evals = grain.MapDataset.source(src).map(transforms.EvalView(64)).batch(30)[0]
    assert evals["image"].shape == (30, 64, 64, 3)
