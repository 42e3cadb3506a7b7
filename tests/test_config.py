"""One schema for conf/ and params.yaml: drift is caught, bad values name their key."""

import pytest
import yaml
from conftest import REPO

from pipeline.config import ConfigError, compose, load_params, validate


def test_params_yaml_is_the_composition_of_conf():
    committed = (REPO / "params.yaml").read_text()
    assert compose(config_dir=REPO / "conf") == committed, "run `make params`"


def test_every_data_group_option_validates():
    for option in sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml")):
        cfg = validate(yaml.safe_load(compose([f"data={option}"], config_dir=REPO / "conf")))
        assert cfg.data.name == option


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
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        validate(override)


def test_missing_params_file_says_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match="make params"):
        load_params(tmp_path / "params.yaml")
