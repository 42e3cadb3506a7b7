"""A sweep in MLflow: one parent run, one child run per job; the parent's status from what the
jobs did.

A launcher's own account of its jobs is not trusted: without Slurm accounting `sacct` fails and
submitit reports states it cannot see, and a job can die without a word (SIGKILL, a lost node, a
lost tracking server). So `finish_parent` compares the jobs the sweep launched (their overrides,
by Hydra job number) with the child runs they logged: a job is done when its latest child run
FINISHED; a job with no run, or whose run is still RUNNING after every job ended, failed, and
the parent says which and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

MAX_TAG = 5000  # MLflow's limit on a tag value


def find_parent(client: MlflowClient, experiment_id: str, name: str):
    """The parent run of the sweep called `name`, or None."""
    found = client.search_runs(
        [experiment_id], f"tags.sweep = '{name}' and tags.sweep_role = 'parent'", max_results=1
    )
    return found[0] if found else None


def create_parent(client: MlflowClient, experiment_id: str, *, name: str, command: str) -> str:
    """Create the sweep's parent run (left RUNNING until `finish_parent`); returns its id."""
    parent = client.create_run(
        experiment_id,
        run_name=name,
        tags={"sweep": name, "sweep_role": "parent", "command": command},
    )
    return parent.info.run_id


@dataclass(frozen=True)
class SweepOutcome:
    name: str
    jobs: int  # jobs launched (or, when unknown, child runs)
    finished: int  # jobs whose run FINISHED
    failures: tuple[str, ...] = ()  # "<overrides>: <what happened>", one per job not finished


def _latest_per_job(children: list[Run]) -> dict[str, Run]:
    """The latest child run per Hydra job number (a retried job logs a run per attempt)."""
    latest: dict[str, Run] = {}
    for run in sorted(children, key=lambda r: r.info.start_time or 0):
        latest[run.data.tags.get("hydra_job_num", run.info.run_id)] = run
    return latest


def finish_parent(
    client: MlflowClient,
    parent_id: str,
    *,
    jobs: Sequence[str] | None = None,
    notes: Mapping[int, str] | None = None,
    ended: bool = True,
    interrupted: bool = False,
) -> SweepOutcome:
    """End the parent run from what its jobs did, and tag it with the counts and the failures.

    Inputs: jobs: the overrides of each job the sweep launched, indexed by Hydra job number
    (None: unknown; the child runs are the jobs); notes: what the launcher saw of job number i
    (e.g. "Slurm job 12_3 CANCELLED"), added to its failure; ended: every job has ended, so a
    child run still RUNNING was abandoned (its process died): it is ended FAILED (KILLED if
    its note says it was cancelled); interrupted: the sweep itself was stopped (Ctrl-C).
    The parent ends FINISHED if every job's run finished, KILLED if interrupted, else FAILED.
    """
    notes = dict(notes or {})
    run = client.get_run(parent_id)
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=50000
    )
    latest = _latest_per_job(children)
    if jobs is None:
        expected = {key: r.data.tags.get("overrides", key) for key, r in latest.items()}
    else:
        expected = {str(i): overrides for i, overrides in enumerate(jobs)}
    failures = []
    for key, overrides in expected.items():
        child = latest.get(key)
        note = notes.get(int(key), "") if key.isdigit() else ""
        if child is None:
            what = "no MLflow run (the job never started training)"
        elif child.info.status == "FINISHED":
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
        "children": len(children),
        "failed_children": sum(r.info.status != "FINISHED" for r in latest.values()),
        "failed_jobs_count": len(failures),
    }
    for key, value in tags.items():
        client.set_tag(parent_id, key, str(value))
    if failures:
        client.set_tag(parent_id, "failed_jobs", "; ".join(failures)[:MAX_TAG])
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
    )
