"""Hydra multirun sweeps logged to MLflow: the callback (an entry point Hydra calls).

`SweepCallback` is registered in conf/config.yaml (hydra.callbacks). Its `on_multirun_start`
runs once, in the launching process, before any job starts. It:
- checks the configuration and every swept value, then creates the MLflow store and experiment
  once (creating either from several processes at once was seen to fail or to misfile runs);
- starts a lean `mlflow server` on loopback over the SQLite store when the launcher runs jobs
  in several processes (joblib, submitit_local), so that one process owns the database, and
  stops it at the end;
- with `hydra/launcher=submitit_slurm`: refuses to start unless Slurm's controller answers and
  the store is a tracking server whose experiment keeps artifacts on the server (jobs on other
  nodes would otherwise write them to their own disks), then follows the jobs in Slurm's queue
  (`pipeline.cluster.slurm.JobWatch`) and interrupts the launcher if it would wait forever on
  jobs that ended without a result (scancel, SIGKILL, a lost node);
- creates the parent run, and hands its id, the sweep name and the tracking URI to the jobs
  through environment variables (every launcher's job processes inherit them);
- or, when a sweep of that name exists, resumes it: with the same jobs (any other set is
  refused: its runs and report would be mixed), and unless its launcher still runs, it reopens
  the same parent run and says where its jobs stand. Each job then decides for itself
  (`pipeline.train`): a FINISHED run with the same config, code and data is kept (skipped), an
  interrupted one continues from its checkpoint, the others train. `train.resume=never` on the
  command line trains every job again.
Each job (`pipeline.train`'s Hydra entry) logs a child run tagged with the sweep name, its
overrides, its Hydra job number and its Slurm job id. `on_multirun_end`, or at exit if a failed
job made Hydra raise first, ends the parent run from what the jobs did: the jobs the sweep
launched against their child runs (`pipeline.tracking.sweeps.finish_parent`, each job counted
once, by its latest run), after every Slurm job has ended.
"""

from __future__ import annotations

import atexit
import copy
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline import paths, runtime
from pipeline.cluster import slurm
from pipeline.config import ConfigError, validate
from pipeline.tracking import liveness, store, sweeps
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
        **({"slurm_job_id": env.slurm_job} if env.slurm_job else {}),
    }


def expected_jobs(config: DictConfig) -> list[str] | None:
    """The overrides of every job the sweep will launch, by Hydra job number, as `job_context`
    tags them (Hydra's basic sweeper: the product of the swept values); None for another
    sweeper, or a sweep it cannot expand here."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides(
            params + list(config.hydra.overrides.task)
        )
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # e.g. glob() over config groups needs Hydra's config loader
        return None
    return [" ".join(o for o in job if not o.startswith("hydra")) for job in batches[0]]


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
        self.jobs: list[str] | None = None
        self.watch: slurm.JobWatch | None = None
        self.since_ms: int | None = None  # a sweep run again: when this launch started

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
        except (ConfigError, store.TrackingError, slurm.SlurmError) as exc:
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
        on_slurm = launcher.endswith("SlurmLauncher")
        if on_slurm:
            if not store.is_server(uri):
                raise store.TrackingError(
                    f"submitit_slurm jobs run on other machines: give them an MLflow server "
                    f"they can reach (tracking.uri=http://<host>:<port>), not {store.redact(uri)}"
                    "; see README, Scaling out"
                )
            slurm.check_controller()
        if uri.startswith("sqlite:"):
            store.connect(uri, cfg.tracking.experiment, artifacts)  # create store + experiment
            if any(k in launcher for k in LOCAL_PARALLEL):
                os.environ[ENV_LAUNCHER] = str(os.getpid())  # jobs die with the launcher
                log = Path(tempfile.gettempdir()) / f"pipeline-sweep-server-{os.getpid()}.log"
                self.server = Server(uri, env=os.environ, log_path=log).start()
                uri = self.server.uri
                print(f"sweep {name}: MLflow server {uri} over the SQLite store", flush=True)
        client, experiment_id = store.connect(uri, cfg.tracking.experiment, artifacts)
        if on_slurm:
            location = client.get_experiment(experiment_id).artifact_location
            if not store.shares_artifacts(location):
                raise store.TrackingError(
                    f"experiment {cfg.tracking.experiment!r} keeps its artifacts at {location}: "
                    "Slurm jobs would write them to their own nodes' disks. Use an experiment "
                    "created on the server (tracking.experiment=<new name>), which stores them "
                    "itself (mlflow-artifacts:/)"
                )
        self.jobs = expected_jobs(config)
        old = sweeps.find_parent(client, experiment_id, name)
        if old is None:
            self.parent_id = sweeps.create_parent(
                client, experiment_id, name=name, command=_command(), jobs=self.jobs
            )
        else:
            self.parent_id = self._resume(
                client, old, name, cfg.tracking.experiment, cfg.train.resume
            )
        self.uri = uri
        os.environ.update({ENV_NAME: name, ENV_PARENT: self.parent_id, "MLFLOW_TRACKING_URI": uri})
        atexit.register(self._finish)
        if on_slurm:  # interrupts the launcher if it would wait forever on lost jobs
            self.watch = slurm.JobWatch(str(config.hydra.launcher.submitit_folder)).start()
        print(
            f"sweep {name}: parent MLflow run {self.parent_id} on {store.redact(uri)}", flush=True
        )

    def _resume(
        self, client: store.MlflowClient, old: Any, name: str, experiment: str, resume: str
    ) -> str:
        """Reopen the parent run of the sweep `name`, run again (module docstring); raise
        TrackingError when it cannot be resumed."""
        where = f"a sweep named {name!r} already exists in experiment {experiment!r}"
        command = old.data.tags.get("command", "?")
        if self.jobs is None:
            raise store.TrackingError(
                f"{where}, and this sweeper's jobs cannot be listed here to resume it: name "
                "this sweep differently (tracking.sweep=...)"
            )
        if old.data.tags.get(sweeps.JOBS_SHA) != sweeps.jobs_sha256(self.jobs):
            raise store.TrackingError(
                f"{where} with other jobs (parent run {old.info.run_id}, started by `{command}`)"
                "; its runs and report would be mixed with this one's. Rerun that command to "
                "resume it, or name this sweep differently (tracking.sweep=...)"
            )
        if old.info.status == "RUNNING":
            verdict = liveness.judge(old)
            if verdict.state != "stale":
                raise store.TrackingError(
                    f"{where} and may still be running ({verdict.why}; parent run "
                    f"{old.info.run_id}): wait for it to end, or close it if its launcher is "
                    "gone (`python -m pipeline.runs close-stale --other-hosts-after 1h`)"
                )
        self.since_ms = int(time.time() * 1000)
        sweeps.reopen_parent(client, old, command=_command())
        stand = sweeps.survey(client, old, self.jobs)
        if resume == "never":
            plan = f"train.resume=never: all {len(self.jobs)} jobs train again"
        else:
            plan = (
                f"{stand['finished']} finished (skipped unless their config, code or data "
                f"changed), {stand['interrupted']} interrupted (resumed from their checkpoints, "
                f"else trained again), {stand['not run']} not run yet"
            )
        print(f"sweep {name}: resuming it (parent MLflow run {old.info.run_id}): {plan}")
        return old.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        # Ctrl-C in the launching process: the parent ends KILLED; Slurm jobs keep running.
        interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
        notes: dict[int, str] = {}
        try:
            if self.watch is not None:  # Slurm: wait for every job (the launcher may not)
                self.watch.done()
                try:
                    if not interrupted:
                        self.watch.wait_ended(tell=_waiting)
                except KeyboardInterrupt:
                    interrupted = True
                notes = self.watch.notes()
            done = sweeps.finish_parent(
                store.MlflowClient(self.uri),
                parent_id,
                jobs=self.jobs,
                notes=notes,
                ended=not interrupted,
                interrupted=interrupted,
                since_ms=self.since_ms,
            )
            how = done.done and ", ".join(f"{n} {k}" for k, n in done.done.items() if n)
            print(
                f"sweep {done.name}: {done.finished}/{done.jobs} jobs finished"
                + (f" ({how})" if how else "")
                + (" (interrupted)" if interrupted else "")
                + "".join(f"\n  not finished: {f}" for f in done.failures)
                + f"\ncompare with `python -m pipeline.compare {done.name}`",
                flush=True,
            )
        finally:
            self._stop_server()

    def _stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server.log_path.unlink(missing_ok=True)
            self.server = None


def _waiting(active: dict[str, str]) -> None:
    print(f"waiting for {len(active)} Slurm jobs: {' '.join(active)}", flush=True)
