"""Checks on the real datasets; each skips, with the reason, when its data is absent."""

from pathlib import Path

import numpy as np
import pytest
from project import REPO

from pipeline.data.fetching import fetch
from pipeline.data.manifest import load_manifest
from pipeline.data.prepared import read_prepared
from pipeline.files import sha256_file

pytestmark = pytest.mark.real_data
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_fetched_mnist_matches_the_manifest():
    raw = REPO / "data" / "raw" / "mnist"
    if not raw.is_dir():
        pytest.skip(f"{raw} absent: run `dvc repro fetch` (make repro) first")
    for spec in load_manifest("mnist").files:
        assert sha256_file(raw / spec.name) == spec.sha256


def test_prepared_mnist_has_the_documented_layout():
    path = REPO / "data" / "prepared" / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent: run `dvc repro prepare` (make repro) first")
    data = read_prepared(path)
    fit, val, test = (data.split(part) for part in ("fit", "val", "test"))
    assert len(fit) + len(val) == 60_000 and len(test) == 10_000
    x = test.x.array(np.float32)
    assert x.shape == (10_000, 28, 28) and 0.0 <= x.min() <= x.max() <= 1.0
    assert np.bincount(test.labels).tolist()[:2] == [980, 1135]  # MNIST's test class counts


def test_fashion_mnist_offline_from_debian(tmp_path):
    if not DEBIAN_FASHION.is_dir():
        pytest.skip(f"{DEBIAN_FASHION} absent: apt-get install dataset-fashion-mnist")
    record = fetch(load_manifest("fashion_mnist"), tmp_path, network=False, timeout_s=10.0)
    assert all("dataset-fashion-mnist" in f["source"] for f in record["files"].values())
