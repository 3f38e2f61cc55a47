"""End to end on real CIFAR-10 (a prepared subset): train, checkpoint, resume exactly, kNN, CLI errors."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import simclr_cifar10
from jaxssl.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, **overrides):
    config = simclr_cifar10.get_config("runlocal")
    config.data.data_dir = data_dir
    config.data.prepare_offline = False  # the fixture prepared a (marked) subset there
    config.progress_bar = False
    config.model.width = 0.125
    config.method_kw.proj_hidden = (32,)
    config.method_kw.proj_dim = 16
    for k, v in overrides.items():
        config[k] = v
    return config


def _params(workdir, step):
    restored = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
    return restored["params"], restored["opt_state"]


def test_train_writes_metrics_checkpoints_and_knn(cifar10_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    results = loop.train(_config(cifar10_data_dir), workdir)
    for key in ("knn_k20_t0.07_top1", "knn_k20_t0.07_top5", "knn_k200_t0.1_top1", "knn_k200_t0.1_top5"):
        assert 0.0 <= results[key] <= 1.0
    assert np.isfinite(results["loss"])
    records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    assert any("knn_k20_t0.07_top1" in r for r in records)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    assert os.listdir(os.path.join(workdir, "tb"))
    assert json.load(open(os.path.join(workdir, "config.json")))["method"] == "simclr"


def test_resume_is_bit_identical_to_uninterrupted(cifar10_data_dir, tmp_path):
    """4 steps in one go == 2 steps, stop, restart with the same command to 4 (params, optimiser, data order)."""
    no_eval = lambda c: (c.evals.knn.__setattr__("enabled", False), c)[1]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    loop.train(no_eval(_config(cifar10_data_dir, total_steps=4)), straight)
    loop.train(no_eval(_config(cifar10_data_dir, total_steps=2)), split)
    loop.train(no_eval(_config(cifar10_data_dir, total_steps=4)), split)
    a, b = _params(straight, 4), _params(split, 4)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    # The resumed run really started from step 2 (it logged steps 2 and 4 once each).
    steps = [json.loads(l)["step"] for l in open(os.path.join(split, "metrics.jsonl"))]
    assert steps == [2, 4]


def test_incompatible_workdir_is_refused(cifar10_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = _config(cifar10_data_dir, total_steps=2)
    config.evals.knn.enabled = False
    loop.train(config, workdir)
    config.method_kw.temperature = 0.1
    with pytest.raises(ValueError, match="different config"):
        loop.train(config, workdir)
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]  # nothing was lost


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "jaxssl.main", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **env}, timeout=300)


def test_cli_rejects_unknown_config_key(tmp_path):
    proc = _cli("--config", "configs/simclr_cifar10.py:runlocal", "--workdir", str(tmp_path),
                "--config.batch_sise=64")
    assert proc.returncode != 0
    assert "batch_sise" in proc.stderr


def test_cli_runs_text_configs_through_the_one_trainer(tmp_path):
    # data2vec text: config.data.name="tiny_shakespeare" makes jaxssl.data.inputs feed token ids (not TFDS images).
    workdir = tmp_path / "text"
    proc = _cli("--config", "configs/data2vec_text_shakespeare.py:runlocal", "--workdir", str(workdir),
                "--config.progress_bar=False", "--config.total_steps=2", "--config.log_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = float(re.search(r"loss: ([\d.]+) \(last logged step\)", proc.stdout).group(1))
    assert np.isfinite(last)
    assert os.listdir(workdir / "checkpoints") == ["2"]
    assert [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl")] == [1, 2]


def test_cli_missing_dataset_names_the_fix(tmp_path):
    proc = _cli("--config", "configs/simclr_cifar10.py:runlocal", "--workdir", str(tmp_path / "w"),
                f"--config.data.data_dir={tmp_path / 'empty'}", "--config.data.prepare_offline=False")
    assert proc.returncode != 0
    assert "jaxssl.data.prepare" in proc.stderr


def test_bad_config_values_are_reported(cifar10_data_dir, tmp_path):
    config = _config(cifar10_data_dir)
    config.dtype = "float16"
    with pytest.raises(ValueError, match="config.dtype"):
        loop.train(config, str(tmp_path / "a"))
    config = _config(cifar10_data_dir)
    config.method_kw.temprature = 0.5
    with pytest.raises(ValueError, match="temprature"):
        loop.train(config, str(tmp_path / "b"))
