"""The one writer of lightly reference fixtures: numbers that CI compares jaxssl's losses with, without torch.

A fixture script (`benchmarks/lightly_reference_<family>.py`, run in the benchmarks venv, see
`benchmarks/setup.sh`) builds fixed float64-rounded inputs with NumPy, evaluates lightly 1.6's loss on them
in float64 torch, and calls `write(name, cases)`. The JSON lands in `tests/losses/lightly/<name>.json` with
the inputs, the outputs, the versions of torch and lightly, and the command that made it. Tests read it with
`tests.lightly_fixtures.load(name)` and evaluate jaxssl's loss on the same inputs.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "losses", "lightly")


def _plain(value: Any) -> Any:
    """Arrays and tensors to nested lists; everything else as it is (JSON-able scalars, strings, dicts)."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write(name: str, cases: Mapping[str, Mapping[str, Any]]) -> str:
    """Writes `tests/losses/lightly/<name>.json`: {"versions", "command", "cases": {case: {...}}}."""
    import lightly  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"{name}.json")
    out = {"versions": {"torch": torch.__version__, "lightly": lightly.__version__, "numpy": np.__version__},
           "command": ".venv-bench/bin/python " + os.path.relpath(os.path.abspath(sys.argv[0]), ROOT),
           "cases": {case: _plain(values) for case, values in cases.items()}}
    with open(path, "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)
        f.write("\n")
    print("wrote", os.path.relpath(path, ROOT), f"({len(cases)} cases)")
    return path
