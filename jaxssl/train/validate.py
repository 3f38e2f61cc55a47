"""Config checks: every bad value is reported with its key and the fix, before anything compiles.

`validate_config(config)` raises ValueError (unknown keys, values out of range, unknown names) or
TypeError (a value of the wrong type), each naming `config.<key>`. The schema comes from the code
where it can: a method's keywords and their types from its `make` signature, a model's from its
`Model` fields, a view's from `augment.DEFAULT_VIEW` and `augment.VIEW_TYPES`, the optimiser's
from the tables `jaxssl.train.optim.make` reads (`optim.KEYS`, `optim.OPTIMIZER_KEYS`), the
top-level, `data` and `mesh` keys from `jaxssl.defaults`, the evaluators' from their `Evaluator`
keyword arguments (`jaxssl.evaluate.common.options`). Ranges come from hyperparameter
names (`_RANGES`: a temperature must be > 0 wherever it appears, a mask ratio in (0, 1), a
probability in [0, 1], ...).
"""
from __future__ import annotations

import importlib
import inspect
import math

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl import augment, methods, models
from jaxssl import defaults
from jaxssl.data import inputs
from jaxssl.data import resize as resizing
from jaxssl.evaluate import common as eval_common
from jaxssl.evaluate.linear_probe import online_probe
from jaxssl.models import transformer
from jaxssl.train import optim

# Top-level keys (meanings and defaults: jaxssl/defaults.py).
REQUIRED_KEYS = defaults.required(defaults.TOP_LEVEL)
OPTIONAL_KEYS = defaults.optional(defaults.TOP_LEVEL)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Allowed values by hyperparameter name, wherever the name appears in the config (the whole key or
# its last "_" part; first match wins): (low, high, low allowed, high allowed).
_RANGES = (
    (("mask_ratio",), (0.0, 1.0, False, False)),
    (("crop_scale",), (0.0, 1.0, False, True)),
    (("p", "prob", "momentum", "b1", "b2", "end_lr_factor"), (0.0, 1.0, True, True)),
    (("hue",), (-0.5, 0.5, True, True)),
    (("temperature", "temp", "tau", "lr", "std", "ratio", "dim", "hidden", "width", "size", "trust_coefficient"),
     (0.0, math.inf, False, False)),
    (("weight_decay", "weight_decay_end", "grad_clip", "steps", "count", "brightness", "contrast", "saturation"),
     (0.0, math.inf, True, False)),
)


def lookup(config, dotted: str):
    """`config["a"]["b"]` for "a.b", or None where a key is missing."""
    for part in dotted.split("."):
        if config is None or part not in config:
            return None
        config = config[part]
    return config


# A value of each type, to judge values by where a table's default is None or REQUIRED.
_EXAMPLES = {"int": 0, "float": 0.0, "str": "", "bool": False, "dict": {}}


def _example(default, annotation: str):
    """`default`, or where it is None/REQUIRED a value of the first type in `annotation`
    ("tuple[float, float, float] | None" -> (0.0, 0.0, 0.0)), so that `_expect` can judge by it."""
    if default is not None and default is not defaults.REQUIRED:
        return default
    first = annotation.split("|")[0].strip()
    if first.startswith("tuple[") and first.endswith("]"):
        return tuple(_EXAMPLES[t.strip()] for t in first[len("tuple["):-1].split(","))
    return _EXAMPLES.get(first, default)


def _spec(table) -> dict:
    """{key: (example, annotation)} for `_check_kwargs` from a {key: (default, annotation)} table."""
    return {k: (_example(d, a), a) for k, (d, a) in table.items()}


def _leaves(obj, key: str = ""):
    """(key, value) of every leaf: mappings and sequences of mappings are expanded ("input.views[0].flip_p")."""
    if hasattr(obj, "items") and hasattr(obj, "keys"):
        for k, v in obj.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(obj, (tuple, list)) and any(hasattr(v, "keys") for v in obj):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, obj


def _check_value(key: str, value, ranges: dict | None = None) -> None:
    """Every float finite; ranges and ordered pairs where the key's name says what it holds.

    The range is `ranges[key]` when given (a method's own `KEY_RANGES`, keyed "method_kw.<arg>"),
    else the first rule of `_RANGES` that the name matches.
    """
    xs = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if any(isinstance(x, float) and not math.isfinite(x) for x in xs):
        raise ValueError(f"config.{key} = {value!r} is not finite.")
    name = key.rsplit(".", 1)[-1]
    rule = (ranges or {}).get(key) or next(
        (r for names, r in _RANGES if any(name == n or name.endswith("_" + n) for n in names)), None)
    if rule is None or value is None:
        return
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
        raise TypeError(f"config.{key} must be a number (or a tuple of numbers), got {value!r}.")
    lo, hi, lo_ok, hi_ok = rule
    if not all((lo < x or (lo_ok and x == lo)) and (x < hi or (hi_ok and x == hi)) for x in xs):
        raise ValueError(f"config.{key} = {value!r} is out of range: each value must be in "
                         f"{'[' if lo_ok else '('}{lo:g}, {hi:g}{']' if hi_ok else ')'}.")
    ordered = ("scale", "ratio", "brightness", "contrast", "saturation", "hue")
    if name.endswith(ordered) and len(xs) == 2 and xs[0] > xs[1]:
        raise ValueError(f"config.{key} = {value!r} must be an ordered (low, high) pair.")


def _expect(value, default, note: str, fixed_len: bool) -> str | None:
    """What `value` should be, judged by the default and annotation of its slot; None if it fits."""
    is_num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
    seq = isinstance(value, (tuple, list))
    if value is None:
        return None if default is None or "None" in note or "Optional" in note else "not None"
    if default is inspect.Parameter.empty or default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "a bool"
    if isinstance(default, (int, float)):
        integer = isinstance(default, int) and "float" not in note
        if seq and "tuple" in note:  # e.g. a (low, high) jitter range or an (h, w) crop size
            ok = len(value) == 2 and all(is_num(x) and (isinstance(x, int) or not integer) for x in value)
            return None if ok else f"{'an int' if integer else 'a number'} or a pair of them"
        if integer:
            return None if is_num(value) and isinstance(value, int) else "an int"
        return None if is_num(value) else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, (tuple, list)):
        if not seq:
            return "a tuple"
        if default and all(is_num(x) for x in default):
            integer = all(isinstance(x, int) for x in default)
            if not all(is_num(x) and (isinstance(x, int) or not integer) for x in value):
                return f"a tuple of {'ints' if integer else 'numbers'}"
            if fixed_len and len(value) != len(default):
                return f"a tuple of {len(default)} numbers"
    return None


def _check_kwargs(where: str, given, spec: dict, what: str, required=(), fixed_len: bool = False) -> None:
    """`given` (config.<where>) against `spec` {name: (default, annotation)}: known keys, fitting types."""
    if not hasattr(given, "keys"):
        raise TypeError(f"config.{where} must be a dict, got {given!r}.")
    unknown = sorted(set(given.keys()) - set(spec))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in config.{where} for {what}; valid keys: {sorted(spec)}.")
    missing = sorted(set(required) - set(given.keys()))
    if missing:
        raise ValueError(f"config.{where} lacks the required key(s) {missing} of {what}.")
    for k, value in given.items():
        want = _expect(value, *spec[k], fixed_len)
        if want:
            like = "" if spec[k][0] is inspect.Parameter.empty else f" (like {spec[k][0]!r})"
            raise TypeError(f"config.{where}.{k} must be {want}{like}, got {value!r} ({type(value).__name__}).")


def _check_optimizer(config) -> None:
    """Keys that no optimiser reads are typos; types as in `optim.KEYS`/`optim.OPTIMIZER_KEYS`; then
    `optim.make` itself judges the values (a learning-rate rule, a clipping mode, ...)."""
    opt = config.optimizer.to_dict() if hasattr(config.optimizer, "to_dict") else dict(config.optimizer)
    if opt.get("name") not in optim.OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {opt.get('name')!r} (config.optimizer.name); choose one of "
                         f"{', '.join(optim.OPTIMIZERS)}.")
    keys = optim.all_keys()  # a config may switch `name` and keep the other optimisers' keys
    _check_kwargs("optimizer", opt, _spec(keys), "jaxssl.train.optim", defaults.required(keys))
    try:
        optim.make(config.optimizer, config.batch_size, max(config.total_steps, 1))
    except Exception as e:  # noqa: BLE001  (reported with the key it names)
        msg = str(e)
        raise ValueError(f"config.{msg}" if msg.startswith("optimizer.") else f"config.optimizer: {msg}") from e


def _check_evals(config, view_spec: dict) -> None:
    """Every `config.evals` block against its evaluator's keyword options (`jaxssl.evaluate.common`)."""
    if not hasattr(config.evals, "keys"):
        raise TypeError(f"config.evals must be a dict of evaluator blocks, got {config.evals!r}.")
    for name, block in config.evals.items():
        if not hasattr(block, "keys"):
            raise TypeError(f"config.evals.{name} must be a dict, got {block!r}.")
        if name in eval_common.IN_STEP:
            params = inspect.signature(online_probe).parameters
            spec = {"enabled": (True, "bool"), **{k: (p.default, p.annotation) for k, p in params.items()}}
            _check_kwargs(f"evals.{name}", block, spec, "the online linear probe",
                          [k for k, (d, _) in spec.items() if d is inspect.Parameter.empty])
            continue
        type_ = block.get("type") or name
        try:
            options = eval_common.options(type_)
        except ValueError as e:
            raise ValueError(f"config.evals.{name}: {e} Set config.evals.{name}.type to one of them.") from None
        spec = {**{k: (v, type(v).__name__) for k, v in eval_common.SHARED_KEYS.items()},
                **{k: (p.default, p.annotation) for k, p in options.items()}}
        _check_kwargs(f"evals.{name}", block, spec, f"the {type_!r} evaluator")
        if block.get("view"):
            _check_kwargs(f"evals.{name}.view", block.view, view_spec, "augment.apply", fixed_len=True)
        protocols = block.get("protocols", ((1, 1.0),))
        if not isinstance(protocols, (tuple, list)) or not protocols or not all(
                isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], int) and p[0] >= 1
                and isinstance(p[1], (int, float)) and p[1] > 0 for p in protocols):
            raise ValueError(f"config.evals.{name}.protocols must be (k, T) pairs with k >= 1 and T > 0, "
                             f"got {protocols!r}.")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError/TypeError naming the key for anything wrong in `config`; compiles nothing."""
    unknown = sorted(set(config.keys()) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ValueError(f"Unknown config key(s) {unknown}; known keys: {sorted(REQUIRED_KEYS + OPTIONAL_KEYS)} "
                         f"(a new top-level key must be added to TOP_LEVEL in jaxssl/defaults.py).")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"Config is missing key(s) {missing}; start from a file in configs/ "
                         f"(e.g. configs/simclr_cifar10.py).")
    for key, low in (("batch_size", 1), ("total_steps", 0), ("log_steps", 1), ("ckpt_steps", 1), ("keep_ckpts", 1),
                     ("seed", None), ("nonfinite_patience", 1), ("accum_steps", 1)):
        value = defaults.get(config, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"config.{key} must be an int, got {value!r} ({type(value).__name__}).")
        if low is not None and value < low:
            raise ValueError(f"config.{key} must be >= {low}, got {value}.")
    for key, choices in (("dtype", tuple(DTYPES)), ("nonfinite", ("raise", "skip")), ("progress_bar", (True, False)),
                         ("remat", tuple(transformer.REMAT_POLICIES))):
        if key in config and not any(config[key] is c or (isinstance(c, str) and config[key] == c) for c in choices):
            raise ValueError(f"config.{key} must be one of {list(choices)}, got {config[key]!r}.")
    for key in ("method_kw", "model", "data", "input", "optimizer", "evals"):
        if not hasattr(config[key], "keys"):
            raise TypeError(f"config.{key} must be a dict, got {config[key]!r}.")
    _check_kwargs("data", config.data, _spec(defaults.DATA), "the data pipeline", defaults.required(defaults.DATA))
    if config.get("mesh") is not None:
        _check_kwargs("mesh", config.mesh, _spec(defaults.MESH), "jaxssl.train.sharding")
        if defaults.get(config, "mesh.fsdp") < 1:
            raise ValueError(f"config.mesh.fsdp must be >= 1 (1: no FSDP), got {config.mesh.fsdp}.")
    if defaults.get(config, "data.prefetch") < 1:
        raise ValueError(f"config.data.prefetch must be >= 1 (1: no prefetch, 2: double buffering), "
                         f"got {config.data.prefetch}.")
    if not config.data.name:
        raise ValueError("config.data.name is empty; name a TFDS dataset (e.g. 'cifar10').")
    resizing.check(defaults.get(config, "data.resize"))

    # Method and model: keyword arguments of `make` / fields of `Model`, typed by their defaults.
    if not isinstance(config.method, str) or config.method not in methods.available():
        raise ValueError(f"Unknown method {config.method!r} (config.method). Available methods: "
                         f"{', '.join(methods.available())}.")
    method_module = importlib.import_module(f"jaxssl.methods.{config.method}")
    method_ranges = {f"method_kw.{k}": r for k, r in getattr(method_module, "KEY_RANGES", {}).items()}
    spec = {k: (p.default, p.annotation) for k, p in methods.config_parameters(config.method).items()}
    _check_kwargs("method_kw", config.method_kw, spec, f"method {config.method!r}",
                  [k for k, (d, _) in spec.items() if d is inspect.Parameter.empty])
    name = config.model.get("name")
    try:
        model_cls = importlib.import_module(f"jaxssl.models.{name}").Model
    except (ImportError, AttributeError, TypeError, ValueError):
        raise ValueError(f"Unknown model {name!r} (config.model.name). Available models: "
                         f"{', '.join(models.BACKBONES)}.") from None
    fields = {k: (f.default, f.type) for k, f in model_cls.__dataclass_fields__.items() if k not in ("parent", "name")}
    _check_kwargs("model", {k: v for k, v in config.model.items() if k != "name"}, fields, f"model {name!r}")
    if "remat" in config.model:
        raise ValueError(f"Set rematerialisation with config.remat (one key for every backbone), not "
                         f"config.model.remat={config.model.remat!r}.")
    if defaults.get(config, "remat") != "none" and "remat" not in fields:
        raise ValueError(f"config.remat={config.remat!r} applies to Transformer backbones (vit, transformer); "
                         f"model {name!r} has no blocks to rematerialise: set config.remat='none'.")

    # Views: the keys of `augment.apply`, typed by its defaults. Images need at least one view;
    # token ids and waveforms (jaxssl.data.inputs) reach the method unchanged, so they take none.
    views = config.input.get("views")
    image = inputs.kind(config) == "image"
    if not isinstance(views, (tuple, list)) or bool(views) != image or not all(hasattr(v, "keys") for v in views):
        want = ("a non-empty tuple of view dicts" if image else
                f"() ({config.data.name} is {inputs.kind(config)}: its inputs reach the method unchanged)")
        raise ValueError(f"config.input.views must be {want}, got {views!r}.")
    view_spec = _spec({k: (v, augment.VIEW_TYPES[k]) for k, v in augment.DEFAULT_VIEW.items()})
    for i, view in enumerate(views):
        _check_kwargs(f"input.views[{i}]", view, view_spec, "augment.apply", fixed_len=True)
    _check_evals(config, view_spec)

    for key, value in _leaves(config):
        _check_value(key, value, method_ranges)
    _check_optimizer(config)
    _check_accumulation(config)


def _check_accumulation(config) -> None:
    """config.accum_steps > 1: the batch splits evenly over micro-batches and devices; the method has embed/objective."""
    accum = defaults.get(config, "accum_steps")
    if accum == 1:
        return
    devices = jax.device_count()  # every device splits the batch (data and FSDP axes alike)
    if config.batch_size % (accum * devices):
        raise ValueError(f"config.batch_size ({config.batch_size}) must be divisible by config.accum_steps ({accum}) "
                         f"times the number of devices ({devices}), so that every micro-batch is spread evenly "
                         f"over the devices; set it to a multiple of {accum * devices}.")
    method = methods.get(config.method, backbone=models.get(**config.model), **config.method_kw)  # builds, no init
    if method.embed is None or method.objective is None:
        raise ValueError(f"config.accum_steps={accum} needs a method with the two-stage form (embed/objective, "
                         f"jaxssl.methods.base.two_stage, e.g. simclr, vicreg, barlow_twins, swav, moco_v3), and "
                         f"{config.method!r} has none; set config.accum_steps=1.")
