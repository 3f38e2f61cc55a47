"""Reads the lightly reference fixtures written by `benchmarks/_lightly_reference.py` (CI has no torch)."""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "losses", "lightly")


def load(name: str) -> dict[str, dict[str, Any]]:
    """The cases of `tests/losses/lightly/<name>.json`, lists turned back into float64/int arrays."""
    with open(os.path.join(DIR, f"{name}.json")) as f:
        data = json.load(f)

    def arrays(value):
        if isinstance(value, list):
            return np.asarray(value)
        if isinstance(value, dict):
            return {k: arrays(v) for k, v in value.items()}
        return value

    return {case: arrays(values) for case, values in data["cases"].items()}
