"""`python -m pipeline.verify RUN_ID`: retrain a logged MLflow run and check its weights' hash.

    python -m pipeline.verify RUN_ID [--tracking-uri URI] [--portable on|off]

Checks the run's git commit out in a temporary worktree, gets the prepared data by the sha256
the run logged (the work tree, DVC's cache or remote, else fetch and prepare), retrains with the
logged configuration (its params.yaml artifact) under the logged BLAS thread count and portable
mode, and compares the weights' sha256 with the logged one (`pipeline.share.verify`). Prints
MATCH, or MISMATCH naming what differs (code, data, config, environment); exit 0 only on MATCH.
A run logged from a dirty work tree, an unknown run id or a commit this repository lacks is an
error (exit 1). The store: --tracking-uri, else MLFLOW_TRACKING_URI, else tracking.uri of
params.yaml, else <repo root>/mlflow.db.
"""

from __future__ import annotations

import argparse
import sys

from mlflow.tracking import MlflowClient

from pipeline import runtime
from pipeline.config import ConfigError, load_params
from pipeline.share.checkout import CheckoutError
from pipeline.share.verify import VerifyError, verify
from pipeline.tracking import store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_id", help="the MLflow run id")
    ap.add_argument("--tracking-uri", help="the MLflow store holding the run")
    ap.add_argument(
        "--portable",
        choices=["on", "off"],
        help="retrain in this portable mode instead of the logged one",
    )
    args = ap.parse_args(argv)
    env = runtime.environment()
    root = env.root
    try:
        configured = load_params(root / "params.yaml")[0].tracking.uri
    except ConfigError:
        configured = None
    uri = args.tracking_uri or env.store_uri(configured)
    try:
        store.check_reachable(uri)
        verdict = verify(
            client=MlflowClient(uri),
            run_id=args.run_id,
            repo=root,
            env=runtime.inherited(),
            python=sys.executable,
            portable=None if args.portable is None else args.portable == "on",
        )
    except (VerifyError, CheckoutError, store.TrackingError) as exc:
        print(f"verify failed: {exc}", file=sys.stderr)
        return 1
    print(verdict.report())
    return 0 if verdict.match else 1


if __name__ == "__main__":
    sys.exit(main())
