"""PNG figures: attention-map grids, 2-D embedding plots and metric curves.

Everything draws on a ``matplotlib.figure.Figure`` rendered by the Agg canvas, never through
``pyplot``: no display is needed, no global backend is switched and figures are freed when the
function returns. Each ``save_*`` function writes one PNG and returns its path.

* :func:`save_attention_grid`: one row per image: the image, each head's attention map over it
  and the union of the heads' thresholded masks (``jaxssl.evaluate.attention``).
* :func:`save_embedding_plot`: a 2-D projection of features coloured by label, with UMAP
  (``umap-learn``, optional), t-SNE (scikit-learn) or, when neither is installed, PCA; the title
  says which.
* :func:`save_curves`: every scalar of ``metrics.jsonl`` against the step (``python -m jaxssl.tools.plot``).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PROJECTIONS = ("auto", "umap", "tsne", "pca")


def _save(fig: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=fig.dpi, bbox_inches="tight")
    return path


def _to_display(images: Any) -> np.ndarray:
    """(B, H, W, 3) uint8, or float in [0, 1] or normalised -> float in [0, 1] for imshow."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.min() < 0.0 or x.max() > 1.0:  # normalised images: stretch each one to [0, 1]
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
        x = (x - lo) / np.maximum(hi - lo, 1e-12)
    return x


# ----------------------------------------------------------------------------------------------
# Attention maps.
# ----------------------------------------------------------------------------------------------
def save_attention_grid(path: str | os.PathLike, images: Any, maps: Any, masks: Any | None = None, *,
                        max_images: int = 8, alpha: float = 0.6, title: str | None = None) -> str:
    """Images with each head's attention map (and thresholded masks) as one PNG grid.

    Args:
        path: output PNG path (parent directories are created).
        images: (B, H, W, 3) uint8 or float images.
        maps: (B, heads, H, W) attention maps over the image (``attention.attention_maps(...,
            image_size=(H, W))``).
        masks: optional (B, heads, H, W) bool masks (``attention.threshold_masks``); a last
            column shows their union over heads, one colour per head.
        max_images: rows drawn at most.
        alpha: opacity of the map over the image.
        title: figure title.

    Returns:
        ``path``.
    """
    images = _to_display(images)
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 4 or maps.shape[0] != images.shape[0] or maps.shape[2:] != images.shape[1:3]:
        raise ValueError(f"maps must be (B, heads, H, W) matching images {images.shape}, got {maps.shape}; "
                         f"upsample with attention.attention_maps(..., image_size=(H, W)).")
    if masks is not None and np.shape(masks) != maps.shape:
        raise ValueError(f"masks must have the shape of maps {maps.shape}, got {np.shape(masks)}.")
    rows, heads = min(len(images), max_images), maps.shape[1]
    cols = 1 + heads + (masks is not None)
    fig = Figure(figsize=(1.6 * cols, 1.6 * rows + (0.4 if title else 0)), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    palette = _colours(heads)
    for r in range(rows):
        axes[r, 0].imshow(images[r])
        for h in range(heads):
            axes[r, 1 + h].imshow(images[r])
            m = maps[r, h]
            axes[r, 1 + h].imshow((m - m.min()) / max(m.max() - m.min(), 1e-12), cmap="inferno", alpha=alpha)
            if r == 0:
                axes[r, 1 + h].set_title(f"head {h}", fontsize=8)
        if masks is not None:
            overlay = images[r].copy()
            for h in range(heads):
                sel = np.asarray(masks[r, h], bool)
                overlay[sel] = 0.5 * overlay[sel] + 0.5 * palette[h][:3]
            axes[r, -1].imshow(overlay)
            if r == 0:
                axes[r, -1].set_title("masks", fontsize=8)
    if rows:
        axes[0, 0].set_title("image", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _colours(n: int) -> np.ndarray:
    from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return np.asarray([cmap(i % cmap.N) for i in range(n)], np.float32)


# ----------------------------------------------------------------------------------------------
# Embedding plots.
# ----------------------------------------------------------------------------------------------
def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def project_2d(features: Any, *, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D projection of (N, D) features: (N, 2) float32 and the name of the method used.

    ``method="auto"`` takes UMAP if ``umap-learn`` is installed, else t-SNE (scikit-learn), else
    PCA (NumPy SVD); asking for a missing one raises ImportError with the install command.
    Features are standardised first; t-SNE and UMAP see the top 50 principal components (the
    usual speed-up of t-SNE, van der Maaten & Hinton, 2008).
    """
    if method not in PROJECTIONS:
        raise ValueError(f"Unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}.")
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"features must be (N, D) with N >= 3, got shape {x.shape}.")
    if method == "auto":
        method = "umap" if _available("umap") else "tsne" if _available("sklearn") else "pca"
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    pcs = _pca(x, min(50, *x.shape))
    if method == "pca":
        return pcs[:, :2].astype(np.float32), "PCA"
    if method == "umap":
        if not _available("umap"):
            raise ImportError("UMAP needs umap-learn: pip install umap-learn (or use method='tsne').")
        import umap  # pylint: disable=g-import-not-at-top
        xy = umap.UMAP(n_components=2, random_state=seed).fit_transform(pcs)
        return np.asarray(xy, np.float32), "UMAP"
    if not _available("sklearn"):
        raise ImportError("t-SNE needs scikit-learn: pip install scikit-learn (or use method='pca').")
    from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
    perplexity = float(min(30.0, (len(x) - 1) / 3))  # must be < N
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(pcs)
    return np.asarray(xy, np.float32), "t-SNE"


def _pca(x: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal components of centred x, with a deterministic sign."""
    u, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    pad = max(0, 2 - k)  # fewer than 2 components: pad with zeros so a 2-D plot still works
    return np.pad((u[:, :k] * s[:k]) * signs[:k], ((0, 0), (0, pad)))


def save_embedding_plot(path: str | os.PathLike, features: Any, labels: Any, *, method: str = "auto",
                        max_points: int = 5000, class_names: Sequence[str] | None = None, seed: int = 0,
                        title: str | None = None) -> str:
    """Scatter plot of a 2-D projection of ``features`` coloured by ``labels``.

    Args:
        path: output PNG path.
        features: (N, D) features (e.g. ``features`` of ``python -m jaxssl.tools.features``'s npz).
        labels: (N,) int labels.
        method: "auto", "umap", "tsne" or "pca" (see :func:`project_2d`).
        max_points: a random subset of at most this many points is projected (t-SNE is O(N log N)
            per iteration but slow beyond ~10k points on CPU).
        class_names: legend names indexed by label.
        seed: seed of the subset and of the projection.
        title: prefix of the title; the projection's name is always appended.

    Returns:
        ``path``.
    """
    x = np.asarray(features)
    y = np.asarray(labels)
    if y.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {y.shape}.")
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
        x, y = x[keep], y[keep]
    xy, used = project_2d(x, method=method, seed=seed)
    fig = Figure(figsize=(6.5, 5.5), dpi=100)
    ax = fig.subplots()
    classes = np.unique(y)
    palette = _colours(len(classes))
    for i, c in enumerate(classes):
        sel = y == c
        name = class_names[int(c)] if class_names is not None else str(int(c))
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=palette[i], label=name, alpha=0.8, linewidths=0)
    if len(classes) <= 20:
        ax.legend(markerscale=2.5, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    suffix = f"{used} of {len(x)} points" + (" (neither UMAP nor t-SNE installed)" if used == "PCA" and method == "auto"
                                           else "")
    ax.set_title(f"{title}: {suffix}" if title else suffix, fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Metric curves.
# ----------------------------------------------------------------------------------------------
def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (or of the one in a workdir); unreadable lines are skipped."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No metrics log at {path}; the trainer writes <workdir>/metrics.jsonl.")
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted write
    return records


def metric_series(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (steps, values)} for every finite numeric scalar; a resumed run's repeated steps keep the last."""
    series: dict[str, dict[int, float]] = {}
    for r in records:
        if "step" not in r:
            continue
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                series.setdefault(k, {})[int(r["step"])] = float(v)
    return {k: (np.asarray(sorted(d)), np.asarray([d[s] for s in sorted(d)])) for k, d in series.items()}


def _order(keys: Iterable[str]) -> list[str]:
    """loss first, then training metrics, then evaluations (kNN, probe), alphabetically within."""
    rank = lambda k: (k != "loss", k.startswith(("knn", "probe", "linear")), k)
    return sorted(keys, key=rank)


def save_curves(path: str | os.PathLike, records: Iterable[Mapping[str, Any]], *, keys: Sequence[str] | None = None,
                ncols: int = 3, title: str | None = None) -> str:
    """One subplot per metric against the training step, as one PNG.

    Args:
        path: output PNG path.
        records: dicts with a "step" and scalars (``read_metrics``).
        keys: metrics to draw (default: all, loss first); unknown keys raise.
        ncols: subplots per row.
        title: figure title.

    Returns:
        ``path``.
    """
    series = metric_series(records)
    if keys is None:
        keys = _order(series)
    missing = [k for k in keys if k not in series]
    if missing:
        raise ValueError(f"No values for {missing}; the log has {sorted(series)}.")
    if not keys:
        raise ValueError("The log has no scalar metrics with a step.")
    ncols = min(ncols, len(keys))
    nrows = -(-len(keys) // ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.5 * nrows + (0.4 if title else 0)), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, k in zip(axes.ravel(), keys):
        steps, values = series[k]
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, linewidth=1.2)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
