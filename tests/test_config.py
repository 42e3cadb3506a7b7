"""One schema for conf/ and params.yaml: drift is caught, bad values name their key."""

import pytest
import yaml
from conftest import REPO

from pipeline.config import ConfigError, compose, load_params, validate


def test_params_yaml_is_the_composition_of_conf():
    committed = (REPO / "params.yaml").read_text()
    assert compose(config_dir=REPO / "conf") == committed, "run `make params`"


@pytest.mark.parametrize("group", ["data", "model", "train", "tracking"])
def test_every_group_option_composes_and_validates(group):
    options = sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
    assert options
    for option in options:
        text = compose([f"{group}={option}"], config_dir=REPO / "conf")
        validate(yaml.safe_load(text))


def test_small_subset_keeps_mnist_files():
    cfg = validate(yaml.safe_load(compose(["data=mnist_small"], config_dir=REPO / "conf")))
    assert (cfg.data.name, cfg.data.subset) == ("mnist", 5000)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"data": {"val_size": "many"}}, "data.val_size"),
        ({"data": {"val_size": 60000}}, "data.val_size"),
        ({"data": {"name": "cifar10"}}, "data.name"),
        ({"data": {"shuffle": True}}, "data.shuffle"),
        ({"fetch": {"timeout_s": 0}}, "fetch.timeout_s"),
        ({"fetch": {"network": "sometimes"}}, "fetch.network"),
        ({"sed": 1}, "sed"),
        ({"seed": -3}, "seed"),
        ({"train": {"lr": 0}}, "train.lr"),
        ({"train": {"lr": "abc"}}, "train.lr"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"dtype": "float16"}}, "train.dtype"),
        ({"train": {"momentum": 0.9}}, "train.momentum"),
        ({"model": {"name": "lenet"}}, "model.name"),
        ({"data": {"subset": 0}}, "data.subset"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        validate(override)


def test_missing_params_file_says_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match="make params"):
        load_params(tmp_path / "params.yaml")
