"""DVC stage `fetch`: the four raw IDX files of a dataset, verified against its manifest.

    python -m pipeline.fetch [--params params.yaml]

Reads the `data` and `fetch` params and calls `pipeline.data.fetching.fetch` (sources, order
and verification are described there). Writes `data.raw_dir`: the four files and provenance.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import ConfigError, load_params, stage_params
from pipeline.data.fetching import FetchError, fetch
from pipeline.data.manifest import load_manifest


def main(argv: list[str] | None = None) -> int:
    params_file = stage_params(argv, __doc__.split("\n")[0])
    try:
        cfg, _ = load_params(params_file)
        fetch(
            load_manifest(cfg.data.name),
            Path(cfg.data.raw_dir),
            network=cfg.fetch.network,
            timeout_s=cfg.fetch.timeout_s,
            local_dir=Path(cfg.fetch.local_dir) if cfg.fetch.local_dir else None,
        )
    except (ConfigError, FetchError) as exc:
        print(f"fetch failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
