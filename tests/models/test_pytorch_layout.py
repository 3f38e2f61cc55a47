"""jaxssl backbones <-> timm/torchvision state dicts (jaxssl.models.pytorch_layout), without torch.

* The names and shapes of every export equal those of the real PyTorch models, stored in
  torch_layouts.json by benchmarks/torch_layout_fixtures.py (run in the torch venv).
* Export -> safetensors file -> import gives back identical arrays, for every backbone and layout.
* Wrong files fail with the first differences; classifier heads in a file are ignored and said so.
The forward passes in timm/torchvision are compared in benchmarks/torch_layout_check.py.
"""
import json
import os

import jax
import numpy as np
import optax
import pytest
from flax import traverse_util

from jaxssl import models
from jaxssl.models import pytorch_layout

FIXTURE = json.load(open(os.path.join(os.path.dirname(__file__), "torch_layouts.json")))


def _shapes(cfg, size):
    """The backbone's variables as ShapeDtypeStructs (no compute)."""
    cfg = dict(cfg)
    model = models.get(cfg.pop("name"), **cfg)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, size, size, 3), np.float32),
                                             train=True))


def _random(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


@pytest.mark.parametrize("case", sorted(FIXTURE["cases"]))
def test_export_header_matches_the_pytorch_model(case):
    entry = FIXTURE["cases"][case]
    cfg = entry["model"]
    size = cfg.get("img_size", 224 if not cfg.get("cifar_stem") else 32)
    # Zero-stride views: a ResNet-50's export header costs no memory.
    zeros = jax.tree_util.tree_map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), _shapes(cfg, size))
    tensors, _ = pytorch_layout.to_torch(cfg, zeros, entry["layout"])
    got = {k: list(v.shape) for k, v in tensors.items()}
    assert sorted(got) == sorted(entry["shapes"]), (sorted(set(got) ^ set(entry["shapes"]))[:10])
    assert got == entry["shapes"]


ROUND_TRIP = [
    (dict(name="resnet", variant="18", width=0.25, cifar_stem=True), 32, ("timm", "torchvision")),
    (dict(name="resnet", variant="50", width=0.125), 64, ("timm", "torchvision")),
    (dict(name="vit", variant="S/8", width=32, depth=2, num_heads=2, img_size=32, mask_token=True), 32,
     ("timm", "torchvision")),
    (dict(name="transformer", modality="image", width=32, depth=2, num_heads=2, patch_size=8, img_size=32), 32,
     ("timm",)),
]


@pytest.mark.parametrize("cfg,size,layouts", ROUND_TRIP, ids=lambda x: str(x.get("name")) if isinstance(x, dict) else "")
def test_export_then_import_gives_identical_arrays(cfg, size, layouts, tmp_path):
    shapes = _shapes(cfg, size)
    variables = _random(shapes)
    template = _random(shapes, seed=1)
    for layout in layouts:
        tensors, info = pytorch_layout.to_torch(cfg, variables, layout, num_batches_tracked=7)
        path = str(tmp_path / f"{layout}.safetensors")
        pytorch_layout.save(path, tensors, layout=layout, model_cfg=cfg)
        loaded, metadata = pytorch_layout.load(path)
        assert pytorch_layout.detect_layout(loaded, metadata) == layout
        assert all(v.dtype == np.float32 for k, v in loaded.items() if not k.endswith("num_batches_tracked"))
        back, report = pytorch_layout.from_torch(cfg, loaded, template)
        flat, want, fresh = (traverse_util.flatten_dict(t) for t in (back, variables, template))
        assert flat.keys() == want.keys()
        kept = {tuple(p.split("/")) for p in report["fresh"]}
        assert kept == {tuple(p.split("/")) for p in info["dropped"]}
        assert all("mask" in p[-1] for p in kept)  # only mask tokens lack a PyTorch counterpart
        for path_ in flat:
            expect = fresh[path_] if path_ in kept else want[path_]
            np.testing.assert_array_equal(flat[path_], expect, err_msg="/".join(path_))


def test_vit_import_folds_the_cls_position_into_the_cls_token():
    cfg = dict(name="vit", variant="S/8", width=32, depth=1, num_heads=2, img_size=16)
    variables = _random(_shapes(cfg, 16))
    tensors, _ = pytorch_layout.to_torch(cfg, variables, "timm")
    assert not tensors["pos_embed"][:, 0].any()  # jaxssl's CLS token has no position term
    tensors["pos_embed"][:, 0] = 0.5
    back, _ = pytorch_layout.from_torch(cfg, tensors, variables)
    np.testing.assert_allclose(back["params"]["cls_token"], variables["params"]["cls_token"] + 0.5, rtol=1e-6)


def test_wrong_file_lists_the_first_differences_and_heads_are_ignored():
    r18 = dict(name="resnet", variant="18", width=0.125)
    r50 = dict(name="resnet", variant="50", width=0.125)
    tensors, _ = pytorch_layout.to_torch(r18, _random(_shapes(r18, 32)), "timm")
    with pytest.raises(ValueError, match=r"difference\(s\), the first: layer1\.0\.conv1\.weight: file \(8, 8, 3, 3\)"):
        pytorch_layout.from_torch(r50, tensors, _shapes(r50, 32))
    tensors["fc.weight"] = np.zeros((1000, 64), np.float32)  # a supervised checkpoint's classifier
    _, report = pytorch_layout.from_torch(r18, tensors, _shapes(r18, 32))
    assert "fc.weight" in report["ignored"]
    tensors["extra.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(ValueError, match="unexpected extra.weight"):
        pytorch_layout.from_torch(r18, tensors, _shapes(r18, 32))
    with pytest.raises(ValueError, match="Cannot tell the layout"):
        pytorch_layout.detect_layout({"foo": np.zeros(1)})
    assert pytorch_layout.parse_init_from("torchvision:/a/b.safetensors") == ("torchvision", "/a/b.safetensors")
    assert pytorch_layout.parse_init_from("/a/b:c.safetensors") == (None, "/a/b:c.safetensors")


def test_init_train_state_loads_student_and_teacher_backbones_and_keeps_heads(tmp_path):
    """What `--config.init_from` does in the trainer (jaxssl/train/loop.py `_setup`)."""
    from jaxssl import methods
    from jaxssl.models import heads
    from jaxssl.train import step as step_lib

    cfg = dict(name="resnet", variant="18", width=0.125, cifar_stem=True)
    backbone = models.get("resnet", variant="18", width=0.125, cifar_stem=True)
    net = heads.BackboneWithHeads(backbone, projector=heads.MLP((16,), 8))
    method = methods.Method(net, loss_fn=None, teacher_momentum=lambda s: 0.99)
    state = step_lib.init_state(method, optax.sgd(0.1), jax.random.key(0), np.zeros((2, 32, 32, 3), np.float32))
    weights = _random(pytorch_layout.backbone_variables({"params": state.params, **state.model_state}), seed=3)
    tensors, _ = pytorch_layout.to_torch(cfg, weights, "torchvision")
    path = str(tmp_path / "r18.safetensors")
    pytorch_layout.save(path, tensors, layout="torchvision", model_cfg=cfg)
    messages = []
    new = pytorch_layout.init_train_state(state, path, cfg, messages.append)
    for tree in (new.params["backbone"], new.teacher["params"]["backbone"]):
        jax.tree_util.tree_map(np.testing.assert_array_equal, tree, weights["params"])
    for tree in (new.model_state["batch_stats"]["backbone"], new.teacher["batch_stats"]["backbone"]):
        jax.tree_util.tree_map(np.testing.assert_array_equal, tree, weights["batch_stats"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, new.params["projector"], state.params["projector"])
    assert new.teacher["params"]["backbone"]["stem"]["kernel"] is not new.params["backbone"]["stem"]["kernel"]
    assert "params/projector" in messages[0] and "torchvision layout" in messages[0]
