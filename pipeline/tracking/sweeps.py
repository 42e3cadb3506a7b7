"""A sweep in MLflow: one parent run, one child run per job; the parent's status from what the
jobs did.

A launcher's own account of its jobs is not trusted: without Slurm accounting `sacct` fails and
submitit reports states it cannot see, and a job can die without a word (SIGKILL, a lost node, a
lost tracking server). So `finish_parent` compares the jobs the sweep launched (their overrides)
with the child runs they logged: a job is done when its latest child run FINISHED; a job with no
run, or whose run is still RUNNING after every job ended, failed, and the parent says which and
why.

A sweep is resumable: running it again under the same name, with the same jobs, reopens the same
parent run. A job is known by its overrides (`job_identity`: sorted, without the keys that only
say how a run resumes), not by its Hydra job number, so each job counts once however many times
the sweep ran: `finished_job` tells a job whether a FINISHED run of it, with the same config,
code and data, already exists (it is then skipped); a job interrupted with a checkpoint
continues its own run; the others train a new run, which supersedes the old one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from pipeline.config import RESUME_KEYS
from pipeline.tracking import liveness

MAX_TAG = 5000  # MLflow's limit on a tag value
JOBS_SHA = "jobs_sha256"  # the parent's tag: which jobs the sweep is made of
NOT_COMPARED = ("train.batches_per_epoch",)  # params derived from the others


def job_identity(overrides: str) -> str:
    """A job of a sweep, as its overrides say it: sorted, without `RESUME_KEYS` (so that
    `train.resume=never` on a rerun names the same jobs)."""
    kept = [o for o in overrides.split() if o.split("=", 1)[0].lstrip("+~") not in RESUME_KEYS]
    return " ".join(sorted(kept))


def jobs_sha256(jobs: Sequence[str]) -> str:
    """The hash of a sweep's set of jobs (their identities), recorded on its parent run."""
    identities = sorted(job_identity(j) for j in jobs)
    return hashlib.sha256(json.dumps(identities).encode()).hexdigest()


def find_parent(client: MlflowClient, experiment_id: str, name: str):
    """The parent run of the sweep called `name`, or None."""
    found = client.search_runs(
        [experiment_id], f"tags.sweep = '{name}' and tags.sweep_role = 'parent'", max_results=1
    )
    return found[0] if found else None


def create_parent(
    client: MlflowClient,
    experiment_id: str,
    *,
    name: str,
    command: str,
    jobs: Sequence[str] | None = None,
) -> str:
    """Create the sweep's parent run (left RUNNING until `finish_parent`), tagged with the
    launching process (`liveness`) and, when known, its jobs' hash; returns its id."""
    tags = {"sweep": name, "sweep_role": "parent", "command": command, "launches": "1"}
    if jobs is not None:
        tags[JOBS_SHA] = jobs_sha256(jobs)
    parent = client.create_run(experiment_id, run_name=name, tags=tags | liveness.process_tags())
    return parent.info.run_id


def reopen_parent(client: MlflowClient, parent: Run, *, command: str) -> None:
    """A sweep run again: its parent run RUNNING again, owned by this launching process."""
    launches = int(parent.data.tags.get("launches", "1")) + 1
    run_id = parent.info.run_id
    for key, value in {"command": command, "launches": str(launches)}.items():
        client.set_tag(run_id, key, value)
    for key, value in liveness.process_tags().items():
        client.set_tag(run_id, key, value)
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))


def children(client: MlflowClient, parent: Run) -> list[Run]:
    return client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=50000,
    )


def latest_per_job(runs: list[Run], jobs: Sequence[str] | None = None) -> dict[str, Run]:
    """The latest child run of each job (`job_identity`; a retried or rerun job logs a run per
    attempt, a resumed one continues its run). A run without an `overrides` tag is known by its
    Hydra job number: `jobs[number]` when given."""
    latest: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        latest[_job_of(run, jobs)] = run
    return latest


def _job_of(run: Run, jobs: Sequence[str] | None) -> str:
    tags = run.data.tags
    if "overrides" in tags:
        return job_identity(tags["overrides"])
    num = tags.get("hydra_job_num", "")
    if jobs is not None and num.isdigit() and int(num) < len(jobs):
        return job_identity(jobs[int(num)])
    return num or run.info.run_id


def survey(client: MlflowClient, parent: Run, jobs: Sequence[str]) -> dict[str, int]:
    """A sweep about to run again: how many of its jobs stand where (by their latest run):
    finished, interrupted (KILLED, FAILED, or RUNNING with its process gone), not run."""
    latest = latest_per_job(children(client, parent), jobs)
    counts = {"finished": 0, "interrupted": 0, "not run": 0}
    for job in {job_identity(j) for j in jobs}:
        run = latest.get(job)
        if run is None:
            counts["not run"] += 1
        elif run.info.status == "FINISHED":
            counts["finished"] += 1
        else:
            counts["interrupted"] += 1
    return counts


def differences(
    run: Run, *, params: Mapping[str, Any], code_sha256: str, data_sha256: str
) -> list[str]:
    """How a logged run differs from the run these would make: its params (the configuration,
    without `RESUME_KEYS`), code and data; empty when it is the same run."""
    logged = {k: v for k, v in run.data.params.items() if k not in (*RESUME_KEYS, *NOT_COMPARED)}
    wanted = {k: str(v) for k, v in params.items() if k not in RESUME_KEYS}
    keys = sorted(set(logged) | set(wanted))
    changed = [
        f"{k} {logged.get(k)} -> {wanted.get(k)}" for k in keys if logged.get(k) != wanted.get(k)
    ]
    out = (
        [f"config: {', '.join(changed[:4])}" + (" ..." if len(changed) > 4 else "")]
        if changed
        else []
    )
    if run.data.tags.get("code_sha256") != code_sha256:
        out.append("code" if "code_sha256" in run.data.tags else "code (not recorded)")
    if run.data.tags.get("data_sha256") != data_sha256:
        out.append("data")
    return out


def finished_job(
    client: MlflowClient,
    parent_id: str,
    *,
    job: str,
    params: Mapping[str, Any],
    code_sha256: str,
    data_sha256: str,
) -> tuple[Run | None, str | None]:
    """A sweep job about to train: (its FINISHED run with the same config, code and data, to
    skip to; else None) and what to say about an earlier run of it, if there is one."""
    parent = client.get_run(parent_id)
    run = latest_per_job(children(client, parent)).get(job_identity(job))
    if run is None:
        return None, None
    rid, status = run.info.run_id, run.info.status
    if status != "FINISHED":
        return None, f"its run {rid} ended {status}" if status != "RUNNING" else None
    diffs = differences(run, params=params, code_sha256=code_sha256, data_sha256=data_sha256)
    if diffs:
        return None, f"its FINISHED run {rid} differs ({'; '.join(diffs)}): training it again"
    return run, None


@dataclass(frozen=True)
class SweepOutcome:
    name: str
    jobs: int  # jobs launched (or, when unknown, child runs)
    finished: int  # jobs whose run FINISHED
    failures: tuple[str, ...] = ()  # "<overrides>: <what happened>", one per job not finished
    # of the finished jobs, by what this launch did: {"skipped": n, "resumed": n, "trained": n}
    done: Mapping[str, int] | None = None


def finish_parent(
    client: MlflowClient,
    parent_id: str,
    *,
    jobs: Sequence[str] | None = None,
    notes: Mapping[int, str] | None = None,
    ended: bool = True,
    interrupted: bool = False,
    since_ms: int | None = None,
) -> SweepOutcome:
    """End the parent run from what its jobs did, and tag it with the counts and the failures.

    Inputs: jobs: the overrides of each job the sweep launched, indexed by Hydra job number
    (None: unknown; the child runs are the jobs); notes: what the launcher saw of job number i
    (e.g. "Slurm job 12_3 CANCELLED"), added to its failure; ended: every job has ended, so a
    child run still RUNNING was abandoned (its process died): it is ended FAILED (KILLED if
    its note says it was cancelled); interrupted: the sweep itself was stopped (Ctrl-C);
    since_ms: when this launch started (a sweep run again): the finished jobs are then counted
    by what this launch did to them (`SweepOutcome.done`).
    Each job counts once, by its latest run (`latest_per_job`), however often the sweep ran.
    The parent ends FINISHED if every job's run finished, KILLED if interrupted, else FAILED.
    """
    notes = dict(notes or {})
    run = client.get_run(parent_id)
    runs = children(client, run)
    latest = latest_per_job(runs, jobs)
    if jobs is None:
        expected = {key: (r.data.tags.get("overrides", key), None) for key, r in latest.items()}
    else:
        expected = {job_identity(j): (j, i) for i, j in enumerate(jobs)}
    failures = []
    done = {"skipped": 0, "resumed": 0, "trained": 0}
    for key, (overrides, num) in expected.items():
        child = latest.get(key)
        note = notes.get(num, "") if num is not None else ""
        if child is None:
            what = "no MLflow run (the job never started training)"
        elif child.info.status == "FINISHED":
            done[_what_launch_did(child, since_ms)] += 1
            continue
        elif child.info.status == "RUNNING" and ended:
            status = "KILLED" if "CANCELLED" in note else "FAILED"
            client.set_tag(child.info.run_id, "sweep_note", "its job ended without ending it")
            client.set_terminated(child.info.run_id, status)
            what = f"run left RUNNING by its job, ended {status} (run {child.info.run_id})"
        else:
            what = f"{child.info.status} (run {child.info.run_id})"
        failures.append(f"{overrides or '(no overrides)'}: {what}" + (f"; {note}" if note else ""))
    tags = {
        "jobs": len(expected),
        "children": len(runs),
        "failed_children": sum(
            latest[k].info.status != "FINISHED" for k in expected if k in latest
        ),
        "failed_jobs_count": len(failures),
    }
    for key, value in tags.items():
        client.set_tag(parent_id, key, str(value))
    if failures:
        client.set_tag(parent_id, "failed_jobs", "; ".join(failures)[:MAX_TAG])
    elif "failed_jobs" in run.data.tags:  # an earlier launch's failures, now made good
        client.delete_tag(parent_id, "failed_jobs")
    if interrupted:
        status = RunStatus.KILLED
    elif failures or not expected:
        status = RunStatus.FAILED
    else:
        status = RunStatus.FINISHED
    client.set_terminated(parent_id, RunStatus.to_string(status))
    return SweepOutcome(
        run.data.tags.get("sweep", ""),
        len(expected),
        len(expected) - len(failures),
        tuple(failures),
        done if since_ms is not None else None,
    )


def _what_launch_did(run: Run, since_ms: int | None) -> str:
    """A FINISHED job's run, seen from a launch that started at since_ms: skipped (it had
    finished before), resumed (started before, finished since) or trained (started since)."""
    if since_ms is None or (run.info.start_time or 0) >= since_ms:
        return "trained"
    return "skipped" if (run.info.end_time or 0) < since_ms else "resumed"
