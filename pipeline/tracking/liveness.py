"""Is a RUNNING MLflow run still being run? Runs whose process died without ending them (SIGKILL,
out of memory, a lost node) stay RUNNING forever unless something decides they are stale.

Every training run and sweep parent records the process running it, as tags: `host`, `pid`,
`process_start` (Linux: the boot id and the process's start time in clock ticks, so a pid
reused by another process is not mistaken for it) and a `heartbeat` (UTC time, renewed after
every epoch). A RUNNING run is judged:
- on this host: live while its process exists (and started when recorded), else stale;
- on another host: stale only when its heartbeat is older than a limit the caller chooses
  (`other_hosts_after`); without one, unknown (never closed);
- without these tags (logged by older code or another tool): like another host's, with its
  start time as its last sign of life;
- a sweep's parent: stale only when its own process is judged stale and none of its RUNNING
  children is live (Slurm jobs outlive a killed launcher).
`close` ends a stale run KILLED with a tag `stale` saying why, at its last heartbeat.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

HOST, PID, START, HEARTBEAT, STALE = "host", "pid", "process_start", "heartbeat", "stale"


def _proc_start(pid: int) -> str | None:
    """'<boot id>/<start time in clock ticks>' of process `pid` (Linux), None where unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return f"{boot}/{fields[19]}"  # field 22 of proc(5), starttime


def heartbeat_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def process_tags() -> dict[str, str]:
    """Tags naming this process, and a first heartbeat (module docstring)."""
    pid = os.getpid()
    tags = {HOST: socket.gethostname(), PID: str(pid), HEARTBEAT: heartbeat_now()}
    start = _proc_start(pid)
    return tags | ({START: start} if start else {})


def alive(pid: int, start: str | None) -> bool:
    """Whether process `pid` of this host runs, and is the one that started at `start`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    now = _proc_start(pid)
    return start is None or now is None or now == start


@dataclass(frozen=True)
class Verdict:
    state: str  # "live", "stale" or "unknown"
    why: str


def duration(seconds: float) -> str:
    """ "1h 05m", "4m 10s": a duration as people read it."""
    s = int(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def judge(
    run: Run,
    *,
    host: str | None = None,
    now: float | None = None,
    other_hosts_after: float | None = None,
    is_alive: Callable[[int, str | None], bool] = alive,
) -> Verdict:
    """Whether the RUNNING `run`'s process still runs (module docstring); other_hosts_after in
    seconds. host and now default to this host and the current time."""
    host = socket.gethostname() if host is None else host
    now = time.time() if now is None else now
    tags = run.data.tags
    if tags.get(HOST) == host and tags.get(PID, "").isdigit():
        pid = int(tags[PID])
        if is_alive(pid, tags.get(START)):
            return Verdict("live", f"process {pid} on {host} is running")
        return Verdict("stale", f"process {pid} on {host} is gone")
    if HEARTBEAT in tags:
        last = datetime.strptime(tags[HEARTBEAT], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        seen, where = last.timestamp(), f"process {tags.get(PID, '?')} on {tags.get(HOST, '?')}"
    else:
        seen, where = (run.info.start_time or 0) / 1000, "no process recorded; started"
    age = max(0.0, now - seen)
    if other_hosts_after is None:
        return Verdict("unknown", f"{where}, last heard of {duration(age)} ago")
    if age > other_hosts_after:
        return Verdict("stale", f"{where}: no heartbeat for {duration(age)}")
    return Verdict("live", f"{where}: heartbeat {duration(age)} ago")


@dataclass(frozen=True)
class Judged:
    run: Run
    experiment: str
    verdict: Verdict


def running_runs(client: MlflowClient, experiment_ids: list[str]) -> list[Run]:
    """Every RUNNING run of these experiments."""
    if not experiment_ids:
        return []
    return client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=50000)


def survey(
    client: MlflowClient, experiment_ids: list[str], *, other_hosts_after: float | None = None
) -> list[Judged]:
    """Every RUNNING run of these experiments, judged (module docstring), oldest first."""
    runs = running_runs(client, experiment_ids)
    names = {e: client.get_experiment(e).name for e in {r.info.experiment_id for r in runs}}
    verdicts = {r.info.run_id: judge(r, other_hosts_after=other_hosts_after) for r in runs}
    for r in runs:  # a parent lives on while a child of it does
        if r.data.tags.get("sweep_role") != "parent" or verdicts[r.info.run_id].state == "live":
            continue
        children = [c for c in runs if c.data.tags.get("mlflow.parentRunId") == r.info.run_id]
        live = [c for c in children if verdicts[c.info.run_id].state == "live"]
        if live:
            why = f"its launcher is gone but {len(live)} of its jobs still run"
            verdicts[r.info.run_id] = Verdict("live", why)
    ordered = sorted(runs, key=lambda r: r.info.start_time or 0)
    return [Judged(r, names[r.info.experiment_id], verdicts[r.info.run_id]) for r in ordered]


def close(client: MlflowClient, run: Run, why: str) -> None:
    """End a stale run KILLED, tagged with why, at its last heartbeat (or now)."""
    beat = run.data.tags.get(HEARTBEAT)
    end = None
    if beat:
        last = datetime.strptime(beat, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        end = int(last.timestamp() * 1000)
    client.set_tag(run.info.run_id, STALE, why[:5000])
    client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED), end_time=end)
