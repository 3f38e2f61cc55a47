"""Tests for jaxssl.evaluate.knn: brute-force float64 reference, chunking, 8 fake devices."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jaxssl.evaluate
from jaxssl.evaluate.knn import knn, knn_protocols
from jaxssl.evaluate.knn import knn_hits

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reference_knn_hits(train_x, train_y, test_x, test_y, k, temperature, num_classes):
    """Loop-based float64 weighted kNN, written from the InstDisc/DINO description."""
    train_x = np.asarray(train_x, np.float64)
    test_x = np.asarray(test_x, np.float64)
    train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    test_x = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    m = min(5, num_classes)
    hit1, hitm = [], []
    for x, y in zip(test_x, test_y):
        sims = [float(np.dot(x, f)) for f in train_x]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        scores = [0.0] * num_classes
        for i in order:
            scores[train_y[i]] += np.exp(sims[i] / temperature)
        ranked = sorted(range(num_classes), key=lambda c: (-scores[c], c))
        hit1.append(ranked[0] == y)
        hitm.append(y in ranked[:m] and scores[y] > 0)
    return np.array(hit1), np.array(hitm)


def clustered_data(seed, n_train=300, n_test=70, dim=16, num_classes=12, noise=1.0):
    """Gaussian clusters around random class centres: accuracies strictly between 0 and 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    train_y = rng.integers(0, num_classes, n_train)
    test_y = rng.integers(0, num_classes, n_test)
    train_x = (centres[train_y] + noise * rng.normal(size=(n_train, dim))).astype(np.float32)
    test_x = (centres[test_y] + noise * rng.normal(size=(n_test, dim))).astype(np.float32)
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize("protocol", [(20, 0.07), (200, 0.1), (1, 0.5)])
def test_matches_bruteforce_float64(protocol):
    k, temperature = protocol
    train_x, train_y, test_x, test_y = clustered_data(0)
    hits = knn_hits(train_x, train_y, test_x, test_y, protocols=(protocol,))
    ref1, ref5 = reference_knn_hits(train_x, train_y, test_x, test_y, k, temperature, 12)
    np.testing.assert_array_equal(hits[0, 0], ref1)
    np.testing.assert_array_equal(hits[0, 1], ref5)
    out = knn(train_x, train_y, test_x, test_y, k=k, temperature=temperature)
    assert out == {"top1": pytest.approx(ref1.mean()), "top5": pytest.approx(ref5.mean())}
    assert 0.0 < out["top1"] < out["top5"] or k == 1  # a real, non-trivial task


def test_protocols_keys_and_values():
    train_x, train_y, test_x, test_y = clustered_data(1)
    out = knn_protocols(train_x, train_y, test_x, test_y)
    assert list(out) == [
        "knn_k20_t0.07_top1", "knn_k20_t0.07_top5", "knn_k200_t0.1_top1", "knn_k200_t0.1_top5",
    ]
    for k, t in ((20, 0.07), (200, 0.1)):
        ref1, ref5 = reference_knn_hits(train_x, train_y, test_x, test_y, k, t, 12)
        assert out[f"knn_k{k}_t{t}_top1"] == pytest.approx(ref1.mean())
        assert out[f"knn_k{k}_t{t}_top5"] == pytest.approx(ref5.mean())
        # One pass with max(k) neighbours == a separate pass per protocol.
        single = knn(train_x, train_y, test_x, test_y, k=k, temperature=t)
        assert single == {"top1": out[f"knn_k{k}_t{t}_top1"], "top5": out[f"knn_k{k}_t{t}_top5"]}


def test_chunked_equals_unchunked():
    train_x, train_y, test_x, test_y = clustered_data(2)
    protocols = ((20, 0.07), (200, 0.1))
    full = knn_hits(train_x, train_y, test_x, test_y, protocols=protocols)
    # 300 train rows in chunks of 37 (last chunk padded), 70 test rows in chunks of 16.
    chunked = knn_hits(
        train_x, train_y, test_x, test_y, protocols=protocols, test_chunk=16, train_chunk=37
    )
    np.testing.assert_array_equal(chunked, full)
    # train_chunk < k: the running top-k holds neighbours from many chunks.
    tiny = knn_hits(
        train_x, train_y, test_x, test_y, protocols=protocols, test_chunk=70, train_chunk=7
    )
    np.testing.assert_array_equal(tiny, full)


def test_jax_inputs_and_num_classes():
    import jax.numpy as jnp

    train_x, train_y, test_x, test_y = clustered_data(3, num_classes=12)
    a = knn(train_x, train_y, test_x, test_y)
    b = knn(jnp.asarray(train_x), jnp.asarray(train_y), jnp.asarray(test_x), test_y, num_classes=20)
    assert a == b  # extra empty classes change nothing


def test_separable_clusters_perfect():
    rng = np.random.default_rng(0)
    centres = np.eye(6, 32) * 10.0
    train_y, test_y = np.repeat(np.arange(6), 25), np.repeat(np.arange(6), 9)
    train_x = centres[train_y] + 0.1 * rng.normal(size=(150, 32))
    test_x = centres[test_y] + 0.1 * rng.normal(size=(54, 32))
    for k, t in ((20, 0.07), (25, 0.1)):
        out = knn(train_x, train_y, test_x, test_y, k=k, temperature=t)
        assert out == {"top1": 1.0, "top5": 1.0}


def test_top5_with_few_classes():
    """C < 5: top-5 is top-C, every class that got a vote is a hit."""
    train_x, train_y, test_x, test_y = clustered_data(4, num_classes=3, noise=3.0)
    hits = knn_hits(train_x, train_y, test_x, test_y, protocols=((20, 0.07),))
    ref1, ref5 = reference_knn_hits(train_x, train_y, test_x, test_y, 20, 0.07, 3)
    np.testing.assert_array_equal(hits[0, 0], ref1)
    np.testing.assert_array_equal(hits[0, 1], ref5)


def test_unvoted_class_is_not_a_top5_hit():
    # 1 neighbour, 10 classes: only one class is voted for, the rest tie at 0.
    train_x = np.eye(10, dtype=np.float32)
    train_y = np.arange(10)
    test_x = np.eye(10, dtype=np.float32)[[0, 1]]
    out = knn(train_x, train_y, test_x, np.array([0, 2]), k=1)
    assert out == {"top1": 0.5, "top5": 0.5}


def test_validation_errors():
    x, y = np.ones((10, 4), np.float32), np.arange(10) % 3
    with pytest.raises(ValueError, match="2D"):
        knn(x[:, None], y, x, y)
    with pytest.raises(ValueError, match="must have shape"):
        knn(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="must have shape"):
        knn(x, y, x, y[:5])
    with pytest.raises(ValueError, match="Feature dims differ"):
        knn(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="k=11 exceeds the 10 train examples"):
        knn(x, y, x, y, k=11)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        knn(x, y, x, y, k=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn(x, y, x, y, k=3, temperature=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        knn(x, y, x, y, k=3, num_classes=2)
    with pytest.raises(ValueError, match=">= 0"):
        knn(x, y - 1, x, y, k=3)
    with pytest.raises(ValueError, match="test_chunk"):
        knn(x, y, x, y, k=3, test_chunk=0)
    with pytest.raises(ValueError, match="at least one"):
        knn_protocols(x, y, x, y, protocols=())


def test_public_surface():
    import importlib

    # Each name has one meaning: jaxssl.evaluate.knn is the module (its Evaluator is picked by name
    # from config.evals), the function lives in it.
    assert jaxssl.evaluate.knn is importlib.import_module("jaxssl.evaluate.knn")
    assert jaxssl.evaluate.knn.knn is knn
    assert jaxssl.evaluate.common.available() == ["attentive_probe", "knn", "linear_probe"]
    assert callable(jaxssl.monitors.feature_std)


_SHARDED_CODE = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    from jax.sharding import Mesh
    from jaxssl.evaluate.knn import knn_hits

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(12, 16))
    # 301 train rows: not a multiple of 8 devices, so the bank gets sentinel rows.
    train_y, test_y = rng.integers(0, 12, 301), rng.integers(0, 12, 45)
    train_x = (centres[train_y] + rng.normal(size=(301, 16))).astype(np.float32)
    test_x = (centres[test_y] + rng.normal(size=(45, 16))).astype(np.float32)
    protocols = ((20, 0.07), (200, 0.1))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    single = knn_hits(train_x, train_y, test_x, test_y, protocols=protocols)
    sharded = knn_hits(train_x, train_y, test_x, test_y, protocols=protocols, mesh=mesh)
    # 38 rows per device in chunks of 5 (last one padded); test chunks of 16.
    sharded_chunked = knn_hits(train_x, train_y, test_x, test_y, protocols=protocols,
                               mesh=mesh, train_chunk=5, test_chunk=16)
    # k=200 > 38 rows per device: the global merge must gather from all devices.
    # A 2D mesh: the bank is sharded over "data" (4) and replicated over "model" (2).
    mesh_2d = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    sharded_2d = knn_hits(train_x, train_y, test_x, test_y, protocols=protocols,
                          mesh=mesh_2d, train_chunk=30)
    print(json.dumps({"single": single.tolist(), "sharded": sharded.tolist(),
                      "sharded_chunked": sharded_chunked.tolist(),
                      "sharded_2d": sharded_2d.tolist()}))
    """
)


def test_sharded_equals_single_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_CODE], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    single = np.array(out["single"])
    assert 0.0 < single[:, 0].mean() < 1.0
    np.testing.assert_array_equal(np.array(out["sharded"]), single)
    np.testing.assert_array_equal(np.array(out["sharded_chunked"]), single)
    np.testing.assert_array_equal(np.array(out["sharded_2d"]), single)
