"""Configurations for tests: `conf/` composed as DVC composes it, then values changed."""

from __future__ import annotations

import copy
import functools
from typing import Any

import yaml
from project import REPO

from pipeline.config import compose


@functools.cache
def _composed(overrides: tuple[str, ...]) -> str:
    return compose(list(overrides), config_dir=REPO / "conf")


def tree(*overrides: str, **values: Any) -> dict[str, Any]:
    """conf/ composed with Hydra `overrides`, then dotted `values` set (unchecked), e.g.
    tree("data=mnist_small", **{"train.lr": 0}). A fresh dict each call."""
    out = copy.deepcopy(yaml.safe_load(_composed(overrides)))
    for dotted, value in values.items():
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out
