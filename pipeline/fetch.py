"""DVC stage `fetch`: the four raw IDX files of a dataset, verified against its manifest.

    python -m pipeline.fetch [--params params.yaml]

Reads the `data` and `fetch` params and calls `pipeline.data.fetching.fetch` (sources, order
and verification are described there). Writes `data.raw_dir`: the four files and provenance.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import interrupts, runtime
from pipeline.config import ConfigError, load_params, stage_params
from pipeline.data.fetching import FetchError, fetch
from pipeline.data.manifest import load_manifest


def main(argv: list[str] | None = None) -> int:
    params_file = stage_params(argv, __doc__.split("\n")[0])
    raw_dir = None
    with interrupts.raising():
        try:
            runtime.enter_project()
            cfg, _ = load_params(params_file)
            raw_dir = Path(cfg.data.raw_dir)
            fetch(
                load_manifest(cfg.data.name),
                raw_dir,
                network=cfg.fetch.network,
                timeout_s=cfg.fetch.timeout_s,
                local_dir=Path(cfg.fetch.local_dir) if cfg.fetch.local_dir else None,
            )
        except (ConfigError, FetchError, runtime.NotInProject) as exc:
            print(f"fetch failed: {exc}", file=sys.stderr)
            return 1
        except (interrupts.Interrupted, KeyboardInterrupt):
            where = f" in {raw_dir}" if raw_dir else ""
            print(
                f"fetch interrupted: files already verified{where} stay, no partial file was "
                "written; rerun to fetch the rest",
                file=sys.stderr,
            )
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
