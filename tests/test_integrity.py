"""Atomic writes leave nothing partial; corrupt gzip data is named, never passed on."""

import gzip

import pytest

from pipeline.integrity import DataError, atomic_path, atomic_write_bytes, gunzip


def test_atomic_write_replaces_only_on_success(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [dest]  # no temporary file left behind
    atomic_write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new"


def test_atomic_write_survives_keyboard_interrupt(tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_gunzip_roundtrip():
    assert gunzip(gzip.compress(b"abc" * 100), what="x") == b"abc" * 100


@pytest.mark.parametrize(
    "mangle",
    [
        lambda z: z[: len(z) // 2],  # truncated
        lambda z: z[:12] + bytes(len(z) - 12),  # corrupt body
        lambda z: b"PK" + z[2:],  # not gzip at all
    ],
)
def test_gunzip_refuses_corrupt_data(mangle):
    z = gzip.compress(bytes(range(256)) * 50)
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        gunzip(mangle(z), what="file.gz")


def test_gunzip_refuses_oversized_output():
    with pytest.raises(DataError, match="more than the expected 10 bytes"):
        gunzip(gzip.compress(bytes(100)), what="x", max_size=10)
