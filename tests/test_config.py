"""One schema for conf/ and params.yaml: drift is caught, bad and missing values name their key,
and every config group option and experiment composes and validates."""

import pytest
import yaml
from configs import tree
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from project import REPO

from pipeline.config import ConfigError, compose, load_params, validate


def test_params_yaml_is_the_composition_of_conf():
    committed = (REPO / "params.yaml").read_text()
    assert compose(config_dir=REPO / "conf") == committed, "run `make params`"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={option}"
        for group in ("data", "model", "train", "tracking")
        for option in options(group)
    ],
)
def test_every_group_option_composes_and_validates(override):
    validate(tree(override))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_with_its_sweep_and_launcher(experiment):
    # What `python -m pipeline.train -m +experiment=NAME` composes, Hydra's own node included.
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", [f"+experiment={experiment}"], return_hydra_config=True)
    config = validate(cfg)
    assert config.tracking.sweep == experiment  # its report lands in experiments/<name>/
    for key, sweep in (cfg.hydra.sweeper.params or {}).items():  # every swept key is known
        first = yaml.safe_load(str(sweep).split(",")[0])  # "0.1,0.3" -> 0.1
        validate(tree(**{key: first}))


def test_small_subset_keeps_mnist_files():
    cfg = validate(tree("data=mnist_small"))
    assert (cfg.data.name, cfg.data.subset) == ("mnist", 5000)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.val_size", "many"),
        ("data.val_size", 60000),
        ("data.name", "cifar10"),
        ("data.shuffle", True),
        ("fetch.timeout_s", 0),
        ("fetch.network", "sometimes"),
        ("sed", 1),
        ("seed", -3),
        ("train.lr", 0),
        ("train.lr", "abc"),
        ("train.batch_size", 0),
        ("train.epochs", 0),
        ("train.dtype", "float16"),
        ("train.threads", 0),
        ("train.threads", "all"),
        ("train.momentum", 0.9),
        ("model.name", "lenet"),
        ("data.subset", 0),
        ("tracking.uri", "postgresql+psycopg://mlflow:hunter2@db:5432/mlflow"),
    ],
)
def test_bad_values_fail_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        validate(tree(**{key: value}))


@pytest.mark.parametrize("key", ["train.epochs", "data.val_size", "tracking.uri", "seed", "fetch"])
def test_a_missing_key_is_an_error_naming_it_not_a_default(key):
    cfg = tree()
    *parents, last = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    del node[last]
    with pytest.raises(ConfigError, match=f"^{key}: missing; conf/ must give every key a value"):
        validate(cfg)


def test_missing_params_file_says_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match="make params"):
        load_params(tmp_path / "params.yaml")


def test_load_params_returns_the_typed_config_and_the_raw_tree(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree(**{"train.lr": 0.5})))
    cfg, raw = load_params(tmp_path / "params.yaml")
    assert cfg.train.lr == 0.5 and raw["train"]["lr"] == 0.5 and raw["data"]["name"] == "mnist"
