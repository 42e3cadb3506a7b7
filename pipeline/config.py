"""The one typed schema of the configuration, and `python -m pipeline.config` (compose conf/).

`conf/` (Hydra) holds every default and its meaning; `params.yaml` is its composition
(committed, read by the DVC stages); Hydra multiruns compose `conf/` directly. Both pass through
`validate`, which turns the tree into typed, checked dataclasses: a wrong type, an out-of-range
value, an unknown key or a missing key fails before any work, naming the key. The dataclasses
carry types and ranges only, no defaults: a key missing from the composition is an error, never
silently filled in. The schema is applied in code, not through Hydra's ConfigStore: a schema in
the defaults list breaks DVC's own composition of `conf/`.
"""

from __future__ import annotations

import argparse
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.data import manifest
from pipeline.files import atomic_write_bytes

PARAMS_FILE = Path("params.yaml")
TOOLBOX_IMAGES = 60_000  # the toolbox trains on every training image, in file order
# How a run is checkpointed, resumed and spread over threads, not what it computes (the weights
# are the same bytes for any thread count): left out of a run's identity (its checkpoint's key,
# a sweep job's identity), so changing them resumes the same run.
RESUME_KEYS = ("train.checkpoint_every", "train.resume", "train.threads")
RESUME_MODES = ("auto", "never")


class ConfigError(ValueError):
    """A configuration value that is missing, of the wrong type, out of range or unknown."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclass
class DataConfig:  # conf/data/*.yaml
    name: str
    raw_dir: str
    prepared: str
    val_size: int
    split_seed: int
    subset: int | None

    def __post_init__(self) -> None:
        known = manifest.available()
        _require(self.name in known, "data.name", f"unknown dataset {self.name!r}; known: {known}")
        _require(0 <= self.val_size < 60_000, "data.val_size", "must be in [0, 60000)")
        _require(self.split_seed >= 0, "data.split_seed", "must be >= 0")
        _require(self.subset is None or self.subset >= 1, "data.subset", "must be >= 1 or null")


@dataclass
class FetchConfig:  # conf/config.yaml, `fetch`
    network: bool
    timeout_s: float
    local_dir: str | None

    def __post_init__(self) -> None:
        _require(self.timeout_s > 0, "fetch.timeout_s", "must be > 0")


@dataclass
class ModelConfig:  # conf/model/*.yaml
    name: str

    def __post_init__(self) -> None:
        _require(self.name == "zhang2016", "model.name", "the only model is 'zhang2016'")


@dataclass
class TrainConfig:  # conf/train/*.yaml
    lr: float
    batch_size: int
    epochs: int
    dtype: str
    rng: str
    test_each_epoch: bool
    init_seed: int | None
    order_seed: int | None
    threads: int | None
    checkpoint_every: int
    resume: str

    def __post_init__(self) -> None:
        _require(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        _require(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        _require(
            self.dtype in ("float32", "float64"),
            "train.dtype",
            f"must be float32 or float64, got {self.dtype!r}",
        )
        _require(
            self.rng in ("default", "toolbox"),
            "train.rng",
            f"must be default or toolbox, got {self.rng!r}",
        )
        for key in ("init_seed", "order_seed"):
            value = getattr(self, key)
            _require(value is None or value >= 0, f"train.{key}", "must be >= 0 or null")
        _require(
            self.threads is None or self.threads >= 1,
            "train.threads",
            f"must be >= 1 or null (the cores available), got {self.threads}",
        )
        _require(
            self.checkpoint_every >= 0,
            "train.checkpoint_every",
            f"must be >= 0 (0: only on a signal), got {self.checkpoint_every}",
        )
        _require(
            self.resume in RESUME_MODES,
            "train.resume",
            f"must be auto or never, got {self.resume!r}",
        )


@dataclass
class TrackingConfig:  # conf/tracking/*.yaml
    experiment: str
    uri: str | None
    log_model: bool
    sweep: str | None

    def __post_init__(self) -> None:
        _require(bool(self.experiment.strip()), "tracking.experiment", "must not be empty")
        # tracking.uri is logged (params, params.yaml, Hydra's overrides): never a secret in it
        _require(
            self.uri is None or urllib.parse.urlsplit(self.uri).password is None,
            "tracking.uri",
            "must not hold a password (it is logged with the run's params): put it in "
            "PGPASSWORD or ~/.pgpass",
        )


@dataclass
class Config:  # conf/config.yaml
    seed: int
    data: DataConfig
    fetch: FetchConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "seed", "must be >= 0")
        if self.train.rng == "toolbox":
            # The toolbox draws randperm(60000) over every training image and asserts that the
            # batch size divides it; a replay cannot use a subset.
            _require(self.seed < 2**32, "seed", "train.rng=toolbox needs a seed below 2**32")
            _require(
                TOOLBOX_IMAGES % self.train.batch_size == 0,
                "train.batch_size",
                "train.rng=toolbox needs a batch size that divides 60000",
            )
            for key in ("init_seed", "order_seed"):
                _require(
                    getattr(self.train, key) in (None, self.seed),
                    f"train.{key}",
                    "train.rng=toolbox draws init and order from `seed` alone: leave it null",
                )
            _require(
                self.data.subset is None,
                "data.subset",
                "train.rng=toolbox trains on all 60,000 images: leave it null",
            )


def validate(cfg: DictConfig | dict[str, Any]) -> Config:
    """Check `cfg` against the schema and return it as typed dataclasses.

    Raises ConfigError naming the offending key (unknown or missing keys, wrong types, ranges).
    """
    if isinstance(cfg, DictConfig):  # Hydra's own node is not ours to check (or to resolve)
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        msg = str(exc).splitlines()[0]
        if "missing mandatory value" in msg.lower():
            msg = (
                "missing; conf/ must give every key a value (`make params` recomposes params.yaml)"
            )
        raise ConfigError(f"{key}: {msg}") from None


def load_params(path: Path = PARAMS_FILE) -> tuple[Config, dict[str, Any]]:
    """Read and validate `params.yaml` (what the DVC stages run on): (typed config, raw tree)."""
    if not Path(path).is_file():
        raise ConfigError(
            f"{path} not found: run from the repository root, or regenerate it with "
            "`make params` (it is the composition of conf/)"
        )
    with open(path, encoding="utf-8") as fh:
        tree = yaml.safe_load(fh) or {}
    return validate(tree), tree


def stage_params(argv: list[str] | None, description: str) -> Path:
    """A stage's command line, `[--params params.yaml]`: the params file it runs on."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="default: params.yaml")
    return parser.parse_args(argv).params


def compose(overrides: list[str] | None = None, config_dir: Path = Path("conf")) -> str:
    """Compose `conf/` into params.yaml text exactly as `dvc exp run` does (DVC's own code)."""
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(Path(config_dir).resolve()), None, "config", tmp, overrides or [])
        text = out.read_text(encoding="utf-8")
    validate(yaml.safe_load(text))
    return text


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two trees, as "key: old -> new"."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [
            line for k in keys for line in changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old} -> {new}"]


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.config [overrides...]`: rewrite params.yaml from conf/."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=fashion_mnist")
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    args = parser.parse_args(argv)
    from pipeline.runtime import enter_project

    enter_project()
    text = compose(args.overrides)
    current = PARAMS_FILE.read_text(encoding="utf-8") if PARAMS_FILE.exists() else None
    if current == text:
        print("params.yaml is the composition of conf/: unchanged")
        return 0
    old = yaml.safe_load(current) if current else {}
    changes = changed_keys(old, yaml.safe_load(text)) or ["(formatting only)"]
    if args.check:
        print("params.yaml differs from the composition of conf/ (`make params` rewrites it):")
        print("\n".join(f"  {line}" for line in changes))
        return 1
    atomic_write_bytes(PARAMS_FILE, text.encode())
    print("params.yaml rewritten from conf/:")
    print("\n".join(f"  {line}" for line in changes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
