"""DVC stage `prepare`: parse the raw IDX files and write the prepared dataset file.

    python -m pipeline.prepare [--params params.yaml]

Reads the `data` params and the four files in `data.raw_dir` (each checked against the
dataset's manifest first), calls `pipeline.data.prepared.prepare_arrays`, and writes
`data.prepared` (format described there).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import interrupts, runtime
from pipeline.config import ConfigError, load_params, stage_params
from pipeline.data.manifest import Manifest, load_manifest
from pipeline.data.prepared import prepare_arrays
from pipeline.files import DataError, save_npz, sha256_bytes


def read_verified(raw: Path, manifest: Manifest) -> dict[str, bytes]:
    """The four raw files' bytes, each checked against the manifest (size and sha256)."""
    files = {}
    for spec in manifest.files:
        path = raw / spec.name
        if not path.is_file():
            raise DataError(f"{path} is missing: fetch it with `dvc repro fetch`")
        data = path.read_bytes()
        if len(data) != spec.size or sha256_bytes(data) != spec.sha256:
            raise DataError(
                f"{path} does not match the manifest (pipeline/data/manifests/{manifest.name}."
                f"json: size {spec.size}, sha256 {spec.sha256[:12]}...): it is corrupt or was "
                f"replaced. Delete it and run `dvc repro fetch` to fetch a verified copy"
            )
        files[spec.key] = data
    return files


def main(argv: list[str] | None = None) -> int:
    params_file = stage_params(argv, __doc__.split("\n")[0])
    with interrupts.raising():
        try:
            runtime.enter_project()
            cfg, _ = load_params(params_file)
            files = read_verified(Path(cfg.data.raw_dir), load_manifest(cfg.data.name))
            arrays = prepare_arrays(
                files, val_size=cfg.data.val_size, split_seed=cfg.data.split_seed
            )
            save_npz(Path(cfg.data.prepared), arrays)
        except (ConfigError, DataError, runtime.NotInProject) as exc:
            print(f"prepare failed: {exc}", file=sys.stderr)
            return 1
        except (interrupts.Interrupted, KeyboardInterrupt):
            print("prepare interrupted: the prepared file was not changed", file=sys.stderr)
            return 130
    n_val = len(arrays["val_index"])
    print(
        f"prepare: {cfg.data.name}: {len(arrays['train_labels']) - n_val} fit + {n_val} validation"
        f" + {len(arrays['test_labels'])} test images -> {cfg.data.prepared}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
