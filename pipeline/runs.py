"""`python -m pipeline.runs list-stale|close-stale`: MLflow runs left RUNNING by a dead process.

A training killed without a word (SIGKILL, out of memory, a lost node) cannot end its run, which
would stay RUNNING forever. Resuming it (`train.resume: auto`) takes the run over; this command
finds and closes the others. Each RUNNING run is judged from the process it recorded
(`pipeline.tracking.liveness`): on this host, stale when that process is gone; on another host,
only when its heartbeat (renewed every epoch) is older than `--other-hosts-after`; without that
option, another host's runs are listed as unknown and left alone. `close-stale` ends the stale
ones KILLED, tagged `stale` with the reason; live and unknown runs are never touched.

    python -m pipeline.runs list-stale  [--experiment NAME ...] [--other-hosts-after 2h] [--uri]
    python -m pipeline.runs close-stale [--experiment NAME ...] [--other-hosts-after 2h] [--uri]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys

from mlflow.tracking import MlflowClient

from pipeline import runtime
from pipeline.tracking import liveness
from pipeline.tracking.store import TrackingError, check_reachable, redact

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    """'90s', '30m', '2h', '1d' or a plain number of seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 30m, 2h, 1d)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["list-stale", "close-stale"])
    parser.add_argument(
        "--experiment", action="append", help="an experiment's name (repeat; default: all)"
    )
    parser.add_argument(
        "--other-hosts-after",
        type=seconds,
        default=None,
        help="a run of another host is stale after this long without a heartbeat (e.g. 2h)",
    )
    parser.add_argument("--uri", default=None, help="tracking URI (default: as training)")
    args = parser.parse_args(argv)
    with contextlib.suppress(runtime.NotInProject):  # --uri or MLFLOW_TRACKING_URI: anywhere
        runtime.enter_project()
    uri = args.uri or runtime.environment().store_uri(None)
    try:
        check_reachable(uri)
        client = MlflowClient(uri)
        if args.experiment:
            found = {n: client.get_experiment_by_name(n) for n in args.experiment}
            unknown = sorted(n for n, e in found.items() if e is None)
            if unknown:
                raise TrackingError(f"no experiment {', '.join(unknown)} in {redact(uri)}")
            ids = [e.experiment_id for e in found.values()]
        else:
            ids = [e.experiment_id for e in client.search_experiments()]
        judged = liveness.survey(client, ids, other_hosts_after=args.other_hosts_after)
    except TrackingError as exc:
        print(f"runs failed: {exc}", file=sys.stderr)
        return 1
    closing = args.action == "close-stale"
    for j in judged:
        run = j.run
        name = f"{j.experiment}/{run.info.run_name}"
        head = f"{j.verdict.state:8} {run.info.run_id}  {name}"
        if closing and j.verdict.state == "stale":
            liveness.close(client, run, f"{j.verdict.why} (closed by pipeline.runs close-stale)")
            head = f"closed   {run.info.run_id}  {name}  (KILLED)"
        print(f"{head}: {j.verdict.why}")
    counts = {s: sum(j.verdict.state == s for j in judged) for s in ("stale", "live", "unknown")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    closed = f"; {counts['stale']} closed (KILLED)" if closing else ""
    print(f"{len(judged)} RUNNING runs: {summary}{closed}")
    if counts["unknown"]:
        print("runs of other hosts are judged only with --other-hosts-after (e.g. 2h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
