"""Bad input is reported with a clear exception naming the key or the fix, before anything compiles.

Property-based (hypothesis) over configs and dataset records: every bad value raises ValueError,
TypeError or FileNotFoundError whose message names `config.<key>` (or the dataset problem), never
a crash deep inside JAX. `loop.train` is called with model initialisation replaced by an
AssertionError, so a test that reaches it fails: nothing here compiles a model.
"""
import contextlib
import copy
import glob
import importlib
import inspect
import json
import math
import os
import re
import sys
import tempfile
import types

import hypothesis
import hypothesis.strategies as st
import ml_collections
import numpy as np
import pytest

import jaxssl.methods
from configs import simclr_cifar10
from jaxssl.data import sources
from jaxssl import defaults
from jaxssl.train import loop, optim, step as step_lib, validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
BASE = simclr_cifar10.get_config("runlocal")


def _mutated(key: str, value, base=BASE) -> ml_collections.ConfigDict:
    """A copy of `base` with `key` ("a.b", "input.views[1].flip_p") set to `value` (no type checks)."""
    d = copy.deepcopy(base.to_dict())
    d["input"]["views"] = [dict(v) for v in d["input"]["views"]]
    parts = re.findall(r"[^.\[\]]+", key)
    node = d
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[parts[-1]] = value
    return ml_collections.ConfigDict(d)


def _raises_naming(config, key: str, types_=(ValueError, TypeError)):
    with pytest.raises(types_) as e:
        validate.validate_config(config)
    assert key in str(e.value), f"{key!r} not named in: {e.value}"
    return str(e.value)


# ----------------------------------------------------------------------------------------------
# Every shipped config passes (no false alarms), in every variant.
# ----------------------------------------------------------------------------------------------
def _image_configs() -> list[str]:
    """The configs `jaxssl.train.loop.train` runs (image views); token/waveform configs have their own trainer."""
    names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "[a-z]*_*.py")))
    keep = []
    for name in names:
        try:
            keep += [name] if importlib.import_module(f"configs.{name}").get_config("runlocal").input.views else []
        except Exception:  # noqa: BLE001  (a broken config fails in the test below, not at collection)
            keep.append(name)
    return keep


CONFIGS = _image_configs()


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_file_validates(name):
    module = importlib.import_module(f"configs.{name}")
    validate.validate_config(module.get_config(None))
    for arg in ("cpu", "runlocal"):
        try:
            config = module.get_config(arg)
        except ValueError as e:  # this config has no such variant
            assert "Unknown config argument" in str(e)
            continue
        validate.validate_config(config)


# ----------------------------------------------------------------------------------------------
# Bad values: each strategy draws only values that are wrong for its key.
# ----------------------------------------------------------------------------------------------
text = st.text(max_size=4)
not_number = st.one_of(text, st.none(), st.booleans(), st.just([1, 2]))
nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
BAD = {
    "batch_size": st.one_of(st.integers(max_value=0), st.floats(allow_nan=False), not_number),
    "total_steps": st.one_of(st.integers(max_value=-1), st.floats(), text),
    "log_steps": st.one_of(st.integers(max_value=0), text),
    "ckpt_steps": st.one_of(st.integers(max_value=0), st.just(2.0)),
    "keep_ckpts": st.one_of(st.integers(max_value=0), st.none()),
    "seed": st.one_of(st.floats(), text),
    "dtype": text.filter(lambda s: s not in validate.DTYPES),
    "nonfinite": text.filter(lambda s: s not in ("raise", "skip")),
    "method_kw.temperature": st.one_of(st.floats(max_value=0.0), nonfinite, not_number),
    "method_kw.proj_dim": st.one_of(st.integers(max_value=0), st.floats(allow_nan=False), text),
    "method_kw.proj_hidden": st.one_of(st.integers(), st.tuples(st.integers(max_value=0)),
                                       st.tuples(st.floats(0.1, 9))),
    "model.width": st.one_of(st.floats(max_value=0.0), nonfinite, text),
    "model.cifar_stem": st.one_of(st.integers(), text),
    "optimizer.base_lr": st.one_of(st.floats(max_value=0.0), nonfinite, not_number),
    "optimizer.weight_decay": st.one_of(st.floats(max_value=-1e-9, allow_infinity=False), text),
    "optimizer.momentum": st.one_of(st.floats(min_value=1.0001, allow_infinity=False), st.floats(max_value=-1e-9)),
    "optimizer.warmup_steps": st.one_of(st.integers(max_value=-1), st.just(1.5)),
    "optimizer.grad_clip": st.one_of(st.floats(max_value=-1e-9), text, st.tuples(st.floats(0, 1))),
    "optimizer.name": text.filter(lambda s: s not in optim.OPTIMIZERS),
    "optimizer.lr_scaling": text,
    "input.views[0].flip_p": st.one_of(st.floats(min_value=1.0001), st.floats(max_value=-1e-9), text),
    "input.views[1].crop_size": st.one_of(st.integers(max_value=0), st.floats(1, 64), st.tuples(st.integers(1, 9))),
    "input.views[1].crop_scale": st.one_of(st.tuples(st.floats(0.51, 1.0), st.floats(0.01, 0.5)),
                                           st.tuples(st.floats(-1, 0), st.floats(0.1, 1)), st.just((0.5,))),
    "input.views[0].mean": st.one_of(st.tuples(st.floats(0, 1)), text),
    "input.views[1].std": st.one_of(st.tuples(st.floats(-1, 0), st.floats(0.1, 1), st.floats(0.1, 1)), nonfinite),
    "input.views[0].hue": st.one_of(st.floats(min_value=0.51, allow_infinity=False), text),
    "evals.knn.batch_size": st.one_of(st.integers(max_value=0), text),
    "evals.knn.protocols": st.one_of(st.just(()), st.tuples(st.tuples(st.integers(max_value=0), st.floats(0.1, 1))),
                                     st.tuples(st.tuples(st.integers(1, 9), st.floats(max_value=0.0)))),
    "data.name": st.one_of(st.just(""), st.integers(), st.none()),
    "data.split": st.one_of(st.integers(), st.none()),
    "data.prefetch": st.one_of(st.integers(max_value=0), text),
    "data.resize": text.filter(lambda s: s not in ("pil", "opencv")),
    # An unknown policy, or any policy on this config's ResNet (no Transformer blocks to rematerialise).
    "remat": st.one_of(text, st.sampled_from(["block", "dots_saveable"])),
}


@pytest.mark.parametrize("key", sorted(BAD))
@hypothesis.settings(SETTINGS, max_examples=8)
@hypothesis.given(data=st.data())
def test_bad_values_raise_naming_the_key(key, data):
    value = data.draw(BAD[key], label="value")
    _raises_naming(_mutated(key, value), f"config.{key}")


GOOD = {
    "batch_size": st.integers(1, 4096),
    "data.resize": st.sampled_from(["pil", "opencv"]),
    "method_kw.temperature": st.floats(1e-3, 10),
    "method_kw.proj_hidden": st.lists(st.integers(1, 64), max_size=3).map(tuple),
    "model.width": st.floats(0.01, 4),
    "optimizer.base_lr": st.floats(1e-6, 10),
    "optimizer.momentum": st.floats(0, 1),
    "optimizer.grad_clip": st.one_of(st.none(), st.floats(0, 10)),
    "input.views[0].flip_p": st.floats(0, 1),
    "input.views[0].crop_size": st.one_of(st.none(), st.integers(1, 64),
                                          st.tuples(st.integers(1, 64), st.integers(1, 64))),
    "input.views[1].brightness": st.one_of(st.floats(0, 2), st.tuples(st.floats(0, 1), st.floats(1, 2))),
    "input.views[1].crop_scale": st.tuples(st.floats(0.01, 0.5), st.floats(0.5, 1)),
}


@pytest.mark.parametrize("key", sorted(GOOD))
@hypothesis.settings(SETTINGS, max_examples=5)
@hypothesis.given(data=st.data())
def test_good_values_pass(key, data):
    validate.validate_config(_mutated(key, data.draw(GOOD[key], label="value")))


SECTIONS = {"": validate.REQUIRED_KEYS + validate.OPTIONAL_KEYS, "method_kw": (), "model": (),
            "data": tuple(defaults.DATA), "optimizer": (), "input.views[1]": (), "evals.knn": ()}


@SETTINGS
@hypothesis.given(section=st.sampled_from(sorted(SECTIONS)),
                  name=st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True),
                  value=st.one_of(st.integers(), text, st.floats(0, 1)))
def test_unknown_keys_raise_naming_the_key(section, name, value):
    known = validate.lookup(BASE.to_dict(), section) if section and "[" not in section else {}
    hypothesis.assume(name not in SECTIONS[section] and name not in (known or {})
                      and name not in (BASE.input.views[1] if "views" in section else {}))
    hypothesis.assume(not (section == "method_kw" and name in ("backbone", "dtype")))
    hypothesis.assume(not (section == "optimizer" and name in optim.all_keys()))
    hypothesis.assume(not (section == "model" and name in ("dtype",)))
    msg = _raises_naming(_mutated(f"{section}.{name}" if section else name, value), repr(name), ValueError)
    assert "Unknown" in msg and ("config." + section if section else "config key") in msg


LEAVES = [k for k, _ in validate._leaves(BASE)]


@SETTINGS
@hypothesis.given(key=st.sampled_from(LEAVES), value=st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(), text, st.tuples(st.floats(-2, 2)),
    st.tuples(text), st.lists(st.integers(), max_size=3), st.dictionaries(text, st.integers(), max_size=2)))
def test_any_garbage_is_accepted_or_reported_never_a_crash(key, value):
    try:
        validate.validate_config(_mutated(key, value))
    except (ValueError, TypeError) as e:
        assert "config" in str(e).lower(), e


def test_dropping_a_required_key_names_it():
    d = BASE.to_dict()
    del d["optimizer"]
    _raises_naming(ml_collections.ConfigDict(d), "['optimizer']", ValueError)


def test_byol_style_required_method_argument_is_named():
    """A method keyword without default (BYOL's total_steps) must be in config.method_kw."""
    config = _mutated("method", "byol")
    config.method_kw = dict(proj_hidden=(16,), proj_dim=8)
    _raises_naming(config, "['total_steps']", ValueError)


@contextlib.contextmanager
def _masked_method():
    """A stand-in method with a mask ratio (as MAE, iBOT, data2vec have), registered as 'masked_test'."""
    module = types.ModuleType("jaxssl.methods.masked_test")
    module.make = lambda *, backbone, mask_ratio=0.75, teacher_temp=0.04, base_momentum=0.996, dtype=None: None
    available = jaxssl.methods.available()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, module.__name__, module)
        mp.setattr(jaxssl.methods, "available", lambda: sorted(available + ["masked_test"]))
        yield _mutated("method_kw", dict(mask_ratio=0.75), _mutated("method", "masked_test"))


@SETTINGS
@hypothesis.given(ratio=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(math.nan)),
                  good=st.floats(0.01, 0.99))
def test_mask_ratio_outside_open_unit_interval_is_refused(ratio, good):
    with _masked_method() as config:
        _raises_naming(_mutated("method_kw.mask_ratio", ratio, config), "config.method_kw.mask_ratio")
        validate.validate_config(_mutated("method_kw.mask_ratio", good, config))
        _raises_naming(_mutated("method_kw.teacher_temp", -good, config), "config.method_kw.teacher_temp")
        _raises_naming(_mutated("method_kw.base_momentum", 1 + good, config), "config.method_kw.base_momentum")



def test_a_method_can_widen_the_range_of_its_own_argument():
    """SwAV's KEY_RANGES: queue_size 0 is no queue; MoCo v2's queue_size keeps the rule of the name (> 0)."""
    from configs import moco_v2_cifar10, swav_cifar10
    swav = swav_cifar10.get_config("runlocal")
    validate.validate_config(_mutated("method_kw.queue_size", 0, swav))
    _raises_naming(_mutated("method_kw.queue_size", -1, swav), "config.method_kw.queue_size")
    moco = moco_v2_cifar10.get_config("runlocal")
    _raises_naming(_mutated("method_kw.queue_size", 0, moco), "config.method_kw.queue_size")


@pytest.mark.parametrize("name", jaxssl.methods.available())
def test_key_ranges_name_arguments_of_make(name):
    """A KEY_RANGES entry that names no argument of `make` would silently change nothing."""
    module = importlib.import_module(f"jaxssl.methods.{name}")
    ranges = getattr(module, "KEY_RANGES", {})
    args = set(inspect.signature(module.make).parameters)
    assert set(ranges) <= args, f"{name}.KEY_RANGES names {sorted(set(ranges) - args)}, not arguments of make"
    for key, (low, high, _, _) in ranges.items():
        assert low <= high, (name, key)

# ----------------------------------------------------------------------------------------------
# Dataset problems, through `loop.train`: reported before the model is initialised.
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def no_init(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("train() reached model initialisation: the problem was not caught before compiling")
    monkeypatch.setattr(step_lib, "init_state", fail)


def _fake_source(monkeypatch, records_by_split):
    monkeypatch.setattr(sources, "get_source", lambda name, split, data_dir=None: records_by_split[split])


def _train_config(data_dir="/nonexistent", **overrides):
    config = simclr_cifar10.get_config("runlocal")
    config.data.data_dir, config.data.prepare_offline, config.progress_bar = data_dir, False, False
    for k, v in overrides.items():
        config[k] = v
    return config


image_arrays = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill, dtype=dtype),
    st.sampled_from(["uint8", "float32", "float64", "int32", "uint16", "int8", "bool"]),
    st.lists(st.integers(1, 6), min_size=0, max_size=4).map(tuple), st.integers(0, 1))


@SETTINGS
@hypothesis.given(image=image_arrays, key=st.sampled_from(["image", "img"]))
def test_bad_images_are_reported_before_compiling(image, key):
    valid = key == "image" and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] in (1, 3)
    hypothesis.assume(not valid)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(step_lib, "init_state", lambda *a, **k: (_ for _ in ()).throw(AssertionError("compiled")))
        _fake_source(mp, {"train": [{key: image, "label": 0}] * 64})
        with pytest.raises(ValueError) as e:
            loop.train(_train_config(), tempfile.mkdtemp())
    msg = str(e.value)
    assert "cifar10[train]" in msg and ("uint8" in msg or "shape" in msg or "image key" in msg), msg


def test_labels_missing_for_evaluation_is_reported_before_training(monkeypatch, tmp_path, no_init):
    image = np.zeros((8, 8, 3), np.uint8)
    _fake_source(monkeypatch, {"train": [{"image": image, "label": 1}] * 64, "test": [{"image": image}] * 16})
    config = _train_config()
    config.evals.knn.enabled = True
    with pytest.raises(ValueError, match=r"cifar10\[test\].*no label key 'label'"):
        loop.train(config, str(tmp_path))


def test_missing_dataset_names_the_prepare_command(tmp_path, no_init):
    with pytest.raises(FileNotFoundError, match=r"python -m jaxssl.data.prepare cifar10"):
        loop.train(_train_config(data_dir=str(tmp_path / "empty")), str(tmp_path / "run"))


def test_batch_larger_than_the_dataset_is_reported(monkeypatch, tmp_path, no_init):
    _fake_source(monkeypatch, {"train": [{"image": np.zeros((8, 8, 3), np.uint8), "label": 0}] * 16})
    with pytest.raises(ValueError, match=r"global batch \(\d+\) is larger than"):
        loop.train(_train_config(), str(tmp_path))


# ----------------------------------------------------------------------------------------------
# A workdir holding a run with an incompatible config.
# ----------------------------------------------------------------------------------------------
def test_incompatible_workdir_is_refused_compatible_changes_are_not(cifar10_data_dir, tmp_path, no_init):
    workdir = str(tmp_path / "run")
    config = _train_config(cifar10_data_dir)
    loop._check_workdir_config(workdir, config)
    os.makedirs(os.path.join(workdir, "checkpoints"))  # as if the run had checkpointed
    for key, value, named in [("data.split", "train[:50%]", "data.split"), ("data.name", "mnist", "data.name"),
                              ("model.width", 0.25, "model"), ("input.views[0].flip_p", 0.0, "input"),
                              ("optimizer.base_lr", 0.1, "optimizer"), ("seed", 1, "seed")]:
        with pytest.raises(ValueError, match=re.escape(f"different config for ['{named}']")):
            loop.train(_mutated(key, value, config), workdir)
    # Longer training, other logging or evaluation settings and another data_dir are fine: the run
    # goes on to initialise the model.
    for key, value in [("total_steps", 100), ("log_steps", 1), ("data.data_dir", cifar10_data_dir + "/")]:
        with pytest.raises(AssertionError, match="reached model initialisation"):
            loop.train(_mutated(key, value, config), workdir)
    assert json.load(open(os.path.join(workdir, "config.json")))["data"]["name"] == "cifar10"
    # An optimiser key spelled out at its default is no change (a run saved before `trust_clip` was
    # written into the LARS configs resumes); another value of it is.
    old_dir = str(tmp_path / "old_run")
    old = config.to_dict()
    del old["optimizer"]["trust_clip"]
    loop._check_workdir_config(old_dir, ml_collections.ConfigDict(old))
    os.makedirs(os.path.join(old_dir, "checkpoints"))
    assert "trust_clip" not in json.load(open(os.path.join(old_dir, "config.json")))["optimizer"]
    assert config.optimizer.trust_clip is False
    with pytest.raises(AssertionError, match="reached model initialisation"):
        loop.train(config, old_dir)
    with pytest.raises(ValueError, match=re.escape("different config for ['optimizer']")):
        loop.train(_mutated("optimizer.trust_clip", True, config), old_dir)


def test_a_method_keyword_missing_from_a_saved_run_is_at_its_default(tmp_path):
    """A run saved before a method keyword existed (iBOT's `patch_head_tokens`) ran at the keyword's
    `make` default: resuming with the key spelled out at that default is no change, another value is."""
    from configs import ibot_cifar10
    workdir = str(tmp_path / "run")
    config = ibot_cifar10.get_config("runlocal")
    assert jaxssl.methods.make_defaults("ibot")["patch_head_tokens"] == config.method_kw.patch_head_tokens == "masked"
    old = config.to_dict()
    del old["method_kw"]["patch_head_tokens"]
    loop._check_workdir_config(workdir, ml_collections.ConfigDict(old))
    os.makedirs(os.path.join(workdir, "checkpoints"))
    loop._check_workdir_config(workdir, config)
    config.method_kw.patch_head_tokens = "all"
    with pytest.raises(ValueError, match=re.escape("different config for ['method_kw']")):
        loop._check_workdir_config(workdir, config)
    for name in jaxssl.methods.available():  # every method's defaults survive config.json
        defaults_ = jaxssl.methods.make_defaults(name)
        assert json.loads(json.dumps(defaults_)) == defaults_ and "backbone" not in defaults_


def test_workdir_config_is_replaced_atomically(tmp_path, monkeypatch):
    """The other processes of a multi-host run read config.json while process 0 rewrites it: at every
    moment of the write the file holds a whole config (the old one), never a truncated one, and no
    temporary file is left (a 2-process resume read an empty file before the write was atomic)."""
    from configs import simclr_cifar10
    workdir = str(tmp_path / "run")
    path = os.path.join(workdir, "config.json")
    config = simclr_cifar10.get_config("runlocal")
    loop._check_workdir_config(workdir, config)
    seen, dump = [], json.dump

    def dump_and_read(obj, f, **kw):
        seen.append(json.load(open(path))["method"])  # what a peer process reads mid-write
        dump(obj, f, **kw)

    monkeypatch.setattr(loop.json, "dump", dump_and_read)
    config.total_steps = 7
    loop._check_workdir_config(workdir, config)
    assert seen == ["simclr"]
    assert json.load(open(path))["total_steps"] == 7 and sorted(os.listdir(workdir)) == ["config.json"]
