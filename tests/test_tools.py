"""The command-line tools (`python -m jaxssl.tools.features`, `.eval`) on a tiny trained workdir.

Their features match an independent forward pass of the fully restored TrainState, and their
numbers match the library functions on the same frozen features.

One short SimCLR run (runlocal config shrunk as in tests/test_main.py, with the online linear
probe switched on so the trainer's probe path runs too) is shared by the tests of this module.
"""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jax
import jaxssl
from jaxssl import augment
from jaxssl.evaluate import restore
from jaxssl.train import loop
from tests.test_main import _config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(cifar10_data_dir, tmp_path_factory):
    config = _config(cifar10_data_dir, total_steps=2, ckpt_steps=1)  # steps 1 and 2: a fallback exists
    config.evals.knn.enabled = False
    config.model.width = 0.0625  # 32 features; CPU compile time dominates this module
    config.evals.online_probe = ml_collections.ConfigDict(dict(num_classes=10, lr=0.1))
    path = str(tmp_path_factory.mktemp("embed") / "run")
    loop.train(config, path)
    return path


def _full_state(workdir, step):
    """The whole TrainState as saved (optimizer included), without a target: the reference."""
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def test_online_probe_is_logged_and_checkpointed(workdir):
    records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    logged = [r for r in records if "probe_loss" in r]
    assert [r["step"] for r in logged] == [2]
    assert np.isfinite(logged[0]["probe_loss"]) and 0.0 <= logged[0]["probe_top1"] <= 1.0
    probe = _full_state(workdir, 2)["probe"]
    assert probe["params"]["kernel"].shape == (32, 10)  # ResNet-18 x 1/16 features -> 10 classes
    assert np.abs(probe["params"]["kernel"]).sum() > 0  # zero-initialised, then trained


def test_cli_writes_features_matching_in_process(workdir, cifar10_data_dir, tmp_path):
    out = str(tmp_path / "features.npz")
    proc = subprocess.run([sys.executable, "-m", "jaxssl.tools.features", "--workdir", workdir, "--dataset", "cifar10",
                           "--split", "test", "--data_dir", cifar10_data_dir, "--output", out, "--batch_size", "128"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RuntimeWarning" not in proc.stderr
    with np.load(out) as npz:
        features, labels, step = npz["features"], npz["labels"], int(npz["step"])
    assert features.shape == (512, 32) and features.dtype == np.float32
    assert labels.shape == (512,) and step == 2
    assert np.all(np.isfinite(features)) and features.std() > 0

    # Reference, independent of jaxssl.evaluate: the fully restored TrainState (optimiser included),
    # the network rebuilt by hand, one plain jitted forward over the whole split in storage order.
    config = json.load(open(os.path.join(workdir, "config.json")))
    full = _full_state(workdir, 2)
    net = jaxssl.methods.get(config["method"], backbone=jaxssl.models.get(**config["model"]),
                             **config["method_kw"]).net
    variables = {"params": full["params"], **full["model_state"]}
    view = config["evals"]["knn"]["view"]
    forward = jax.jit(lambda v, x: net.apply(v, augment.apply(jax.random.key(0), x, view), train=False,
                                             method="features"))
    batches = list(jaxssl.data.make_eval_iter("cifar10", "test", data_dir=cifar10_data_dir, batch_size=512))
    images = np.concatenate([b["image"][b["mask"]] for b in batches])
    ref_labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    ref = np.asarray(forward(variables, images))
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(features, ref, rtol=1e-5, atol=1e-5)

    # The Python API on images in memory agrees too; only the weights are restored.
    loaded = restore.load(workdir)
    assert set(loaded.variables) == {"params", "batch_stats"} and loaded.step == 2
    with pytest.raises(ValueError, match="teacher"):
        restore.load(workdir, teacher=True)  # SimCLR has no EMA teacher
    feats = jaxssl.evaluate.features.of_images(loaded.variables, images[:40], model=loaded.model, view=loaded.view,
                                               batch_size=16)
    np.testing.assert_allclose(feats, ref[:40], rtol=1e-5, atol=1e-5)


def test_cli_errors_name_the_problem(tmp_path):
    from jaxssl.tools import features as features_tool
    assert features_tool.main(["--workdir", str(tmp_path), "--output", str(tmp_path / "f.npz")]) == 2
    with pytest.raises(FileNotFoundError, match="config.json"):
        restore.load(str(tmp_path))


def test_eval_cli_reports_knn_linear_and_collapse(workdir, cifar10_data_dir, tmp_path):
    from jaxssl.tools import eval as probe
    out = str(tmp_path / "eval.json")
    argv = ["--workdir", workdir, "--data_dir", cifar10_data_dir, "--output", out, "--epochs", "3",
            "--train_limit", "256", "--test_limit", "128", "--batch_size", "128"]
    assert probe.main(argv) == 0
    record = json.load(open(out))
    assert record["step"] == 2 and record["num_train"] == 256 and record["num_test"] == 128
    for key in ("knn_k20_t0.07_top1", "knn_k200_t0.1_top5", "linear_top1", "linear_top5", "rankme", "feature_std"):
        assert np.isfinite(record[key]), key
    # The same numbers from the library functions on the same frozen features.
    loaded = restore.load(workdir)
    ftr, ytr = restore.split_features(loaded, "train", data_dir=cifar10_data_dir, limit=256)
    fte, yte = restore.split_features(loaded, "test", data_dir=cifar10_data_dir, limit=128)
    knn = jaxssl.evaluate.knn.knn_protocols(ftr, ytr, fte, yte, protocols=((20, 0.07), (200, 0.1)))
    assert record["knn_k20_t0.07_top1"] == pytest.approx(knn["knn_k20_t0.07_top1"])
    lin = jaxssl.evaluate.linear_probe.linear_probe(ftr, ytr, fte, yte, epochs=3)
    assert record["linear_top1"] == pytest.approx(lin["top1"])
    assert 1.0 <= record["rankme"] <= 32.0  # 32-d features
    assert probe.main(["--workdir", workdir, "--evals", "knn,bogus", "--data_dir", cifar10_data_dir,
                       "--train_limit", "8", "--test_limit", "8"]) == 2


# ----------------------------------------------------------------------------------------------
# Issue 20, item 3: the tools read through the trainer's verification and fallback.
# ----------------------------------------------------------------------------------------------
def _damaged_copy(workdir, tmp_path, damage):
    import glob
    import shutil
    run = str(tmp_path / "run")
    shutil.copytree(workdir, run)
    step2 = os.path.join(run, "checkpoints", "2")
    if damage == "checksum":  # what a flipped byte looks like to the reader: a leaf that does not match
        path = os.path.join(step2, "meta", "metadata")
        meta = json.load(open(path))
        key = next(k for k in meta["checksums"] if k.startswith(".params"))
        meta["checksums"][key] = (meta["checksums"][key] + 1) % 2**32
        json.dump(meta, open(path, "w"))
    elif damage == "data_file":
        for f in glob.glob(os.path.join(step2, "state", "ocdbt.process_*", "d", "*")):
            os.remove(f)
    elif damage == "manifest":
        for f in glob.glob(os.path.join(step2, "state", "**", "manifest.ocdbt"), recursive=True):
            os.remove(f)
    else:
        import shutil as sh
        sh.rmtree(os.path.join(step2, "meta"))
    return run


@pytest.mark.parametrize("damage, says", [("checksum", "checksum mismatch in .params"), ("data_file", "step 2: "),
                                          ("manifest", "step 2: "), ("meta", "its meta/ item is missing")])
def test_tools_verify_checkpoints_and_fall_back(workdir, tmp_path, caplog, capsys, damage, says):
    import logging
    from jaxssl.tools import features as features_tool
    run = _damaged_copy(workdir, tmp_path, damage)
    with caplog.at_level(logging.WARNING, logger="jaxssl.train.checkpoint"):
        loaded = restore.load(run)  # the newest step is unusable: the next older one, with a warning
    assert loaded.step == 1
    assert "Checkpoint at step 2" in caplog.text and "falling back to step 1" in caplog.text
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["1", "2"]  # a reader moves nothing
    # Asked for that step explicitly: one line naming the step and the cause, exit code 2.
    assert features_tool.main(["--workdir", run, "--output", str(tmp_path / "f.npz"), "--step", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: None of the checkpoints [2]") and says in err, err


def test_export_cli_and_init_from_round_trip(workdir, cifar10_data_dir, tmp_path):
    """`python -m jaxssl.tools.export` writes the trained backbone; `config.init_from` loads it back exactly."""
    from jaxssl.models import pytorch_layout
    from jaxssl.tools import export
    from jaxssl.train.validate import validate_config
    from tests.test_main import _config

    out = str(tmp_path / "r18.safetensors")
    assert export.main(["--workdir", workdir, "--output", out, "--format", "torchvision"]) == 0
    card = json.load(open(out + ".json"))
    assert card["step"] == 2 and card["method"] == "simclr" and card["layout"] == "torchvision"
    assert card["input"]["mean"] and "width" in card["torch_model"]["error"]  # 1/16 width: no stock model
    tensors, metadata = pytorch_layout.load(out)
    assert metadata["layout"] == "torchvision" and tensors["conv1.weight"].shape == (4, 3, 3, 3)
    assert int(tensors["bn1.num_batches_tracked"]) == 2
    assert export.main(["--workdir", workdir, "--output", out, "--teacher"]) == 2  # SimCLR has no teacher

    full = _full_state(workdir, 2)
    config = _config(cifar10_data_dir, total_steps=2)
    config.evals.knn.enabled = False
    config.model.width = 0.0625
    config.init_from = out
    validate_config(config)
    state = loop._setup(config).state
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params["backbone"]),
                           full["params"]["backbone"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.model_state["batch_stats"]["backbone"]),
                           full["model_state"]["batch_stats"]["backbone"])
