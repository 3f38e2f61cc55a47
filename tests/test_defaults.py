"""jaxssl.defaults: one default per optional config key, read the same from a ConfigDict and config.json."""
import json

import ml_collections
import pytest

from configs import simclr_cifar10
from jaxssl import augment
from jaxssl import defaults
from jaxssl.train import optim, sharding, validate


@pytest.mark.parametrize("as_dict", [False, True], ids=["ConfigDict", "config.json dict"])
def test_get_returns_the_configs_value_else_the_default(as_dict):
    config = simclr_cifar10.get_config("runlocal")
    config.accum_steps = 2
    config.data.split = "train[:10%]"
    del config["nonfinite"]  # a config without the key (e.g. an older config.json): the default applies
    config.mesh = None
    del config.data["worker_count"]
    if as_dict:
        config = json.loads(config.to_json_best_effort())
    assert defaults.get(config, "accum_steps") == 2
    assert defaults.get(config, "data.split") == "train[:10%]"
    assert defaults.get(config, "data.name") == "cifar10"
    assert defaults.get(config, "batch_size") == 32
    assert defaults.get(config, "nonfinite") == "raise"
    assert defaults.get(config, "data.worker_count") == 0
    assert defaults.get(config, "mesh.fsdp") == 1  # a parent set to None counts as missing
    assert defaults.get(config, "mesh.fsdp_min_size") == sharding.FSDP_MIN_SIZE == defaults.FSDP_MIN_SIZE
    assert defaults.get({}, "mesh") == {"fsdp": 1, "fsdp_min_size": defaults.FSDP_MIN_SIZE}


def test_defaults_are_fresh_copies():
    defaults.get({}, "mesh")["fsdp"] = 8
    assert defaults.get({}, "mesh")["fsdp"] == 1


@pytest.mark.parametrize("as_dict", [False, True], ids=["ConfigDict", "dict"])
@pytest.mark.parametrize("key, says", [("data.name", "required"), ("batch_size", "required"),
                                       ("data.nmae", "no default"), ("dtyp", "no default")])
def test_a_missing_key_without_default_raises_naming_it(as_dict, key, says):
    config = {"data": {"split": "train"}}
    config = config if as_dict else ml_collections.ConfigDict(config)
    with pytest.raises(KeyError, match=f"config.{key} .*{says}"):
        defaults.get(config, key)


def test_validation_key_lists_come_from_the_defaults():
    assert set(validate.REQUIRED_KEYS) == {k for k, v in defaults.TOP_LEVEL.items() if v.default is defaults.REQUIRED}
    assert set(validate.OPTIONAL_KEYS) == set(defaults.TOP_LEVEL) - set(validate.REQUIRED_KEYS)
    assert "trainer" not in defaults.TOP_LEVEL
    assert set(augment.VIEW_TYPES) == set(augment.DEFAULT_VIEW)


def test_optimizer_option_reads_the_table():
    cfg = ml_collections.ConfigDict(dict(name="adamw", base_lr=0.1))
    assert optim.option(cfg, "b2") == optim.OPTIMIZER_KEYS["adamw"]["b2"].default
    assert optim.option(cfg, "grad_clip") is None
    with pytest.raises(KeyError, match="valid keys"):
        optim.option(cfg, "betas")
    with pytest.raises(KeyError, match="required"):
        optim.option(ml_collections.ConfigDict(dict(name="sgd")), "base_lr")


@pytest.mark.parametrize("typo", ["momentun", "weight_decay_ned", "lr"])
def test_misspelled_optimizer_key_is_rejected_listing_the_valid_keys(typo):
    config = simclr_cifar10.get_config("runlocal")
    config.optimizer[typo] = 0.5
    with pytest.raises(ValueError) as e:
        validate.validate_config(config)
    msg = str(e.value)
    assert f"Unknown key(s) ['{typo}'] in config.optimizer" in msg
    assert all(repr(k) in msg for k in optim.all_keys()), msg


def test_optimizer_without_base_lr_names_it():
    config = simclr_cifar10.get_config("runlocal")
    del config.optimizer["base_lr"]
    with pytest.raises(ValueError, match=r"config.optimizer lacks the required key\(s\) \['base_lr'\]"):
        validate.validate_config(config)
