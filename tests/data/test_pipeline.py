"""Tests for jaxssl.data.pipeline (grain) and jaxssl.data.sources on real CIFAR-10."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxssl.data import get_source, make_eval_iter, make_train_iter

REPO = pathlib.Path(__file__).resolve().parents[2]
N_TRAIN, N_TEST = 2048, 512  # The conftest subset.


def _digest(image: np.ndarray) -> bytes:
    """Content hash of one image, to compare multisets of examples."""
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def _examples(batches) -> collections.Counter:
    """Multiset of (image hash, label) over the real (mask True) examples."""
    out = collections.Counter()
    for b in batches:
        keep = b["mask"] if "mask" in b else np.ones(len(b["label"]), bool)
        out.update(zip(map(_digest, b["image"][keep]), b["label"][keep].tolist()))
    return out


@pytest.fixture(scope="module")
def all_examples(cifar10_data_dir):
    """split -> multiset of (image hash, label) read straight from the source."""
    out = {}
    for split in ("train", "test"):
        src = get_source("cifar10", split, cifar10_data_dir)
        recs = src.__getitems__(range(len(src)))
        out[split] = collections.Counter((_digest(r["image"]), int(r["label"])) for r in recs)
    return out


def _train(data_dir, **kw):
    """Train iterator with single-process defaults."""
    kw = {"global_batch_size": 256, "seed": 0, "process_index": 0, "process_count": 1, **kw}
    return make_train_iter("cifar10", "train", data_dir=data_dir, **kw)


def _take(it, n):
    """The next n batches of an iterator."""
    return list(itertools.islice(it, n))


def _assert_same(a, b):
    """Bitwise equality of two lists of batches."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_train_batch_shapes_and_dtypes(cifar10_data_dir):
    """Batches are uint8 (B, 32, 32, 3) images and int32 (B,) labels."""
    batch = next(_train(cifar10_data_dir))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (256, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (256,) and batch["label"].dtype == np.int32
    assert 0 <= batch["label"].min() and batch["label"].max() < 10
    assert len({_digest(x) for x in batch["image"]}) == 256  # No repeats within an epoch.
    unlabelled = next(_train(cifar10_data_dir, label_key=None, global_batch_size=8))
    assert set(unlabelled) == {"image"}


def test_process_shards_are_disjoint_and_cover(cifar10_data_dir, all_examples):
    """One epoch of each of 2 processes = the whole split, each example once."""
    per_process = []
    for i in range(2):
        it = _train(cifar10_data_dir, process_index=i, process_count=2, num_threads=0)
        batches = _take(it, N_TRAIN // 256)  # 128 per process, 1,024 examples each.
        assert batches[0]["image"].shape[0] == 128
        per_process.append(_examples(batches))
    assert not set(per_process[0]) & set(per_process[1])
    assert per_process[0] + per_process[1] == all_examples["train"]


def test_shuffle_is_seeded_and_reshuffles_each_epoch(cifar10_data_dir, all_examples):
    """Same seed, same batches; other seed, other order; each epoch a new order."""
    a = _take(_train(cifar10_data_dir, seed=3), 16)  # Two epochs of 8 batches.
    _assert_same(a[:2], _take(_train(cifar10_data_dir, seed=3), 2))
    b = next(_train(cifar10_data_dir, seed=4))
    assert not np.array_equal(a[0]["image"], b["image"])
    epoch1, epoch2 = _examples(a[:8]), _examples(a[8:])
    assert epoch1 == epoch2 == all_examples["train"]
    order1 = [_digest(x) for bt in a[:8] for x in bt["image"]]
    order2 = [_digest(x) for bt in a[8:] for x in bt["image"]]
    assert order1 != order2


@pytest.mark.parametrize("threads", [0, 2])
def test_resume_from_state_is_exact(cifar10_data_dir, threads):
    """k batches, save state (JSON), m more; a NEW iterator restored yields the same m."""
    kw = {"global_batch_size": 96, "seed": 7, "num_threads": threads, "prefetch": 2 * threads}
    it = _train(cifar10_data_dir, **kw)
    _take(it, 19)  # Past the first epoch boundary (2048 / 96 = 21.3 batches per epoch).
    state = json.loads(json.dumps(it.get_state()))  # What the checkpoint stores.
    expected = _take(it, 5)
    resumed = _train(cifar10_data_dir, **kw)
    resumed.set_state(state)
    _assert_same(_take(resumed, 5), expected)


def test_transform_is_deterministic_and_resumable(cifar10_data_dir):
    """A host transform gets a per-example rng derived from (seed, epoch, index)."""

    def flip_some(example, rng):
        """Random horizontal flip plus the coin it drew."""
        if rng.random() < 0.5:
            example = {**example, "image": example["image"][:, ::-1]}
        return {**example, "coin": np.float32(rng.random())}

    kw = {"global_batch_size": 64, "transform": flip_some}
    a = _take(_train(cifar10_data_dir, **kw), 3)
    assert a[0]["coin"].shape == (64,) and len(set(a[0]["coin"].tolist())) == 64
    it = _train(cifar10_data_dir, **kw)
    _take(it, 1)
    state = it.get_state()
    resumed = _train(cifar10_data_dir, **kw)
    resumed.set_state(state)
    _assert_same(_take(resumed, 2), a[1:])


@pytest.mark.parametrize("count, batch", [(1, 100), (3, 33)])
def test_eval_covers_every_example_once_with_padding(cifar10_data_dir, all_examples, count,
                                                     batch):
    """Padded static batches; masks select each test example exactly once."""
    seen, lengths = collections.Counter(), set()
    for i in range(count):
        batches = list(make_eval_iter("cifar10", "test", data_dir=cifar10_data_dir,
                                      batch_size=batch, process_index=i, process_count=count))
        lengths.add(len(batches))
        for b in batches:
            assert set(b) == {"image", "label", "mask"} and b["mask"].dtype == np.bool_
            assert b["image"].shape == (batch, 32, 32, 3)  # batch_size is per process.
            assert (b["image"][~b["mask"]] == 0).all() and (b["label"][~b["mask"]] == -1).all()
        seen += _examples(batches)
    assert lengths == {-(-(-(-N_TEST // count)) // batch)}  # The same on every process.
    assert seen == all_examples["test"]
    # Deterministic order: a second pass is identical.
    first = next(make_eval_iter("cifar10", "test", data_dir=cifar10_data_dir, batch_size=batch,
                                process_index=0, process_count=count))
    again = next(make_eval_iter("cifar10", "test", data_dir=cifar10_data_dir, batch_size=batch,
                                process_index=0, process_count=count))
    _assert_same([first], [again])


def test_eval_batch_larger_than_split_is_padding(cifar10_data_dir):
    """A batch larger than the split is one padded batch, not an error."""
    (batch,) = list(make_eval_iter("cifar10", "test", data_dir=cifar10_data_dir,
                                   batch_size=1024, process_index=0, process_count=1))
    assert batch["image"].shape[0] == 1024 and int(batch["mask"].sum()) == N_TEST


@pytest.mark.parametrize("kw, match", [
    ({"global_batch_size": 255, "process_count": 2}, r"global_batch_size \(255\) must be "
                                                     r"divisible by the number of processes \(2\)"),
    ({"global_batch_size": 4096}, r"global batch \(4096\) is larger than cifar10\[train\] \(2048 examples"),
    ({"global_batch_size": 2050, "process_count": 2}, r"global batch \(2050\) is larger than .*\(2048 examples"),
    ({"global_batch_size": 0}, "must be a positive int"),
    ({"process_index": 2, "process_count": 2}, r"process_index=2 must be in \[0, "),
    ({"image_key": "label"}, "is int64, expected uint8"),
    ({"image_key": "img"}, r"no image key 'img'; its keys are \['id', 'image', 'label'\]"),
    ({"label_key": "y"}, "no label key 'y'.*label_key=None for unlabelled"),
])
def test_train_errors_name_the_problem(cifar10_data_dir, kw, match):
    """Bad arguments fail at construction with a ValueError naming the fix."""
    with pytest.raises(ValueError, match=match):
        _train(cifar10_data_dir, **kw)


@pytest.mark.parametrize("kw, match", [
    ({"label_key": None}, "needs labels"),
    ({"label_key": "y"}, "no label key 'y'"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
])
def test_eval_errors_name_the_problem(cifar10_data_dir, kw, match):
    """Eval needs labels and a positive batch size."""
    kw = {"batch_size": 64, "process_index": 0, "process_count": 1, **kw}
    with pytest.raises(ValueError, match=match):
        make_eval_iter("cifar10", "test", data_dir=cifar10_data_dir, **kw)


def test_image_validation_rejects_bad_arrays():
    """Non-uint8 or non-(H, W, C) images raise; grayscale becomes RGB."""
    from jaxssl.data import pipeline  # pylint: disable=g-import-not-at-top

    to_example = pipeline._ToExample("toy[train]", "image", "label", need_label=True)
    with pytest.raises(ValueError, match="float32, expected uint8"):
        to_example.map({"image": np.zeros((4, 4, 3), np.float32), "label": 0})
    with pytest.raises(ValueError, match=r"shape \(4, 4\), expected \(H, W, C\)"):
        to_example.map({"image": np.zeros((4, 4), np.uint8), "label": 0})
    with pytest.raises(ValueError, match=r"shape \(4, 4, 2\)"):
        to_example.map({"image": np.zeros((4, 4, 2), np.uint8), "label": 0})
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    out = to_example.map({"image": gray, "label": 3})
    assert out["image"].shape == (4, 4, 3) and (out["image"] == gray).all()
    assert out["label"].dtype == np.int32


def test_missing_dataset_names_the_prepare_command(tmp_path):
    """An unprepared data_dir: FileNotFoundError with the offline and online fixes."""
    with pytest.raises(FileNotFoundError) as e:
        _train(tmp_path)
    msg = str(e.value)
    assert "'cifar10' is not prepared in " + str(tmp_path) in msg
    assert f"python -m jaxssl.data.prepare cifar10 --data_dir {tmp_path}" in msg
    assert "download_and_prepare(file_format='array_record')" in msg
    with pytest.raises(FileNotFoundError, match="not prepared"):
        make_eval_iter("mnist", "test", data_dir=tmp_path, batch_size=8, process_count=1,
                       process_index=0)


def test_tfrecord_only_dataset_asks_for_array_record(cifar10_data_dir, tmp_path):
    """A dataset stored only as tfrecord has no random access: say how to fix it."""
    dst = tmp_path / "cifar10" / "3.0.2"
    shutil.copytree(pathlib.Path(cifar10_data_dir) / "cifar10" / "3.0.2", dst)
    info = json.loads((dst / "dataset_info.json").read_text())
    info["fileFormat"] = "tfrecord"
    (dst / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(FileNotFoundError, match="tfrecord.*array_record.*convert_format"):
        get_source("cifar10", "train", data_dir=tmp_path)


def test_pipeline_never_imports_tensorflow(cifar10_data_dir):
    """Reading batches (train and eval) leaves TensorFlow unimported."""
    code = textwrap.dedent(f"""
        import sys
        from jaxssl.data import make_eval_iter, make_train_iter
        it = make_train_iter("cifar10", "train", data_dir={cifar10_data_dir!r},
                             global_batch_size=32, seed=0)
        next(it)
        next(make_eval_iter("cifar10", "test", data_dir={cifar10_data_dir!r}, batch_size=32))
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]


def test_worker_process_matches_in_process_and_resumes(cifar10_data_dir):
    """worker_count=1 gives the same batches; its state is JSON and resumes exactly."""
    kw = {"global_batch_size": 64, "seed": 1}
    expected = _take(_train(cifar10_data_dir, **kw), 4)
    it = _train(cifar10_data_dir, worker_count=1, **kw)
    try:
        _assert_same(_take(it, 2), expected[:2])
        state = json.loads(json.dumps(it.get_state()))
    finally:
        it.close()
    resumed = _train(cifar10_data_dir, worker_count=1, **kw)
    try:
        resumed.set_state(state)
        _assert_same(_take(resumed, 2), expected[2:])
    finally:
        resumed.close()


def test_processes_read_their_rows_of_one_global_order(cifar10_data_dir):
    """2 processes' batches, concatenated, are the 1-process batch; a state saved by one process count
    resumes on the other (elastic resume): the iterator state is a position in the global stream."""
    def flip_some(example, rng):  # a host transform: its randomness must not depend on the process count
        return {**example, "image": example["image"][:, ::-1] if rng.random() < 0.5 else example["image"]}

    make = lambda index, count: make_train_iter(
        "cifar10", "train", data_dir=cifar10_data_dir, global_batch_size=64, seed=3, process_index=index,
        process_count=count, transform=flip_some, num_threads=0, prefetch=0)
    one, two = make(0, 1), [make(i, 2) for i in range(2)]
    for _ in range(3):
        whole, halves = next(one), [next(it) for it in two]
        for k in whole:
            np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), whole[k])
    state = two[0].get_state()
    assert state == two[1].get_state()
    resumed = make(0, 1)
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["image"], next(one)["image"])
