"""One MLflow run per training: it ends FINISHED only when everything was logged; an exception
ends it FAILED, Ctrl-C, SIGTERM, SIGUSR1 or SIGUSR2 ends it KILLED. Signals are acted on between
batches (`pipeline.interrupts`), never inside MLflow's own database calls. A run interrupted
earlier can be continued (`run(run_id=...)`); `MetricLog` then logs each metric step once."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import interrupts

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MAX_DIGEST = 36  # MLflow's limit on a dataset digest's length


@dataclass(frozen=True)
class DatasetInfo:
    """What a run trained on, for MLflow's dataset tracking (the UI's Dataset column)."""

    name: str  # data.name
    path: Path  # the prepared file
    sha256: str  # of the prepared file
    provenance: str  # where the raw files came from (provenance.json's sources)


def log_dataset(info: DatasetInfo, context: str = "training") -> None:
    """Log `info` as the active run's input: name, digest (the sha256's first 36 hex digits,
    MLflow's limit; the whole one is the `data_sha256` tag), source (the prepared file) and the
    raw files' provenance as a tag."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local file
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(info.path))
    dataset = MetaDataset(source=source, name=info.name, digest=info.sha256[:MAX_DIGEST])
    for attempt in range(3):
        # MLflow's store inserts a dataset it has not seen with no lock: runs logging the same
        # new dataset at once can collide ("duplicate key ... dataset_pk" on PostgreSQL). The
        # loser's retry finds the row and links to it.
        try:
            mlflow.log_input(dataset, context=context, tags={"provenance": info.provenance[:500]})
            return
        except MlflowException:
            if attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: MLflow params as dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _log_batch(
    client: MlflowClient, run_id: str, metrics: list[Metric], tags: Mapping[str, str] | None = None
) -> None:
    """Log metrics (and tags, with the first call) in as few calls as MLflow allows."""
    pending = [RunTag(k, v) for k, v in (tags or {}).items()]
    for start in range(0, len(metrics), MAX_BATCH - len(pending)):
        chunk = metrics[start : start + MAX_BATCH - len(pending)]
        client.log_batch(run_id, metrics=chunk, tags=pending)
        pending = []
    if pending:
        client.log_batch(run_id, tags=pending)


def log_series(
    client: MlflowClient, run_id: str, key: str, values: Sequence[float], first_step: int
) -> None:
    """Log values[i] at step first_step + i, in as few calls as MLflow allows."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(v), now, first_step + i) for i, v in enumerate(values) if math.isfinite(v)
    ]
    _log_batch(client, run_id, metrics)


class MetricLog:
    """A run's metrics, logged once per (key, step): a resumed run skips the points its earlier
    process already logged (an epoch trained again after its checkpoint has the same values),
    so every step of every metric is there exactly once."""

    def __init__(self, client: MlflowClient, run_id: str, *, resumed: bool = False) -> None:
        self.client, self.run_id = client, run_id
        self.present: dict[str, set[int]] = {}
        if resumed:  # what the run already has
            for key in client.get_run(run_id).data.metrics:
                history = client.get_metric_history(run_id, key)
                self.present[key] = {m.step for m in history}

    def log(
        self,
        values: Mapping[str, float],
        step: int,
        *,
        series: Mapping[str, tuple[int, Sequence[float]]] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log values at `step` and each series (key: (first step, values)), with tags, in as
        few calls as MLflow allows, leaving out the points already logged."""
        now = int(time.time() * 1000)
        points = [(k, v, step) for k, v in values.items()]
        for key, (first, vs) in (series or {}).items():
            points += [(key, v, first + i) for i, v in enumerate(vs)]
        metrics = [
            Metric(k, float(v), now, s)
            for k, v, s in points
            if math.isfinite(v) and s not in self.present.get(k, ())
        ]
        for m in metrics:
            self.present.setdefault(m.key, set()).add(m.step)
        if metrics or tags:
            _log_batch(self.client, self.run_id, metrics, tags or {})


@contextlib.contextmanager
def run(
    experiment_id: str,
    *,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM, SIGUSR1,
    SIGUSR2). With `run_id`, that existing run is continued (RUNNING again, `tags` set on it;
    its name, experiment and parent stay as they were).

    Inside it, SIGTERM and Ctrl-C are noted and raised as `interrupts.Interrupted` at the next
    `interrupts.check()` (the training loop checks after every batch), or at the end of the
    block, before the run is FINISHED; the exception then names the run (`run_id`). A block
    that has finished its work may `interrupts.take()` a late signal so that the run ends
    FINISHED.
    """
    with interrupts.at_safe_points():
        if run_id is None:
            active = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=run_name,
                tags=dict(tags or {}),
                parent_run_id=parent_run_id,
            )
        else:
            active = mlflow.start_run(run_id=run_id, tags=dict(tags or {}))
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            yield active
            interrupts.check()
            status = RunStatus.to_string(RunStatus.FINISHED)
        except (interrupts.Interrupted, KeyboardInterrupt) as exc:
            status = RunStatus.to_string(RunStatus.KILLED)
            if isinstance(exc, interrupts.Interrupted):
                exc.run_id = active.info.run_id
            raise
        finally:
            mlflow.end_run(status)
