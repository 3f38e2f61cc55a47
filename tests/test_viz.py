"""PNG writers: attention grids, embedding plots (t-SNE / PCA fallback), metric curves, `python -m jaxssl.tools.plot`."""
import json
import os

import numpy as np
import pytest
import threadpoolctl
from PIL import Image

from jaxssl import viz
from jaxssl.tools import plot
from jaxssl.evaluate import attention

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size=(50, 50)):
    assert os.path.isfile(path) and os.path.getsize(path) > 1000, path
    with open(path, "rb") as f:
        assert f.read(8) == _PNG_MAGIC
    with Image.open(path) as im:
        im.verify()  # checks the chunks' CRCs
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 0  # something was drawn


def clusters(n=120, dim=10, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return (rng.normal(size=(classes, dim))[y] * 4 + rng.normal(size=(n, dim))).astype(np.float32), y


def test_attention_grid_png(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    weights = rng.random((3, 4, 16)).astype(np.float32)
    maps = attention.attention_maps(weights, (4, 4), image_size=(32, 32))
    masks = attention.threshold_masks(maps, 0.6)
    path = viz.save_attention_grid(tmp_path / "sub" / "attn.png", images, maps, masks, title="test")
    assert_png(path, min_size=(6 * 100, 3 * 100))  # 1 + 4 heads + masks columns, 3 rows
    # Float (normalised) images and no masks work too.
    path = viz.save_attention_grid(tmp_path / "attn2.png", images / 64.0 - 2.0, maps)
    assert_png(path)
    with pytest.raises(ValueError, match="image_size"):
        viz.save_attention_grid(tmp_path / "bad.png", images, attention.attention_maps(weights, (4, 4)))


def test_embedding_plots_tsne_and_pca(tmp_path):
    x, y = clusters()
    # One OpenMP thread: on a shared, oversubscribed CI machine spinning threads make t-SNE ~10x slower.
    with threadpoolctl.threadpool_limits(1):
        xy, used = viz.project_2d(x, method="tsne")
        assert_png(viz.save_embedding_plot(tmp_path / "tsne.png", x, y, method="tsne", title="toy"))
    assert used == "t-SNE" and xy.shape == (120, 2) and np.all(np.isfinite(xy))
    # t-SNE keeps well-separated clusters apart: each point's nearest neighbour shares its label.
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
    assert np.mean(y[d.argmin(1)] == y) > 0.95
    xy, used = viz.project_2d(x, method="pca")
    assert used == "PCA" and xy.shape == (120, 2)
    assert_png(viz.save_embedding_plot(tmp_path / "pca.png", x, y, method="pca", max_points=50,
                                       class_names=["a", "b", "c", "d"]))


def test_pca_fallback_when_neither_umap_nor_tsne_is_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(viz, "_available", lambda module: False)
    x, y = clusters()
    assert viz.project_2d(x)[1] == "PCA"
    assert_png(viz.save_embedding_plot(tmp_path / "auto.png", x, y))
    with pytest.raises(ImportError, match="pip install umap-learn"):
        viz.project_2d(x, method="umap")
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        viz.project_2d(x, method="tsne")


def _write_log(workdir):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for step in range(2, 42, 2):
            f.write(json.dumps({"step": step, "loss": 5.0 / step, "lr": 0.1 * step / 40, "z_std": 0.1,
                                "probe_top1": step / 50}) + "\n")
        f.write(json.dumps({"step": 40, "knn_k20_t0.07_top1": 0.3, "knn_k20_t0.07_top5": 0.7}) + "\n")
        f.write('{"step": 42, "loss": 0.1')  # a line cut by an interrupted write is skipped


def test_curves_and_plot_cli(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    _write_log(workdir)
    series = viz.metric_series(viz.read_metrics(workdir))
    assert sorted(series) == ["knn_k20_t0.07_top1", "knn_k20_t0.07_top5", "loss", "lr", "probe_top1", "z_std"]
    assert len(series["loss"][0]) == 20 and series["loss"][0][-1] == 40
    x, y = clusters(n=60)
    np.savez(tmp_path / "features.npz", features=x, labels=y)
    assert plot.main(["--workdir", workdir, "--separate", "--features", str(tmp_path / "features.npz"),
                      "--projection", "pca"]) == 0
    written = capsys.readouterr().out.split()
    plots = os.path.join(workdir, "plots")
    assert os.path.join(plots, "curves.png") in written and os.path.join(plots, "embedding.png") in written
    assert os.path.join(plots, "knn_k20_t0.07_top1.png") in written and len(written) == 8
    for path in written:
        assert_png(path)
    assert plot.main(["--workdir", workdir, "--keys", "loss,lr", "--output", str(tmp_path / "out")]) == 0
    assert_png(str(tmp_path / "out" / "curves.png"))
    # Errors are reported with the fix, and a non-zero exit code.
    assert plot.main(["--workdir", str(tmp_path / "missing")]) == 2
    assert plot.main(["--workdir", workdir, "--keys", "los"]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl" in err and "'los'" in err
