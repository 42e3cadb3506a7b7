"""Hashes, safe decompression and atomic writes: the guarantees every data stage relies on.

Nothing is ever written in place: outputs go to a temporary file in the destination folder and
are renamed over the destination only once complete, so an interrupted or failed stage leaves the
previous good file (or nothing), never a partial one.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """Input data that is corrupt, truncated or not what the manifest promises."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def gunzip(data: bytes, *, what: str, max_size: int | None = None) -> bytes:
    """Decompress gzip bytes, turning every kind of corruption into one clear DataError.

    Inputs:
    - data: the gzip stream.
    - what: a name for the message ("train-images-idx3-ubyte.gz from <url>").
    - max_size: refuse output larger than this (a guard against a substituted file).
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            out = fh.read() if max_size is None else fh.read(max_size + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{what}: corrupt or truncated gzip data ({exc})") from exc
    if max_size is not None and len(out) > max_size:
        raise DataError(f"{what}: decompresses to more than the expected {max_size} bytes")
    return out


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it over `dest` only if the block succeeds.

    On any exception (Ctrl-C included) the temporary file is removed and `dest` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write `data` to `dest` atomically (see `atomic_path`)."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
