"""jaxssl backbones in PyTorch layouts: timm and torchvision state dicts, both directions.

    tensors, card = pytorch_layout.to_torch(model_cfg, backbone_variables, "timm")   # export
    variables, report = pytorch_layout.from_torch(model_cfg, tensors, template)       # import

`model_cfg` is a run's `config.model` ({"name": "resnet" | "vit" | "transformer", ...}); backbone
variables are the `backbone` subtrees of a method's variables ({"params": ..., "batch_stats": ...}),
which every method names `backbone` (`backbone_variables`). Files are `safetensors`
(`save` / `load`), readable by `safetensors.torch.load_file` and loadable with `strict=True`
into the model `torch_model(model_cfg, layout)` describes.

What maps to what (exactly: an export followed by an import gives back identical arrays):
* conv kernels HWIO -> OIHW; Dense kernels (in, out) -> Linear weights (out, in); LayerNorm and
  BatchNorm scale -> weight; BatchNorm batch_stats mean/var -> running_mean/running_var (plus
  `num_batches_tracked`, which PyTorch's strict loading wants; jaxssl has no counterpart).
* ResNet: `stem`/`stem_bn` -> conv1/bn1, `stage{i}_block{j}` -> `layer{i}.{j-1}`, `proj`/`proj_bn`
  -> `downsample.0/1`; timm's and torchvision's ResNets have the same keys. The blocks pad as
  PyTorch does (symmetric k//2), eps 1e-5 in both.
* ViT: the q/k/v Dense is one (D, 3D) kernel whose columns are [q | k | v] with heads
  contiguous, the packing of timm's `attn.qkv` and of torchvision's `in_proj_weight`, so it
  transposes as a whole. LayerNorm eps is 1e-6 in all three. jaxssl's CLS token has no position
  term and its position embedding covers the patches only; PyTorch's adds `pos_embed[:, 0]` to
  the CLS token, so the export writes a zero row there and the import folds that row into the
  CLS token (cls + pos[0], the sum PyTorch's forward computes).
* `transformer` (image modality; MAE/data2vec): timm's `VisionTransformer(class_token=False,
  global_pool="avg", fc_norm=False)` (LayerNorm, then the mean over tokens, as jaxssl).
* A learned mask token has no PyTorch counterpart: the export leaves it out (listed in
  `card["dropped"]`), the import keeps the template's fresh one (listed in `report["fresh"]`).
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping

import numpy as np
from flax import traverse_util

LAYOUTS = ("timm", "torchvision")
# File keys an import ignores: the classifier of a supervised checkpoint (timm `head`/`fc`,
# torchvision `fc`/`heads`), timm's identity-by-default `fc_norm`, and BN batch counters.
_IGNORED = re.compile(r"^(fc|head|heads|fc_norm)(\.|$)|\.num_batches_tracked$")

_CONV = "conv"    # HWIO <-> OIHW
_DENSE = "dense"  # (in, out) <-> (out, in)
_COPY = "copy"
_POS_CLS = "pos_cls"  # (1, g, g, D) <-> (1, 1 + g*g, D), row 0 the CLS token's (zero on export)
_POS = "pos"          # (1, g, g, D) <-> (1, g*g, D)


def _kind(model_cfg: Mapping[str, Any]) -> str:
    name = model_cfg.get("name")
    if name in ("resnet", "vit"):
        return name
    if name == "transformer" and model_cfg.get("modality", "image") == "image":
        return "transformer"
    raise ValueError(f"No PyTorch layout for the backbone {dict(model_cfg)}: timm/torchvision layouts exist for "
                     f"'resnet', 'vit' and the image 'transformer'.")


def _leaf(leaf: str, conv: bool) -> tuple[str, str]:
    if leaf == "kernel":
        return "weight", _CONV if conv else _DENSE
    return {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf], _COPY


def _resnet_key(path: tuple[str, ...], layout: str) -> tuple[str, str] | None:
    del layout  # timm's ResNet keeps torchvision's names
    names = []
    for m in path[1:-1]:
        block = re.fullmatch(r"stage(\d+)_block(\d+)", m)
        if block:
            names += [f"layer{block[1]}", str(int(block[2]) - 1)]
        else:
            names += {"stem": ["conv1"], "stem_bn": ["bn1"], "proj": ["downsample", "0"],
                      "proj_bn": ["downsample", "1"]}.get(m, [m])
    leaf, how = _leaf(path[-1], conv=True)
    return ".".join(names + [leaf]), how


_TIMM_VIT = {"patch_embed": "patch_embed.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
_TV_VIT = {"patch_embed": "conv_proj", "norm1": "ln_1", "norm2": "ln_2", "attn": "self_attention",
           "proj": "out_proj", "fc1": "mlp.0", "fc2": "mlp.3", "norm": "encoder.ln"}


def _vit_key(path: tuple[str, ...], layout: str) -> tuple[str, str] | None:
    mods, leaf = list(path[1:-1]), path[-1]
    if mods and mods[0] in ("embed", "body"):  # transformer.Model: embed/{patch,...}, body/{block*, norm}
        mods = ["patch_embed" if m == "patch" else m for m in mods[1:]]
    if not mods:  # top-level parameters
        if leaf == "cls_token":
            return ("cls_token" if layout == "timm" else "class_token"), _COPY
        if leaf == "pos_embedding":
            return ("pos_embed" if layout == "timm" else "encoder.pos_embedding"), _POS_CLS
        return None  # mask token(s): no PyTorch counterpart
    if layout == "timm":
        names = [f"blocks.{m[5:]}" if re.fullmatch(r"block\d+", m) else _TIMM_VIT.get(m, m) for m in mods]
    else:
        names = [f"encoder.layers.encoder_layer_{m[5:]}" if re.fullmatch(r"block\d+", m) else _TV_VIT.get(m, m)
                 for m in mods]
        if mods[-2:] == ["attn", "qkv"]:  # nn.MultiheadAttention's packed input projection
            return ".".join(names[:-1] + [f"in_proj_{'weight' if leaf == 'kernel' else 'bias'}"]), \
                (_DENSE if leaf == "kernel" else _COPY)
    name, how = _leaf(leaf, conv=mods[-1] == "patch_embed")
    return ".".join(names + [name]), how


def _entries(kind: str, layout: str, variables: Mapping) -> list[tuple[tuple[str, ...], str | None, str | None]]:
    """[(jaxssl path (collection, ..., leaf), torch key or None, transform)] for every leaf of `variables`."""
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; choose one of {LAYOUTS}.")
    if kind == "transformer" and layout == "torchvision":
        raise ValueError("torchvision's VisionTransformer always has a CLS token; export the image 'transformer' "
                         "(mean-pooled, no CLS) with layout 'timm'.")
    key_fn = _resnet_key if kind == "resnet" else _vit_key
    out = []
    for path in traverse_util.flatten_dict({k: v for k, v in variables.items() if k != "intermediates"}):
        entry = key_fn(path, layout)
        key, how = entry if entry else (None, None)
        if how == _POS_CLS and kind == "transformer":
            how = _POS
        out.append((path, key, how))
    return out


def backbone_variables(variables: Mapping) -> dict:
    """The `backbone` subtree of every collection of a method's variables ({"params": {"backbone": ...}})."""
    out = {col: tree["backbone"] for col, tree in variables.items() if isinstance(tree, Mapping) and "backbone" in tree}
    if "params" not in out:
        raise ValueError(f"No 'backbone' in the method's params (top-level names: {sorted(variables.get('params', {}))}).")
    return out


def to_torch(model_cfg: Mapping[str, Any], variables: Mapping, layout: str = "timm", *,
             num_batches_tracked: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """A backbone's variables as a PyTorch state dict of numpy arrays.

    Args:
      model_cfg: the run's `config.model`.
      variables: backbone variables {"params": ..., "batch_stats": ...} (`backbone_variables`).
      layout: "timm" or "torchvision".
      num_batches_tracked: the value of every BatchNorm's `num_batches_tracked` (int64 scalar).

    Returns:
      (tensors {key: float32 array, BN counters int64}, {"dropped": [jaxssl paths without a
      counterpart]}).
    """
    kind = _kind(model_cfg)
    tensors, dropped = {}, []
    for path, key, how in _entries(kind, layout, variables):
        x = np.asarray(_get(variables, path))
        if key is None:
            dropped.append("/".join(path))
            continue
        x = x.astype(np.float32)
        if how == _CONV:
            x = np.transpose(x, (3, 2, 0, 1))
        elif how == _DENSE:
            x = x.T
        elif how in (_POS, _POS_CLS):
            x = x.reshape(1, -1, x.shape[-1])
            if how == _POS_CLS:
                x = np.concatenate([np.zeros_like(x[:, :1]), x], axis=1)
        tensors[key] = np.ascontiguousarray(x)
        if path[-1] == "mean":
            tensors[key[:-len("running_mean")] + "num_batches_tracked"] = np.array(num_batches_tracked, np.int64)
    return tensors, {"dropped": dropped}


def _get(tree: Mapping, path: tuple[str, ...]):
    for p in path:
        tree = tree[p]
    return tree


def detect_layout(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> str:
    """"timm" or "torchvision" from a file's metadata (jaxssl's exports name it) or its keys."""
    if metadata and metadata.get("layout") in LAYOUTS:
        return metadata["layout"]
    if "patch_embed.proj.weight" in tensors or "conv1.weight" in tensors:
        return "timm"  # a ResNet's keys are the same in both
    if "conv_proj.weight" in tensors:
        return "torchvision"
    raise ValueError(f"Cannot tell the layout of a state dict with keys {sorted(tensors)[:8]}...: expected a timm "
                     f"or torchvision ResNet/ViT; name it (init_from='timm:PATH' or 'torchvision:PATH').")


def from_torch(model_cfg: Mapping[str, Any], tensors: Mapping[str, Any], template: Mapping,
               layout: str | None = None) -> tuple[dict, dict]:
    """A PyTorch state dict as backbone variables shaped like `template`.

    Args:
      model_cfg: the jaxssl backbone's `config.model`.
      tensors: {key: array} (numpy, or anything `np.asarray` takes).
      template: freshly initialised backbone variables; their leaves without a PyTorch counterpart
        (a mask token) are kept.
      layout: "timm", "torchvision" or None (detected).

    Returns:
      (variables, report): report = {"layout", "fresh": [jaxssl paths kept from the template],
      "ignored": [file keys not used: classifier heads, BN counters]}.

    Raises:
      ValueError listing the first differences when a key is missing, has another shape, or the
      file holds parameters the backbone has no place for.
    """
    kind = _kind(model_cfg)
    layout = layout or detect_layout(tensors)
    entries = _entries(kind, layout, template)
    flat = traverse_util.flatten_dict(dict(template))
    tensors = {k: np.asarray(v) for k, v in tensors.items()}
    pos_key = {"timm": "pos_embed", "torchvision": "encoder.pos_embedding"}[layout]
    shape_errors, missing, out, fresh, used = [], [], {}, [], set()
    for path, key, how in sorted(entries, key=lambda e: e[0][0] != "params"):  # params' differences first
        like = flat[path]
        if key is None:
            out[path], _ = like, fresh.append("/".join(path))
            continue
        if key not in tensors:
            missing.append(f"missing {key} (for {'/'.join(path)} {tuple(like.shape)})")
            continue
        used.add(key)
        t = tensors[key]
        if how == _CONV and t.ndim == 4:
            t = np.transpose(t, (2, 3, 1, 0))
        elif how == _DENSE and t.ndim == 2:
            t = t.T
        elif how in (_POS, _POS_CLS) and t.ndim == 3:
            t = t[:, 1:] if how == _POS_CLS else t
            if t.size == np.prod(like.shape):
                t = t.reshape(like.shape)
        elif path[-1] == "cls_token" and pos_key in tensors and tensors[pos_key].shape[-1:] == t.shape[-1:]:
            # PyTorch adds pos_embed[:, 0] to the CLS token; jaxssl's CLS token has no position term.
            t = t + tensors[pos_key][:, :1]
        if tuple(t.shape) != tuple(like.shape):
            shape_errors.append(f"{key}: file {tuple(tensors[key].shape)} -> {tuple(t.shape)}, backbone "
                            f"{'/'.join(path)} {tuple(like.shape)}")
            continue
        out[path] = t.astype(like.dtype)
    unknown = sorted(k for k in tensors if k not in used and not _IGNORED.search(k))
    problems = shape_errors + missing + [f"unexpected {k} {tuple(tensors[k].shape)}" for k in unknown]
    if problems:
        raise ValueError(f"The {layout} state dict does not fit the {kind} backbone {dict(model_cfg)}: "
                         f"{len(problems)} difference(s), the first: " + "; ".join(problems[:8]))
    ignored = sorted(k for k in tensors if k not in used)
    return traverse_util.unflatten_dict(out), {"layout": layout, "fresh": fresh, "ignored": ignored}


def torch_model(model_cfg: Mapping[str, Any], layout: str = "timm") -> dict:
    """How to build the PyTorch model a file of this backbone loads into with `strict=True`.

    Returns {"library", "model_name", "kwargs", "code"}: `code` is the Python that creates it
    (`timm.create_model(model_name, num_classes=0, **kwargs)` or a torchvision constructor, plus
    the stem change of the CIFAR ResNet), so the model card can quote it.
    """
    kind = _kind(model_cfg)
    if kind == "resnet":
        variant = str(model_cfg.get("variant", "18"))
        base = max(1, int(round(64 * float(model_cfg.get("width", 1.0)))))
        name = f"resnet{variant}"
        stem = ""
        if model_cfg.get("cifar_stem"):
            # No timm/torchvision option gives a 3x3/1 stem without max-pool; this is the usual swap (solo-learn).
            stem = (f"\nmodel.conv1 = torch.nn.Conv2d(3, {base}, 3, 1, 1, bias=False)"
                    "\nmodel.maxpool = torch.nn.Identity()")
        if base != 64:
            # timm's plain stem is 64 wide whatever its `stem_width`, torchvision has no width multiplier.
            raise ValueError(f"No timm/torchvision ResNet has width={model_cfg.get('width')} (their first stage "
                             f"is 64 channels wide); export a width-1.0 ResNet.")
        if layout == "timm":
            code = f"model = timm.create_model({name!r}, pretrained=False, num_classes=0)" + stem
        else:
            code = f"model = torchvision.models.{name}()\nmodel.fc = torch.nn.Identity()" + stem
        kwargs = {}
        return {"library": layout, "model_name": name, "kwargs": kwargs, "code": code}
    from jaxssl.models import vit  # pylint: disable=g-import-not-at-top
    if kind == "vit":
        width, depth, heads, patch = vit.Model(**{k: v for k, v in model_cfg.items() if k in _VIT_FIELDS}).dims()
    else:
        width, depth, heads, patch = (model_cfg.get("width", 768), model_cfg.get("depth", 12),
                                      model_cfg.get("num_heads", 12), model_cfg.get("patch_size", 16))
    img = int(model_cfg.get("img_size", 224))
    mlp_ratio = float(model_cfg.get("mlp_ratio", 4.0))
    size = {192: "tiny", 384: "small", 768: "base", 1024: "large"}.get(width, "small")
    name = f"vit_{size}_patch16_224"
    if layout == "timm":
        kwargs = dict(img_size=img, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads,
                      mlp_ratio=mlp_ratio)
        if kind == "transformer":
            kwargs.update(class_token=False, global_pool="avg", fc_norm=False)
        code = f"model = timm.create_model({name!r}, pretrained=False, num_classes=0, **{kwargs!r})"
        return {"library": "timm", "model_name": name, "kwargs": kwargs, "code": code}
    kwargs = dict(image_size=img, patch_size=patch, num_layers=depth, num_heads=heads, hidden_dim=width,
                  mlp_dim=int(width * mlp_ratio))
    code = (f"model = torchvision.models.VisionTransformer(**{kwargs!r})\nmodel.heads = torch.nn.Identity()")
    return {"library": "torchvision", "model_name": "VisionTransformer", "kwargs": kwargs, "code": code}


_VIT_FIELDS = ("variant", "patch_size", "width", "depth", "num_heads", "mlp_ratio", "img_size")


# ----------------------------------------------------------------------------------------------
# Files: safetensors (what timm and Hugging Face read) with the layout in its metadata.
# ----------------------------------------------------------------------------------------------
def save(path: str, tensors: Mapping[str, np.ndarray], *, layout: str, model_cfg: Mapping[str, Any]) -> None:
    """Write `tensors` as safetensors; metadata {"format": "pt", "layout", "jaxssl_model": json}."""
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file(dict(tensors), path, metadata={"format": "pt", "layout": layout,
                                             "jaxssl_model": json.dumps(dict(model_cfg), default=str)})


def load(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with safe_open(path, framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def parse_init_from(spec: str) -> tuple[str | None, str]:
    """"timm:PATH" / "torchvision:PATH" -> (layout, PATH); a bare PATH -> (None, PATH) (detected)."""
    head, sep, rest = spec.partition(":")
    return (head, rest) if sep and head in LAYOUTS else (None, spec)


def load_backbone(variables: Mapping, spec: str, model_cfg: Mapping[str, Any],
                  log: Callable[[str], None] = print) -> dict:
    """`variables` (a method's, {"params": {"backbone": ..., heads...}, ...}) with the backbone from file `spec`.

    Everything outside the backbone (projectors, heads, prototypes) stays as initialised; `log`
    is told which parts are fresh and which file keys were ignored.
    """
    layout, path = parse_init_from(spec)
    tensors, metadata = load(path)
    layout = layout or detect_layout(tensors, metadata)
    template = backbone_variables(variables)
    new, report = from_torch(model_cfg, tensors, template, layout)
    out = {col: dict(tree) for col, tree in variables.items()}
    for col, tree in new.items():
        out[col]["backbone"] = tree
    heads = sorted(f"{col}/{k}" for col, tree in variables.items() if isinstance(tree, Mapping)
                   for k in tree if k != "backbone")
    log(f"init_from {path} ({layout} layout): loaded the backbone; initialised fresh: "
        f"{heads + report['fresh'] or 'nothing'}; ignored file keys: {report['ignored'] or 'none'}.")
    return out


def init_train_state(state, spec: str, model_cfg: Mapping[str, Any], log: Callable[[str], None] = print):
    """A fresh `TrainState` whose student (and EMA teacher, a copy of it) starts from the backbone in `spec`."""
    variables = load_backbone({"params": state.params, **state.model_state}, spec, model_cfg, log)
    teacher = state.teacher
    if teacher is not None:  # the teacher starts as a copy of the student, in buffers of its own
        teacher = {col: dict(tree) for col, tree in teacher.items()}
        for col, tree in variables.items():
            if col in teacher and "backbone" in tree:
                teacher[col]["backbone"] = _copy_tree(tree["backbone"])
    params = variables.pop("params")
    return state.replace(params=params, model_state=variables, teacher=teacher)


def _copy_tree(tree):
    return traverse_util.unflatten_dict({k: np.array(v) for k, v in traverse_util.flatten_dict(dict(tree)).items()})
