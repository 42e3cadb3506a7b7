"""`python -m pipeline.server`: the team's MLflow tracking server, until Ctrl-C or SIGTERM.

    python -m pipeline.server \\
        --backend-store-uri postgresql+psycopg://mlflow@127.0.0.1:5433/mlflow \\
        --artifacts-destination /srv/mlflow/artifacts [--host 127.0.0.1] [--port 5000]

A lean `mlflow server` (one worker, no job runner; `pipeline.tracking.server`) over a database,
storing every run's artifacts itself (`--artifacts-destination`: a folder on its disk, or
`s3://bucket/prefix`), so that clients on any machine log and read them through it. It binds to
127.0.0.1 unless `--host` says otherwise (0.0.0.0: every interface, for a cluster's nodes).
The database password comes from PGPASSWORD or ~/.pgpass (PGPASSFILE), never the URI; a
database that is down or refuses the credentials fails here, naming it, before the server
starts. Clients then use `MLFLOW_TRACKING_URI=http://<host>:<port>` (or `tracking.uri=`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from pipeline.tracking.server import Server
from pipeline.tracking.store import TrackingError, redact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend-store-uri",
        required=True,
        help="postgresql+psycopg://USER@HOST:PORT/DB (password in PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument(
        "--artifacts-destination",
        required=True,
        help="where the server stores artifacts: a folder, or s3://bucket/prefix",
    )
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0: reachable from others")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--log", type=Path, default=None, help="server log (default: stdout)")
    args = parser.parse_args(argv)
    destination = args.artifacts_destination
    if "://" not in destination:  # a folder: absolute, so the server's cwd does not matter
        Path(destination).mkdir(parents=True, exist_ok=True)
        destination = str(Path(destination).resolve())
    server = Server(
        args.backend_store_uri,
        env=os.environ,
        host=args.host,
        port=args.port,
        artifacts_destination=destination,
        log_path=args.log,
    )
    # SIGTERM ends the server like Ctrl-C: through `finally`, which stops its process group.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.start()
        print(
            f"MLflow server {server.public_uri} (store {redact(args.backend_store_uri)}, "
            f"artifacts {destination}); clients: "
            f"export MLFLOW_TRACKING_URI={server.public_uri}",
            flush=True,
        )
        server.proc.wait()
        print(f"mlflow server exited ({server.proc.returncode})", file=sys.stderr)
        return 1
    except TrackingError as exc:
        print(f"server not started: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
