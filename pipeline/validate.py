"""DVC stage `validate`, the first stage: check params.yaml before DVC removes any output.

    python -m pipeline.validate [--params params.yaml]

DVC deletes a stage's outputs just before it runs the stage, so a bad value found by the stage
itself costs its old outputs. Every other stage depends on this one, which runs whenever any
param changes: it checks the whole configuration against the schema (pipeline/config.py), that
the dataset has a manifest, and that the tracking store can be used (an unreachable server, a
read-only or damaged SQLite file), and fails, naming the key or the store, before anything is
deleted. Its output, params.checked, never changes: it orders the stages without making the
others rerun.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import runtime
from pipeline.config import ConfigError, load_params, stage_params
from pipeline.data.manifest import load_manifest
from pipeline.files import atomic_write_bytes
from pipeline.tracking import store

CHECKED = "params.checked"
STAMP = b"params.yaml passed `python -m pipeline.validate` (schema, manifest, tracking store)\n"
UNDO = (
    "Nothing was changed. If `dvc exp run -S` put the value there, params.yaml keeps it: "
    "`git checkout params.yaml` restores the committed one."
)


def main(argv: list[str] | None = None) -> int:
    params_file = stage_params(argv, __doc__.split("\n")[0])
    try:
        runtime.enter_project()
        cfg, _ = load_params(params_file)
        load_manifest(cfg.data.name)
        env = runtime.environment()
        uri = env.store_uri(cfg.tracking.uri)
        if (path := store.sqlite_path(uri)) is not None:
            store.check_sqlite(path)
        else:
            store.check_reachable(uri)
    except (ConfigError, KeyError, store.TrackingError, runtime.NotInProject) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else exc  # KeyError quotes its text
        print(f"validate failed: {message}\n{UNDO}", file=sys.stderr)
        return 1
    atomic_write_bytes(Path(CHECKED), STAMP)
    print(f"validate: {params_file} is valid; tracking store {store.redact(uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
