"""Text through the one trainer: checkpoints, JSONL metrics and an exact resume on a tiny Tiny-Shakespeare run."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import data2vec_text_shakespeare
from jaxssl.train import loop


def _config(total_steps):
    config = data2vec_text_shakespeare.get_config("runlocal")
    config.model.update(width=16, depth=1, num_heads=2, max_len=16)
    config.method_kw.top_k = 1
    config.data.seq_len = 16
    config.batch_size = 8
    config.total_steps = total_steps
    # Warm-up covers steps 1-2, so the lr of those steps is the same whether the run is planned
    # for 2 or 4 steps: "2 steps, then the same command to 4" is a run interrupted at step 2.
    config.optimizer.warmup_steps = 2
    config.ckpt_steps = 2
    config.progress_bar = False
    return config


def _checkpoint(workdir, step):
    path = os.path.join(workdir, "checkpoints", str(step))
    state = ocp.StandardCheckpointer().restore(os.path.join(path, "state"))
    data = json.load(open(os.path.join(path, "data", "metadata"))) if os.path.exists(
        os.path.join(path, "data", "metadata")) else None
    return state, data


def test_resume_equals_uninterrupted_and_other_configs_are_refused(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    a = loop.train(_config(4), straight)
    first = loop.train(_config(2), split)
    b = loop.train(_config(4), split)
    rows = lambda w: [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
    assert [r["step"] for r in rows(straight)] == [2, 4]
    assert np.isfinite(a["loss"]) and np.isfinite(first["loss"])
    # The resumed half reports the same loss at step 4 as the uninterrupted run: same state, same batch.
    assert b["loss"] == a["loss"]
    sa, da = _checkpoint(straight, 4)
    sb, db = _checkpoint(split, 4)
    for x, y in zip(jax.tree_util.tree_leaves(sa), jax.tree_util.tree_leaves(sb)):
        np.testing.assert_array_equal(x, y)
    assert int(sa["step"]) == 4
    assert da == db == {"step": 4, "seed": 0}  # the iterator state is checkpointed and restored
    assert sorted(os.listdir(os.path.join(split, "checkpoints"))) == ["2", "4"]
    records = [json.loads(l) for l in open(os.path.join(split, "metrics.jsonl"))]
    assert [r["step"] for r in records] == [2, 4]  # the restart began at step 2, not at 0
    assert all(np.isfinite(r["loss"]) and "grad_norm" in r and "teacher_momentum" in r for r in records)
    assert json.load(open(os.path.join(split, "config.json")))["data"]["name"] == "tiny_shakespeare"

    # Another config in the same workdir is refused before anything compiles; nothing is lost.
    config = _config(4)
    config.method_kw.beta = 0.5
    with pytest.raises(ValueError, match="different config"):
        loop.train(config, split)
    assert sorted(os.listdir(os.path.join(split, "checkpoints"))) == ["2", "4"]
