"""Issue 20, items 8 and 9: one clear message for each mistake, bad data rejected instead of used silently."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import simclr_cifar10
from jaxssl import augment, losses
from jaxssl import main as jaxssl_main
from jaxssl.evaluate import knn
from jaxssl.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_missing_config_file_is_one_line_and_exit_code_2():
    proc = subprocess.run([sys.executable, "-m", "jaxssl.main", "--config", "configs/simclr_cifar.py:runlocal",
                           "--workdir", "unused"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --config: the config file configs/simclr_cifar.py does not exist (cwd {REPO}); "
        f"e.g. configs/simclr_cifar10.py."], proc.stderr[-2000:]


@pytest.mark.parametrize("override, says", [
    ("--config.optimizer.lr=0.1", "config.optimizer has no key 'lr'; valid keys of config.optimizer: ['base_lr'"),
    ("--config.input.views[2].flip_p=0", "config.input.views has no element [2] (config.input.views has 2 elements)"),
    ("--config.input.views[1].flip=0", "config.input.views[1] has no key 'flip'; valid keys of config.input.views[1]"),
    ("--config.nonfinte=skip", "config has no key 'nonfinte'; valid keys of config: ['accum_steps'"),
])
def test_unknown_nested_override_names_the_key_and_the_valid_keys(monkeypatch, override, says):
    monkeypatch.chdir(REPO)
    argv = ["prog", "--config", "configs/simclr_cifar10.py:runlocal", "--workdir", "w", override]
    error = jaxssl_main._config_error(argv)
    assert error is not None and says in error, error
    assert jaxssl_main._config_error(argv[:-1] + ["--config.optimizer.base_lr=0.1"]) is None


def test_workdir_that_is_a_file_is_named(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    config = simclr_cifar10.get_config("runlocal")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        loop.train(config, str(path))


def test_eval_tool_checks_evals_before_restoring(tmp_path, capsys):
    from jaxssl.tools import eval as eval_tool
    assert eval_tool.main(["--workdir", str(tmp_path / "missing"), "--evals", "knn,bogus"]) == 2
    err = capsys.readouterr().err
    assert "Unknown evaluations ['bogus'] (--evals)" in err and "config.json" not in err, err


def test_nt_xent_and_infonce_accept_a_traced_temperature():
    z = jax.random.normal(jax.random.key(0), (4, 8))
    for t in (0.5, jnp.float32(0.5)):
        np.testing.assert_allclose(jax.jit(losses.nt_xent)(z, z, t), losses.nt_xent(z, z, 0.5), rtol=1e-6)
        np.testing.assert_allclose(jax.jit(losses.infonce)(z, z, None, t), losses.infonce(z, z, None, 0.5),
                                   rtol=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        losses.nt_xent(z, z, jnp.float32(0.0))


def test_make_views_rejects_float_images_outside_0_1_and_a_reversed_crop_scale():
    x = np.random.default_rng(0).random((2, 8, 8, 3), np.float32)
    view = dict(crop_size=8, crop_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"Float images must be in \[0, 1\].*divide float images in \[0, 255\]"):
        augment.make_views(jax.random.key(0), 255 * x, [view])
    with pytest.raises(ValueError, match=r"scale\[0\] <= scale\[1\].*scale=\(1.0, 0.5\)"):
        augment.make_views(jax.random.key(0), x, [dict(view, crop_scale=(1.0, 0.5))])


def test_knn_rejects_non_finite_features():
    r = np.random.default_rng(0)
    bank, queries = r.standard_normal((16, 4)).astype(np.float32), r.standard_normal((8, 4)).astype(np.float32)
    labels, test_labels = r.integers(0, 2, 16), r.integers(0, 2, 8)
    knn.knn_protocols(bank, labels, queries, test_labels, protocols=((5, 0.1),))
    bank[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"train_features has 1 of 16 row\(s\) holding NaN or Inf"):
        knn.knn_protocols(bank, labels, queries, test_labels, protocols=((5, 0.1),))
    queries[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"test_features has 1 of 8"):
        knn.knn_protocols(np.nan_to_num(bank), labels, queries, test_labels, protocols=((5, 0.1),))
