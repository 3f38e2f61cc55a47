"""Every config file: each optional key the trainer reads is present at its default (so the command
line can set it), and its views are independent dicts (overriding one leaves the others)."""
import importlib
import pkgutil

import pytest
from absl import flags
from ml_collections import config_flags

import configs
from jaxssl import defaults

NAMES = sorted(m.name for m in pkgutil.iter_modules(configs.__path__) if m.name != "common")


@pytest.mark.parametrize("name", NAMES)
def test_every_optional_key_is_in_the_config_at_its_default(name):
    config = importlib.import_module(f"configs.{name}").get_config("")
    for prefix, table in defaults.TABLES.items():
        node = config[prefix] if prefix else config
        for key in defaults.optional(table):
            dotted = f"{prefix}.{key}" if prefix else key
            assert key in node, f"configs/{name}.py lacks config.{dotted}"
            if dotted not in ("dtype", "data.data_dir", "data.split", "data.worker_count",
                              "data.prepare_offline"):  # recipe-specific
                value = node[key].to_dict() if hasattr(node[key], "to_dict") else node[key]
                assert value == defaults.default(dotted), dotted


@pytest.mark.parametrize("name", NAMES)
def test_views_are_independent(name):
    views = importlib.import_module(f"configs.{name}").get_config("").input.views
    assert len({id(v) for v in views}) == len(views), f"configs/{name}.py aliases its views"
    if len(views) > 1:
        before = dict(views[0])
        views[1]["flip_p"] = 0.123
        assert dict(views[0]) == before


def test_command_line_sets_nonfinite_and_one_view(monkeypatch):
    argv = ["prog", "--config", "configs/simclr_cifar10.py:runlocal", "--config.nonfinite=skip",
            "--config.nonfinite_patience=3", "--config.input.views[1].flip_p=0.0"]
    monkeypatch.setattr("sys.argv", argv)  # config_flags reads the override names from sys.argv
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    fv(argv)
    c = fv.config
    assert (c.nonfinite, c.nonfinite_patience) == ("skip", 3)
    assert c.input.views[1]["flip_p"] == 0.0 and c.input.views[0]["flip_p"] == 0.5


def test_readme_names_every_optional_key():
    import os
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    for prefix, table in defaults.TABLES.items():
        for key in defaults.optional(table):
            assert (f"{prefix}.{key}" if prefix else key) in readme, f"README.md does not mention {prefix}.{key}"
