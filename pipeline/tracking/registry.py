"""The model registry: a sweep's best model under a name, the alias `champion` on the best.

`register_best` takes the sweep's best setting, chosen on mean validation error over seeds as
`pipeline.compare` chooses it, and within it the run with the lowest validation error; it
registers that run's pyfunc model as a version of the registered model `name`, tagged with the
sweep, the setting, the run's errors, its git commit and its data hash. The alias `champion`
moves to the new version only when its validation error is lower than the current champion's
(or there is none); otherwise the version is registered and the champion stays. Registering
the same run again reuses its version. Then

    mlflow.pyfunc.load_model("models:/<name>@champion").predict(images)
    mlflow models serve -m models:/<name>@champion --env-manager local

load and serve it, on a SQLite store as on a tracking server (MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.reports.compare import find_sweep, finished, label, rank

ALIAS = "champion"


class RegistryError(RuntimeError):
    """The model cannot be registered; the message says why."""


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    val_error: float
    champion: str  # the champion's version after this registration
    message: str  # what happened, in a sentence


def register_best(client: MlflowClient, *, experiment: str, sweep: str, name: str) -> Registration:
    """Register the best model of `sweep` under `name`; move `champion` to it if it is better."""
    _, children = find_sweep(client, experiment, sweep)
    ranked = rank(finished(sweep, children))
    keys, best = ranked.keys, ranked.best
    scored = [r for r in ranked.groups[best].values() if "val_error" in r.data.metrics]
    if not scored:
        raise RegistryError(f"sweep {sweep!r}: its best setting's runs logged no val_error")
    run = min(scored, key=lambda r: (r.data.metrics["val_error"], r.info.start_time))
    rid, metrics, run_tags = run.info.run_id, run.data.metrics, run.data.tags
    setting = label(keys, best)
    tags = {
        "sweep": sweep,
        "setting": setting,
        "seed": run.data.params.get("seed", ""),
        "val_error": repr(metrics["val_error"]),
        "test_error": repr(metrics.get("test_error", float("nan"))),
        "setting_val_error_mean": repr(ranked.summaries[best]["val_error"].mean),
        "git_commit": run_tags.get("git_commit", "unknown"),
        "data_sha256": run_tags.get("data_sha256", "unknown"),
        "dataset": run_tags.get("dataset", ""),
        "run_id": rid,
    }
    version = _version_of(client, name, rid) or _register(client, name, run, tags)
    val = metrics["val_error"]
    try:
        current = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        current = None
    summary = (
        f"{name} version {version} ({sweep}: {setting}, seed {tags['seed']}, val error {val:.2%})"
    )
    held_version = str(current.version) if current is not None else None
    if held_version == version:
        return Registration(name, version, rid, val, version, f"{summary} is already {ALIAS}")
    held = float(current.tags.get("val_error", "inf")) if current is not None else None
    if held is not None and not val < held:
        return Registration(
            name,
            version,
            rid,
            val,
            held_version,
            f"registered {summary}; {ALIAS} stays version {held_version} "
            f"(val error {held:.2%} <= {val:.2%})",
        )
    client.set_registered_model_alias(name, ALIAS, version)
    was = f"; was version {held_version}, val error {held:.2%}" if current else ""
    return Registration(name, version, rid, val, version, f"{summary} is now {ALIAS}{was}")


def _version_of(client: MlflowClient, name: str, run_id: str) -> str | None:
    """The version of `name` already registered from `run_id`, if any."""
    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    return min((str(v.version) for v in found), key=int, default=None)


def _register(client: MlflowClient, name: str, run, tags: dict[str, str]) -> str:
    """Register the run's logged model (`model`, MLflow 3's LoggedModel) as a new version."""
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' and name = 'model'",
    )
    ready = [m for m in models if str(m.status).endswith("READY")]
    if not ready:
        raise RegistryError(
            f"run {run.info.run_id} logged no model to register (runs log one unless "
            "tracking.log_model=false)"
        )
    with contextlib.suppress(MlflowException):  # already there
        client.create_registered_model(name)
    mv = client.create_model_version(
        name,
        source=ready[0].model_uri,
        run_id=run.info.run_id,
        tags=tags,
        model_id=ready[0].model_id,
    )
    return str(mv.version)
