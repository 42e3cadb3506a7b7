"""One MLflow run per training: it ends FINISHED only when everything was logged; an exception
ends it FAILED, Ctrl-C or SIGTERM ends it KILLED. Signals are acted on between batches
(`stop_point`), never inside MLflow's own database calls."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so the run can end KILLED and clean up."""


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


def log_series(
    client: MlflowClient, run_id: str, key: str, values: Sequence[float], first_step: int
) -> None:
    """Log values[i] at step first_step + i, in as few calls as MLflow allows."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(v), now, first_step + i) for i, v in enumerate(values) if math.isfinite(v)
    ]
    for start in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])


_pending: list[int] = []  # signals received inside `run`, not yet acted on


def _on_signal(signum: int, frame: Any) -> None:
    """Note a SIGTERM or Ctrl-C; act on it at the next `stop_point` (a second one: at once).

    Raising at an arbitrary bytecode could land inside MLflow's own database calls, which may
    turn the exception into an ordinary error (the run would then end FAILED, not KILLED).
    """
    _pending.append(signum)
    if len(_pending) > 1:
        stop_point()


def stop_point() -> None:
    """Raise KeyboardInterrupt (Ctrl-C) or Terminated (SIGTERM) if one arrived during `run`."""
    if _pending:
        signum = _pending[0]
        _pending.clear()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def run(
    experiment_id: str,
    *,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM).

    Inside it, SIGTERM and Ctrl-C are noted and raised at the next `stop_point()` (the training
    loop calls it after every batch), or at the end of the block, before the run is FINISHED.
    """
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in handled}
    _pending.clear()
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for s in handled:
            signal.signal(s, _on_signal)
    active = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        tags=dict(tags or {}),
        parent_run_id=parent_run_id,
    )
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        yield active
        stop_point()
        status = RunStatus.to_string(RunStatus.FINISHED)
    except (KeyboardInterrupt, Terminated):
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    finally:
        mlflow.end_run(status)
        with contextlib.suppress(ValueError, TypeError):
            for s, handler in previous.items():
                signal.signal(s, handler)
