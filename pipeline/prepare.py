"""DVC stage `prepare`: parse the raw IDX files and write the prepared dataset file.

    python -m pipeline.prepare [--params params.yaml]

Reads the `data` params and the four files in `data.raw_dir`, calls
`pipeline.data.prepared.prepare_arrays`, and writes `data.prepared` (format described there).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import ConfigError, load_params, stage_params
from pipeline.data.manifest import load_manifest
from pipeline.data.prepared import prepare_arrays
from pipeline.files import DataError, save_npz


def main(argv: list[str] | None = None) -> int:
    params_file = stage_params(argv, __doc__.split("\n")[0])
    try:
        cfg, _ = load_params(params_file)
        raw = Path(cfg.data.raw_dir)
        files = {s.key: (raw / s.name).read_bytes() for s in load_manifest(cfg.data.name).files}
        arrays = prepare_arrays(files, val_size=cfg.data.val_size, split_seed=cfg.data.split_seed)
    except FileNotFoundError as exc:
        print(f"prepare failed: {exc.filename} is missing; run `dvc repro fetch`", file=sys.stderr)
        return 1
    except (ConfigError, DataError) as exc:
        print(f"prepare failed: {exc}", file=sys.stderr)
        return 1
    save_npz(Path(cfg.data.prepared), arrays)
    n_val = len(arrays["val_index"])
    print(
        f"prepare: {cfg.data.name}: {len(arrays['train_labels']) - n_val} fit + {n_val} validation"
        f" + {len(arrays['test_labels'])} test images -> {cfg.data.prepared}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
