r"""Export frozen backbone features of a split: ``python -m jaxssl.tools.features``.

  python -m jaxssl.tools.features --workdir workdirs/simclr_cpu --split test --output features.npz

Rebuilds the network from ``<workdir>/config.json``, restores from the newest (or ``--step``)
checkpoint **only** the variables inference needs (the student's ``params`` and ``model_state``,
or with ``--teacher`` the EMA teacher), never the optimiser state, and writes an npz with
``features`` float32 (N, F), ``labels`` int32 (N,) and ``step``. Inputs go through the run's
evaluation transform (``config.evals.knn.view``: normalisation only), exactly as the trainer's
kNN evaluator sees them. In Python: ``jaxssl.evaluate.restore.load`` and ``split_features``.
"""
from __future__ import annotations

import os
import sys

import jax
import numpy as np

from jaxssl.evaluate import restore
from jaxssl.tools import _args


def main(argv=None) -> int:
    parser = _args.parser("features", __doc__)
    parser.add_argument("--output", required=True, help="npz to write (features, labels, step)")
    parser.add_argument("--split", default="test", help="split, TFDS slicing allowed (e.g. 'train[:10%%]')")
    parser.add_argument("--limit", type=int, default=None, help="embed only the first LIMIT examples")
    _args.add_checkpoint(parser)
    _args.add_data(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        loaded = restore.load(args.workdir, step=args.step, teacher=args.teacher)
        features, labels = restore.split_features(loaded, args.split, dataset=args.dataset, data_dir=args.data_dir,
                                                  batch_size=args.batch_size, limit=args.limit)
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
            np.savez(args.output, features=features, labels=labels, step=np.int64(loaded.step))
            print(f"Wrote {args.output}: features {features.shape} from step {loaded.step} of {args.workdir}")
        return 0

    return _args.run(body)


if __name__ == "__main__":
    sys.exit(main())
