"""Hydra multirun sweeps logged to MLflow: the callback (an entry point Hydra calls).

`SweepCallback` is registered in conf/config.yaml (hydra.callbacks). Its `on_multirun_start`
runs once, in the launching process, before any job starts. It:
- checks the configuration and every swept value, then creates the MLflow store and experiment
  once (creating either from several processes at once was seen to fail or to misfile runs);
- starts a lean `mlflow server` on loopback over the SQLite store when the launcher runs jobs
  in several processes (joblib, submitit_local), so that one process owns the database, and
  stops it at the end; a cluster launcher needs a server the nodes reach (`tracking.uri`);
- creates the parent run, and hands its id, the sweep name and the tracking URI to the jobs
  through environment variables (every launcher's job processes inherit them).
Each job (`pipeline.train`'s Hydra entry) logs a child run tagged with the sweep name and its
overrides. `on_multirun_end`, or at exit if a failed job made Hydra raise first, ends the parent
run (`pipeline.tracking.sweeps.finish_parent`).
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
from omegaconf import DictConfig, OmegaConf

from pipeline import paths, runtime
from pipeline.config import ConfigError, validate
from pipeline.tracking import store, sweeps
from pipeline.tracking.server import Server

ENV_NAME, ENV_PARENT, ENV_LAUNCHER = runtime.SWEEP_VARS
LOCAL_PARALLEL = ("JoblibLauncher", "submitit_launcher.LocalLauncher")  # several processes


def job_context(
    env: runtime.Environment, task_overrides: list[str], job_num: int | None
) -> tuple[str | None, dict[str, str]]:
    """In a sweep job: (parent run id, tags for the child run); outside a sweep: (None, {})."""
    if not env.sweep_parent:
        return None, {}
    overrides = [o for o in task_overrides if not o.startswith("hydra")]
    return env.sweep_parent, {
        "sweep": env.sweep or "",
        "sweep_role": "child",
        "overrides": " ".join(overrides),
        "hydra_job_num": str(job_num),
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
        self.server: Server | None = None
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
        except (ConfigError, store.TrackingError) as exc:
            self._stop_server()
            raise SystemExit(f"sweep not started: {exc}") from None

    def _start(self, config: DictConfig) -> None:
        cfg = validate(config)  # fail before any job on a bad configuration
        check_sweep_values(config)
        name = cfg.tracking.sweep or time.strftime("sweep-%Y%m%d-%H%M%S")
        launcher = str(config.hydra.launcher.get("_target_", ""))
        env = runtime.environment()
        uri = env.store_uri(cfg.tracking.uri)
        artifacts = paths.artifact_root(env.root)
        if uri.startswith("sqlite:"):
            if launcher.endswith("SlurmLauncher"):
                raise store.TrackingError(
                    "submitit_slurm jobs run on other machines: give them an MLflow server "
                    "they can reach (tracking.uri=http://<host>:<port>); see README, Sweeps"
                )
            store.connect(uri, cfg.tracking.experiment, artifacts)  # create store + experiment
            if any(k in launcher for k in LOCAL_PARALLEL):
                os.environ[ENV_LAUNCHER] = str(os.getpid())  # jobs die with the launcher
                self.server = Server(uri, env=os.environ).start()
                uri = self.server.uri
                print(f"sweep {name}: MLflow server {uri} over the SQLite store", flush=True)
        client, experiment_id = store.connect(uri, cfg.tracking.experiment, artifacts)
        if (old := sweeps.find_parent(client, experiment_id, name)) is not None:
            raise store.TrackingError(
                f"a sweep named {name!r} already exists in experiment "
                f"{cfg.tracking.experiment!r} (parent run {old.info.run_id}); its runs and "
                f"report would be mixed with this one's. Name this sweep differently "
                f"(tracking.sweep=...)"
            )
        self.parent_id = sweeps.create_parent(client, experiment_id, name=name, command=_command())
        self.uri = uri
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
            done = sweeps.finish_parent(store.MlflowClient(self.uri), parent_id)
            print(
                f"sweep {done.name}: {done.finished}/{done.children} runs finished; "
                f"compare with `python -m pipeline.compare {done.name}`",
                flush=True,
            )
        finally:
            self._stop_server()

    def _stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
