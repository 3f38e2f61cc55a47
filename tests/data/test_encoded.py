"""Encoded images of many sizes: host decode + per-view crops (imagenette JPEGs, image folders), bad input."""
import io
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from jaxssl import augment
from jaxssl.data import encoded

IMAGENETTE = "imagenette/112px-v2"
VIEWS = [dict(crop_size=48, crop_scale=(0.4, 1.0))] * 2 + [dict(crop_size=24, crop_scale=(0.05, 0.4))]


def _iter(data_dir, name=IMAGENETTE, **kw):
    kw = {"global_batch_size": 8, "seed": 0, "process_index": 0, "process_count": 1, **kw}
    return encoded.make_train_iter(name, "train", VIEWS, data_dir=data_dir, **kw)


def test_jpeg_datasets_are_cropped_on_host_fixed_size_ones_on_device(imagenette_data_dir, cifar10_data_dir):
    assert encoded.is_encoded(IMAGENETTE, imagenette_data_dir)
    assert not encoded.is_encoded("cifar10", cifar10_data_dir)  # CIFAR keeps the on-device crop path
    assert encoded.is_encoded("folder:/anywhere", None)


def test_multicrop_views_labels_resume_and_process_split(imagenette_data_dir):
    """One uint8 array per view (sizes differ); set_state resumes bit-exactly; 2 processes == 1 process."""
    it = _iter(imagenette_data_dir)
    first = [next(it) for _ in range(2)]
    assert [v.shape for v in first[0]["views"]] == [(8, 48, 48, 3), (8, 48, 48, 3), (8, 24, 24, 3)]
    assert all(v.dtype == np.uint8 for v in first[0]["views"]) and first[0]["label"].dtype == np.int32
    state = it.get_state()
    after = next(it)
    resumed = _iter(imagenette_data_dir)
    resumed.set_state(state)
    again = next(resumed)
    for a, b in zip(after["views"], again["views"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(after["label"], again["label"])
    # The global batch does not depend on the process count: each process decodes its rows only.
    halves = [next(_iter(imagenette_data_dir, process_index=i, process_count=2)) for i in range(2)]
    for v in range(len(VIEWS)):
        np.testing.assert_array_equal(np.concatenate([h["views"][v] for h in halves]), first[0]["views"][v])
    np.testing.assert_array_equal(np.concatenate([h["label"] for h in halves]), first[0]["label"])
    # Views of one image differ (independent boxes), and a new seed gives new crops.
    assert not np.array_equal(first[0]["views"][0], first[0]["views"][1])
    other = next(_iter(imagenette_data_dir, seed=1))
    assert not np.array_equal(other["views"][0], first[0]["views"][0])


def test_eval_pass_centre_crops_and_pads(imagenette_data_dir):
    batches = list(encoded.make_eval_iter(IMAGENETTE, "holdout", 40, data_dir=imagenette_data_dir, batch_size=16,
                                          process_index=0, process_count=1))
    assert len(batches) == 4 and batches[0]["image"].shape == (16, 40, 40, 3)
    mask = np.concatenate([b["mask"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert mask.sum() == 50 and (labels[~mask] == -1).all() and set(labels[mask]) == set(range(10))
    again = next(iter(encoded.make_eval_iter(IMAGENETTE, "holdout", 40, data_dir=imagenette_data_dir, batch_size=16,
                                             process_index=0, process_count=1)))
    np.testing.assert_array_equal(again["image"], batches[0]["image"])  # deterministic


def test_host_cropped_views_get_only_photometric_ops_on_device():
    """make_views(cropped=True): no second crop (a non-square view keeps its shape, identity ops are exact)."""
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (2, 12, 20, 3), dtype=np.uint8), rng.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)]
    specs = [dict(crop_size=(12, 20), crop_scale=(0.08, 1.0)), dict(crop_size=6, crop_scale=(0.05, 0.4))]
    out = augment.make_views(jax.random.key(0), views, specs, cropped=True)
    for o, v in zip(out, views):
        np.testing.assert_allclose(np.asarray(o), v / 255.0, atol=1e-6)
    jittered = augment.make_views(jax.random.key(0), views, [{**s, "jitter_p": 1.0} for s in specs], cropped=True)
    assert [o.shape for o in jittered] == [(2, 12, 20, 3), (2, 6, 6, 3)]


# ------------------------------------------------------------------------------------ image folders
def _save(path: pathlib.Path, mode: str = "RGB", size=(40, 30), fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16)).save(path, fmt)
        return
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).convert(mode).save(path, fmt)


def _folder(root: pathlib.Path) -> pathlib.Path:
    """Two classes of mixed files: JPEG, CMYK JPEG, RGBA PNG, 16-bit PNG, grayscale, an 8x8 image (< crop)."""
    _save(root / "cats" / "a.jpg")
    _save(root / "cats" / "b.JPEG", mode="CMYK")
    _save(root / "cats" / "deeper" / "c.png", mode="RGBA", fmt="PNG")
    _save(root / "dogs" / "d.png", mode="I;16", fmt="PNG")
    _save(root / "dogs" / "e.jpg", mode="L", size=(64, 100))
    _save(root / "dogs" / "tiny.png", size=(8, 8), fmt="PNG")
    (root / "dogs" / ".DS_Store").write_bytes(b"\0junk")  # hidden files are ignored
    return root


def test_folder_labelled_by_subfolder_trains_every_mode(tmp_path):
    root = _folder(tmp_path / "photos")
    src = encoded.FolderSource(root)
    assert src.class_names == ["cats", "dogs"] and list(src.labels) == [0, 0, 0, 1, 1, 1]
    it = encoded.make_train_iter(f"folder:{root}", "train", VIEWS, global_batch_size=6, seed=0, process_index=0,
                                 process_count=1)
    batch = next(it)
    assert [v.shape for v in batch["views"]] == [(6, 48, 48, 3), (6, 48, 48, 3), (6, 24, 24, 3)]
    assert sorted(batch["label"]) == [0, 0, 0, 1, 1, 1]
    evals = list(encoded.make_eval_iter(f"folder:{root}", "train", 32, batch_size=4, process_index=0,
                                        process_count=1))
    assert sum(int(b["mask"].sum()) for b in evals) == 6


def test_folder_without_subfolders_is_unlabelled(tmp_path):
    _save(tmp_path / "x.jpg")
    _save(tmp_path / "y.png", fmt="PNG")
    _save(tmp_path / "sub" / "z.jpg")
    src = encoded.FolderSource(tmp_path)
    assert src.class_names is None and "label" not in src[0]
    batch = next(encoded.make_train_iter(f"folder:{tmp_path}", "train", VIEWS[:1], global_batch_size=3, seed=0,
                                         process_index=0, process_count=1))
    assert "label" not in batch and batch["views"][0].shape == (3, 48, 48, 3)
    with pytest.raises(ValueError, match="evaluation needs labels"):
        encoded.make_eval_iter(f"folder:{tmp_path}", "train", 32, batch_size=2, process_index=0, process_count=1)


@pytest.mark.parametrize("bad, content", [("empty.jpg", b""), ("notes.txt", b"not an image"),
                                          ("cut.jpg", "truncated")])
def test_folder_bad_files_error_naming_them_or_are_skipped_and_counted(tmp_path, bad, content, caplog):
    _save(tmp_path / "good.jpg", size=(200, 150))
    if content == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), np.uint8)).save(buf, "JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    (tmp_path / bad).write_bytes(content)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    if bad != "cut.jpg":  # the header is read when the folder is listed
        with pytest.raises(ValueError, match=rf"{bad}.*skip_bad_images"):
            encoded.FolderSource(tmp_path)
    else:  # a truncated file is only found when decoded: the error names it then
        it = encoded.make_train_iter(f"folder:{tmp_path}", "train", VIEWS[:1], global_batch_size=2, seed=0,
                                     process_index=0, process_count=1, prefetch=0)
        with pytest.raises(Exception, match=bad):
            next(it)
    with caplog.at_level("WARNING"):
        src = encoded.FolderSource(tmp_path, skip_bad=True)
    assert len(src) == 1 and src.skipped == 1 and "skipped 1 unreadable" in caplog.text
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing deleted or changed


def test_empty_or_missing_folder_errors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="holds no readable images"):
        encoded.FolderSource(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        encoded.FolderSource(tmp_path / "nope")


def test_unprepared_imagenette_config_names_the_offline_fix(tmp_path):
    from jaxssl.data import sources  # pylint: disable=g-import-not-at-top
    with pytest.raises(FileNotFoundError, match=r"python -m jaxssl.data.prepare imagenette --data_dir"):
        sources.get_source(IMAGENETTE, "train", tmp_path)
