r"""PNG plots of a run: metric curves from ``metrics.jsonl`` and, optionally, an embedding plot.

  python -m jaxssl.tools.plot --workdir workdirs/simclr_cpu
  python -m jaxssl.tools.plot --workdir workdirs/simclr_cpu --keys loss,lr,knn_k20_t0.07_top1
  python -m jaxssl.tools.plot --workdir workdirs/simclr_cpu --features features.npz --projection tsne

Writes ``<output>/curves.png`` (every scalar against the step; ``--separate`` also writes one
``<metric>.png`` each) and, with ``--features`` (an npz of ``python -m jaxssl.tools.features``),
``<output>/embedding.png``. ``--output`` defaults to ``<workdir>/plots``.
"""
from __future__ import annotations

import os
import re
import sys

import numpy as np

from jaxssl import viz
from jaxssl.tools import _args


def _filename(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".png"


def plot(workdir: str, *, output: str | None = None, keys=None, separate: bool = False,
         features: str | None = None, projection: str = "auto", max_points: int = 5000) -> list[str]:
    """Writes the PNGs described in the module docstring; returns their paths."""
    output = output or os.path.join(workdir, "plots")
    records = viz.read_metrics(workdir)
    name = os.path.basename(os.path.normpath(workdir))
    paths = [viz.save_curves(os.path.join(output, "curves.png"), records, keys=keys, title=name)]
    if separate:
        for key in keys or viz.metric_series(records):
            paths.append(viz.save_curves(os.path.join(output, _filename(key)), records, keys=[key]))
    if features:
        with np.load(features) as npz:
            if "labels" not in npz:
                raise ValueError(f"{features} has no 'labels' array (keys: {sorted(npz)}); write it with "
                                 f"python -m jaxssl.tools.features.")
            x, y = npz["features"], npz["labels"]
        paths.append(viz.save_embedding_plot(os.path.join(output, "embedding.png"), x, y, method=projection,
                                             max_points=max_points, title=name))
    return paths


def main(argv=None) -> int:
    parser = _args.parser("plot", __doc__)
    parser.add_argument("--output", default=None, help="directory of the PNGs (default: WORKDIR/plots)")
    parser.add_argument("--keys", default=None, help="comma-separated metrics to draw (default: all)")
    parser.add_argument("--separate", action="store_true", help="also write one PNG per metric")
    parser.add_argument("--features", default=None, help="npz with 'features' and 'labels' (python -m jaxssl.tools.features)")
    parser.add_argument("--projection", default="auto", choices=viz.PROJECTIONS)
    parser.add_argument("--max_points", type=int, default=5000)
    args = parser.parse_args(argv)
    keys = [k for k in args.keys.split(",") if k] if args.keys else None

    def body() -> int:
        paths = plot(args.workdir, output=args.output, keys=keys, separate=args.separate, features=args.features,
                     projection=args.projection, max_points=args.max_points)
        print("\n".join(paths))
        return 0

    return _args.run(body)


if __name__ == "__main__":
    sys.exit(main())
