"""The trainer on encoded images of many sizes: Imagenette JPEGs (exact resume, kNN on the held-out split)
and an image folder (DINO multi-crop), through the configs' `:runlocal` sizes."""
import json
import os
import tarfile

import jax
import numpy as np
import orbax.checkpoint as ocp

from configs import dino_imagenette, simclr_imagenette
from jaxssl.data import prepare
from jaxssl.train import loop


def _simclr(data_dir, total_steps, knn):
    config = simclr_imagenette.get_config("runlocal")
    config.data.data_dir = data_dir
    config.data.prepare_offline = False  # the fixture prepared a (marked) subset there
    config.progress_bar = False
    config.model.width = 0.125
    config.total_steps = total_steps
    config.evals.knn.enabled = knn
    return config


def _params(workdir, step):
    restored = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
    return restored["params"], restored["opt_state"]


def test_imagenette_resume_is_bit_identical_and_knn_runs(imagenette_data_dir, tmp_path):
    """4 steps in one go == 2 steps, stop, rerun to 4 (host crops included); kNN of holdout vs train at the end."""
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    loop.train(_simclr(imagenette_data_dir, 4, knn=False), straight)
    loop.train(_simclr(imagenette_data_dir, 2, knn=False), split)
    results = loop.train(_simclr(imagenette_data_dir, 4, knn=True), split)
    for x, y in zip(jax.tree_util.tree_leaves(_params(straight, 4)), jax.tree_util.tree_leaves(_params(split, 4))):
        np.testing.assert_array_equal(x, y)
    assert [json.loads(l)["step"] for l in open(os.path.join(split, "metrics.jsonl")) if "loss" in l] == [2, 4]
    assert 0.0 <= results["knn_k20_t0.07_top1"] <= 1.0


def test_dino_multicrop_trains_on_an_image_folder(tmp_path):
    """`folder:/path` labelled by sub-folder (Imagenette JPEGs by wnid), DINO's 2 global + 2 local crops, kNN."""
    root = tmp_path / "photos"
    with tarfile.open(prepare.find_source_dir() / "imagenette2-112_train.tar") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        for m in members[:12] + members[-12:]:  # two classes
            out = root / m.name.split("/")[2] / m.name.rsplit("/", 1)[1]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(m).read())
    config = dino_imagenette.get_config("runlocal")
    config.data.name = f"folder:{root}"
    config.progress_bar = False
    config.total_steps = 2
    config.evals.knn.update(test_split="train", num_classes=2, train_examples=-1, test_examples=-1,
                            protocols=((5, 0.07),), batch_size=8)
    results = loop.train(config, str(tmp_path / "run"))
    assert np.isfinite(results["loss"]) and 0.0 <= results["knn_k5_t0.07_top1"] <= 1.0
