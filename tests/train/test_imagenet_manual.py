"""imagenet2012 through TFDS's real builder and its manual_dir, offline: a miniature ILSVRC2012 archive
(tests/data/ilsvrc_mini.py) is prepared by the trainer and the DINO ViT-S/16 ImageNet recipe (shrunk to a
tiny ViT, its 2 x 224 + 8 x 96 multi-crop kept) trains 2 steps and runs kNN on the validation split."""
import os
import sys

import numpy as np
import pytest

from configs import dino_vits16_imagenet
from jaxssl.data import manual
from jaxssl.train import loop

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "data"))
import ilsvrc_mini  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_missing_archives_error_names_them_and_writes_nothing(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "ILSVRC2012_img_train.tar.part").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"ILSVRC2012_img_train.tar.*image-net.org.*manual_dir"):
        manual.prepare("imagenet2012", tmp_path / "tfds", tmp_path / "manual")
    assert not (tmp_path / "tfds" / "imagenet2012").exists()


def test_dino_vits16_imagenet_trains_from_a_miniature_ilsvrc2012(tmp_path):
    manual_dir = ilsvrc_mini.make(tmp_path / "manual", per_class=8, classes=2, val=8)
    config = dino_vits16_imagenet.get_config("runlocal")
    config.data.update(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir), worker_count=0)
    config.model.update(width=32, depth=2, num_heads=2)  # the recipe's ViT-S/16 is too slow for CI on CPU
    config.method_kw.update(out_dim=64, hidden_dim=64, bottleneck_dim=32)
    config.update(batch_size=16, total_steps=2, progress_bar=False, dtype="float32")
    config.evals.knn.update(train_examples=-1, test_examples=-1, batch_size=8, protocols=((5, 0.07),))
    results = loop.train(config, str(tmp_path / "run"))
    assert np.isfinite(results["loss"]) and 0.0 <= results["knn_k5_t0.07_top1"] <= 1.0
    prepared = tmp_path / "tfds" / "imagenet2012"
    assert prepared.is_dir()
    # A second run reuses the prepared data (nothing rebuilt, deleted or overwritten).
    before = {p: p.stat().st_mtime_ns for p in prepared.rglob("*") if p.is_file()}
    assert manual.prepare("imagenet2012", tmp_path / "tfds", manual_dir) == next(prepared.iterdir())
    assert {p: p.stat().st_mtime_ns for p in prepared.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", ["simclr_resnet50_imagenet", "byol_resnet50_imagenet", "mae_vitb16_imagenet",
                                  "dino_vits16_imagenet"])
def test_published_imagenet_recipes_build_and_step_on_host_cropped_views(name):
    """Each recipe as written: its model, optimiser and one train step on its host-cropped view sizes (abstractly)."""
    import importlib  # pylint: disable=g-import-not-at-top

    import jax  # pylint: disable=g-import-not-at-top

    from jaxssl import augment, methods  # pylint: disable=g-import-not-at-top
    from jaxssl.data import inputs  # pylint: disable=g-import-not-at-top
    from jaxssl.train import optim, step as step_lib, validate  # pylint: disable=g-import-not-at-top

    config = importlib.import_module(f"configs.{name}").get_config()
    validate.validate_config(config)
    assert config.data.name == "imagenet2012" and config.evals.knn.test_split == "validation"
    method = methods.build(config)
    tx, schedule = optim.make(config.optimizer, config.batch_size, config.total_steps)
    state = jax.eval_shape(lambda r: step_lib.init_state(method, tx, r, inputs.example(config)), jax.random.key(0))
    views = [dict(v) for v in config.input.views]
    batch = {"views": [jax.ShapeDtypeStruct((2, *augment.view_size(v), 3), np.uint8) for v in views]}
    step = step_lib.make_step_fn(method, tx, views, schedule)
    _, metrics = jax.eval_shape(step, state, batch, jax.random.key(0))
    assert metrics["loss"].shape == ()
