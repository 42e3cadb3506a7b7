"""Files every stage relies on: atomic writes, hashes, and deterministic npz, JSON and CSV.

Nothing is ever written in place: outputs go to a temporary file in the destination folder and
are renamed over the destination only once complete, so an interrupted or failed stage leaves the
previous good file (or nothing), never a partial one. Every format here is a function of the
values alone (no timestamps, no run ids, stable float text), so the same values always give the
same bytes: what `dvc repro -f` relies on.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline import interrupts

_UMASK = os.umask(0)
os.umask(_UMASK)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


class DataError(ValueError):
    """Input data that is missing, corrupt, truncated or not what the manifest promises."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256s(root: Path, suffixes: Sequence[str]) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` whose name ends with one of
    `suffixes`, in path order (caches such as __pycache__ left out)."""
    root = Path(root)
    found = (
        p
        for p in root.rglob("*")
        if p.is_file() and p.name.endswith(tuple(suffixes)) and "__pycache__" not in p.parts
    )
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(found)}


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


def write_together(contents: Mapping[Path, bytes]) -> None:
    """Write several files so that each ends up either as it was or with its new contents, all
    of them together: every file is written to a temporary file first, then all are renamed
    into place with Ctrl-C and SIGTERM deferred."""
    staged: list[tuple[Path, Path]] = []
    try:
        for dest, data in contents.items():
            dest = Path(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            staged.append((Path(tmp), dest))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
        with interrupts.deferred():
            for tmp, dest in staged:
                os.replace(tmp, dest)
            staged.clear()
    finally:
        for tmp, _ in staged:  # an error or a signal before the renames: nothing changed
            tmp.unlink(missing_ok=True)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed `.npz` whose bytes depend only on the arrays (see `save_npz`)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(
                member, np.ascontiguousarray(arrays[name]), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def json_bytes(values: Mapping[str, float | int | str]) -> bytes:
    return (json.dumps(dict(values), indent=2, sort_keys=True) + "\n").encode()


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence]) -> bytes:
    """CSV with floats in repr form (round-trips exactly, stable across runs)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return buf.getvalue().encode()


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed `.npz` whose bytes depend only on the arrays; atomic.

    np.savez stamps the current time into every zip entry; here entries are written in name
    order with a fixed timestamp.
    """
    atomic_write_bytes(path, npz_bytes(arrays))


def read_npz(path: Path, keys: Sequence[str] | None = None, *, fix: str) -> dict[str, np.ndarray]:
    """The named arrays of an `.npz` (all of them when `keys` is None), never unpickling.

    Raises DataError naming the file and ending with `fix` (the command that rebuilds it) when
    the file is missing, is not an npz, or lacks a key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: {fix}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in (npz.files if keys is None else keys)}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable or incomplete ({exc}); {fix}") from exc


def write_json(path: Path, values: Mapping[str, float | int | str]) -> None:
    atomic_write_bytes(path, json_bytes(values))


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    atomic_write_bytes(path, csv_bytes(header, rows))


def _cell(v: object) -> object:
    if isinstance(v, float | np.floating):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v
