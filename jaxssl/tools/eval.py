"""Evaluate a trained checkpoint: `python -m jaxssl.tools.eval --workdir DIR`.

Restores the backbone of a `jaxssl.main` workdir (weights only, no optimiser state), embeds a
labelled train split and test split once, and reports on those frozen features:

* weighted kNN, both protocols (k=20/T=0.07 as DINO, k=200/T=0.1 as InstDisc), top-1/top-5;
* a linear probe (`jaxssl.evaluate.linear_probe`: SGD or LARS, cosine schedule, MAE's
  affine-free BatchNorm first), top-1/top-5;
* the collapse monitors RankMe and the std of the L2-normalised features.

The results are printed as a table and written as JSON (default `DIR/eval_<step>.json`).
Example, the CIFAR-10 linear evaluation of solo-learn (100 epochs, SGD, lr 0.1 per 256):

    python -m jaxssl.tools.eval --workdir workdirs/simclr_cifar10_cpu --epochs 100
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import jax
import numpy as np

from jaxssl import monitors
from jaxssl.evaluate import knn, linear_probe, restore
from jaxssl.tools import _args

_KNN_PROTOCOLS = ((20, 0.07), (200, 0.1))


_EVALS = ("knn", "linear", "collapse")


def _check_evals(evals: Sequence[str]) -> None:
    unknown = set(evals) - set(_EVALS)
    if unknown or not evals:
        raise ValueError(f"Unknown evaluations {sorted(unknown)} (--evals); choose from {', '.join(_EVALS)}."
                         if unknown else f"--evals is empty; choose from {', '.join(_EVALS)}.")


def evaluate_features(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                      test_labels: np.ndarray, *, evals: Sequence[str] = ("knn", "linear", "collapse"),
                      linear_kw: dict[str, Any] | None = None) -> dict[str, float]:
    """kNN (both protocols), linear probe and collapse monitors of frozen features.

    Args:
        train_features: (N, D) float features of the labelled training split.
        train_labels: (N,) int labels.
        test_features: (M, D) float features of the test split.
        test_labels: (M,) int labels.
        evals: any of "knn", "linear", "collapse".
        linear_kw: keyword arguments of `jaxssl.evaluate.linear_probe` (epochs, base_lr, ...).

    Returns:
        Flat dict: ``knn_k20_t0.07_top1`` ..., ``linear_top1``, ``linear_top5``,
        ``linear_train_loss``, ``rankme``, ``feature_std``.
    """
    _check_evals(evals)
    out: dict[str, float] = {}
    if "knn" in evals:
        out.update(knn.knn_protocols(train_features, train_labels, test_features, test_labels,
                                     protocols=_KNN_PROTOCOLS))
    if "linear" in evals:
        res = linear_probe.linear_probe(train_features, train_labels, test_features, test_labels, **(linear_kw or {}))
        out.update({f"linear_{k}": v for k, v in res.items()})
    if "collapse" in evals:
        out.update(monitors.monitors(test_features))
    return out


def main(argv=None) -> int:
    parser = _args.parser("eval", __doc__)
    parser.add_argument("--output", default=None, help="JSON to write (default: WORKDIR/eval_<step>.json)")
    parser.add_argument("--train_split", default="train", help="labelled split the kNN bank / probe trains on")
    parser.add_argument("--test_split", default="test", help="split to report accuracies on")
    parser.add_argument("--evals", default="knn,linear,collapse", help="comma-separated: knn, linear, collapse")
    parser.add_argument("--train_limit", type=int, default=None, help="use only the first N training examples")
    parser.add_argument("--test_limit", type=int, default=None, help="use only the first N test examples")
    parser.add_argument("--epochs", type=int, default=100, help="linear-probe epochs (solo-learn CIFAR: 100)")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "lars"), help="linear-probe optimiser")
    parser.add_argument("--base_lr", type=float, default=0.1, help="linear-probe lr per 256 examples")
    parser.add_argument("--weight_decay", type=float, default=0.0, help="linear-probe L2 on the kernel")
    parser.add_argument("--probe_batch_size", type=int, default=256, help="linear-probe mini-batch")
    _args.add_checkpoint(parser)
    _args.add_data(parser)
    args = parser.parse_args(argv)
    evals = tuple(e.strip() for e in args.evals.split(",") if e.strip())

    def body() -> int:
        _check_evals(evals)  # before the minutes of restoring and embedding
        loaded = restore.load(args.workdir, step=args.step, teacher=args.teacher)
        dataset = args.dataset or loaded.config["data"]["name"]
        kw = dict(dataset=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size)
        ftr, ytr = restore.split_features(loaded, args.train_split, limit=args.train_limit, **kw)
        fte, yte = restore.split_features(loaded, args.test_split, limit=args.test_limit, **kw)
        results = evaluate_features(ftr, ytr, fte, yte, evals=evals, linear_kw=dict(
            epochs=args.epochs, optimizer=args.optimizer, base_lr=args.base_lr, weight_decay=args.weight_decay,
            batch_size=args.probe_batch_size))
        if jax.process_index() == 0:
            _report(args, loaded.step, dataset, len(ytr), len(yte), results)
        return 0

    return _args.run(body)


def _report(args, step: int, dataset: str, num_train: int, num_test: int, results: dict) -> None:
    """The JSON record and the printed table (process 0)."""
    record = {"workdir": os.path.abspath(args.workdir), "step": step, "teacher": args.teacher, "dataset": dataset,
              "train_split": args.train_split, "test_split": args.test_split, "num_train": int(num_train),
              "num_test": int(num_test), **results}
    output = args.output or os.path.join(args.workdir, f"eval_{step}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(record, f, indent=1)
    print(f"{'metric':<24} value   ({dataset} {args.train_split} -> {args.test_split}, step {step})")
    for k, v in results.items():
        shown = f"{100 * v:6.2f}%" if ("top" in k) else f"{v:.4f}"
        print(f"{k:<24} {shown}")
    print(f"Wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
