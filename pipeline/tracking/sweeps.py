"""A sweep in MLflow: one parent run, one child run per job; the parent's status from its
children's."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient


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
    children: int
    finished: int


def finish_parent(client: MlflowClient, parent_id: str) -> SweepOutcome:
    """End the parent run: FINISHED if it has children and every one FINISHED, else FAILED,
    tagged with the counts and the failed jobs' overrides."""
    run = client.get_run(parent_id)
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    bad = [c for c in children if c.info.status != "FINISHED"]
    for key, value in {"children": len(children), "failed_children": len(bad)}.items():
        client.set_tag(parent_id, key, str(value))
    if bad:
        jobs = "; ".join(c.data.tags.get("overrides", c.info.run_id) for c in bad)
        client.set_tag(parent_id, "failed_jobs", jobs[:5000])
    status = RunStatus.FAILED if bad or not children else RunStatus.FINISHED
    client.set_terminated(parent_id, RunStatus.to_string(status))
    return SweepOutcome(run.data.tags.get("sweep", ""), len(children), len(children) - len(bad))
