"""Dataset manifests: what each raw file must be (size, sha256), where it may come from, license.

The manifests live in `pipeline/manifests/<name>.json` and are the single source of truth for
verification: a file is accepted only if its uncompressed size and sha256 match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pipeline.files import sha256_bytes

# The four files every IDX dataset has, in the order the stages use them.
FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class FileSpec:
    key: str  # one of FILE_KEYS
    name: str  # uncompressed file name, e.g. "train-images-idx3-ubyte"
    size: int
    sha256: str
    gz_size: int | None = None
    gz_md5: str | None = None
    gz_sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    license: str
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...]
    fallbacks: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    sha256: str = ""  # of the manifest text itself, recorded in provenance

    def file(self, key: str) -> FileSpec:
        return next(f for f in self.files if f.key == key)


def available() -> list[str]:
    """Names of the datasets that have a manifest."""
    root = resources.files("pipeline.data") / "manifests"
    return sorted(p.name.removesuffix(".json") for p in root.iterdir() if p.name.endswith(".json"))


def load_manifest(name: str) -> Manifest:
    """Load `pipeline/manifests/<name>.json`; unknown names list the known ones."""
    path = resources.files("pipeline.data") / "manifests" / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no manifest for dataset {name!r}; known datasets: {available()}")
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    files = []
    for key in FILE_KEYS:
        spec = raw["files"][key]
        gz = spec.get("gz", {})
        files.append(
            FileSpec(
                key=key,
                name=spec["name"],
                size=int(spec["size"]),
                sha256=spec["sha256"],
                gz_size=gz.get("size"),
                gz_md5=gz.get("md5"),
                gz_sha256=gz.get("sha256"),
            )
        )
    return Manifest(
        name=raw["name"],
        title=raw["title"],
        license=raw["license"],
        files=tuple(files),
        mirrors=tuple(raw.get("mirrors", ())),
        fallbacks=tuple(raw.get("fallbacks", ())),
        sha256=sha256_bytes(text.encode()),
    )
