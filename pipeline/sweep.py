"""Hydra multirun sweeps logged to MLflow: one parent run per sweep, one child run per job.

`SweepCallback` is registered in conf/config.yaml (hydra.callbacks). Its `on_multirun_start`
runs once, in the launching process, before any job starts. It:
- checks the configuration and creates the MLflow store and experiment once (creating either
  from several processes at once was seen to fail or to misfile runs);
- starts a lean `mlflow server` on loopback over the SQLite store when the launcher runs jobs
  in several processes (joblib, submitit_local), so that one process owns the database, and
  stops it at the end; a cluster launcher needs a server the nodes reach (`tracking.uri`);
- creates the parent run, and hands its id, the sweep name and the tracking URI to the jobs
  through environment variables (every launcher's job processes inherit them).
Each job (`pipeline.train`'s Hydra entry) logs a child run tagged with the sweep name and its
overrides. `on_multirun_end`, or at exit if a failed job made Hydra raise first, ends the parent
run: FINISHED if every child finished, else FAILED (tagged with the failed jobs).
"""

from __future__ import annotations

import atexit
import copy
import os
import shlex
import sys
import time
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.config import ConfigError, validate

ENV_NAME = "PIPELINE_SWEEP"
ENV_PARENT = "PIPELINE_SWEEP_PARENT_RUN_ID"
LOCAL_PARALLEL = ("JoblibLauncher", "submitit_launcher.LocalLauncher")  # several processes


def job_context() -> tuple[str | None, dict[str, str]]:
    """In a sweep job: (parent run id, tags for the child run); outside a sweep: (None, {})."""
    parent = os.environ.get(ENV_PARENT)
    if not parent:
        return None, {}
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith("hydra")]
    return parent, {
        "sweep": os.environ[ENV_NAME],
        "sweep_role": "child",
        "overrides": " ".join(overrides),
        "hydra_job_num": str(hc.job.num),
    }


def check_sweep_values(config: DictConfig) -> None:
    """Validate every value of every swept key (`train.lr=0.1,-1`) before any job starts.

    Swept config groups (`data=mnist,fashion_mnist`) are composed in the jobs and checked there.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    base = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    for ov in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        key = ov.key_or_group
        if not ov.is_sweep_override() or key.startswith("hydra") or "/" in key:
            continue
        if isinstance(OmegaConf.select(base, key), DictConfig):
            continue  # a config group
        for value in ov.sweep_iterator():
            trial = copy.deepcopy(base)
            OmegaConf.update(trial, key, value, force_add=False)
            validate(trial)


def _command() -> str:
    """The command line as typed: `python -m pipeline.train ...`, not the module's file path."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = f"python -m {spec.name}" if spec is not None else sys.argv[0]
    return " ".join([head, *(shlex.quote(a) for a in sys.argv[1:])])


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.server: tracking.Server | None = None
        self.parent_id: str | None = None
        self.uri: str | None = None

    # Parallel launchers pickle Hydra's context, this callback included, into each job; the
    # server process and the parent run belong to the launching process only.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and runs the jobs anyway; a sweep
        # that cannot be tracked must not start, so exit instead.
        try:
            self._start(config)
        except (ConfigError, tracking.TrackingError) as exc:
            raise SystemExit(f"sweep not started: {exc}") from None

    def _start(self, config: DictConfig) -> None:
        cfg = validate(config)  # fail before any job on a bad configuration
        check_sweep_values(config)
        name = cfg.tracking.sweep or time.strftime("sweep-%Y%m%d-%H%M%S")
        launcher = str(config.hydra.launcher.get("_target_", ""))
        uri = tracking.resolve_uri(cfg.tracking.uri)
        if uri.startswith("sqlite:"):
            if launcher.endswith("SlurmLauncher"):
                raise tracking.TrackingError(
                    "submitit_slurm jobs run on other machines: give them an MLflow server "
                    "they can reach (tracking.uri=http://<host>:<port>); see README, Sweeps"
                )
            tracking.connect(uri, cfg.tracking.experiment)  # create store + experiment once
            if any(k in launcher for k in LOCAL_PARALLEL):
                self.server = tracking.Server(uri).start()
                uri = self.server.uri
                print(f"sweep {name}: MLflow server {uri} over the SQLite store", flush=True)
        client, experiment_id = tracking.connect(uri, cfg.tracking.experiment)
        parent = client.create_run(
            experiment_id, run_name=name,
            tags={"sweep": name, "sweep_role": "parent", "command": _command()},
        )  # fmt: skip
        self.parent_id, self.uri = parent.info.run_id, uri
        os.environ.update({ENV_NAME: name, ENV_PARENT: self.parent_id, "MLFLOW_TRACKING_URI": uri})
        atexit.register(self._finish)
        print(f"sweep {name}: parent MLflow run {self.parent_id}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        try:
            client = tracking.MlflowClient(self.uri)
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
            status = RunStatus.FAILED if bad or len(children) == 0 else RunStatus.FINISHED
            client.set_terminated(parent_id, RunStatus.to_string(status))
            name = run.data.tags.get("sweep")
            print(f"sweep {name}: {len(children) - len(bad)}/{len(children)} runs finished; "
                  f"compare with `python -m pipeline.compare {name}`", flush=True)  # fmt: skip
        finally:
            if self.server is not None:
                self.server.stop()
                self.server = None
