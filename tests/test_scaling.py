"""Beyond one machine, end to end: the team's MLflow server on PostgreSQL storing artifacts
itself, Hydra sweeps through a real Slurm cluster (`hydra/launcher=submitit_slurm`), the model
registry, and their faults: a database down or refusing the credentials, Slurm's controller
down, a job cancelled, the tracking server killed mid-sweep, twelve jobs logging at once.

The services run on loopback, started by the session fixtures in conftest.py through the
repository's scripts (tests/services.py); where one cannot run here, its tests skip, naming the
Debian package. Every test works in an MLflow experiment of its own on the shared server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import server_env
from mlflow.tracking import MlflowClient
from project import BATCHES_PER_EPOCH, POINTS_PER_EPOCH, SWEEP, TRAIN, assert_complete
from services import free_port, rss_mib, slurm_launcher

from pipeline.data.prepared import read_prepared
from pipeline.model.inference import predict
from pipeline.model.weights import load_weights
from pipeline.tracking import registry, store, sweeps
from pipeline.tracking.server import Server

pytestmark = pytest.mark.e2e


def sweep_runs(client: MlflowClient, experiment: str, sweep: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.sweep = '{sweep}'") if exp else []
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_role") == "child"]
    return parents, children


def start(project, *cmd: str, **extra_env: str) -> subprocess.Popen:
    """Start `python ...` in the project, its output to files (a pipe left unread fills up)."""
    out = open(project.base / "started.out", "w")  # noqa: SIM115 (closed by `finish`)
    err = open(project.base / "started.err", "w")  # noqa: SIM115
    argv = [sys.executable, *cmd[1:]] if cmd[0] == "python" else list(cmd)
    return subprocess.Popen(
        argv, cwd=project.root, env=project.env | extra_env, stdout=out, stderr=err
    )


def finish(project, proc: subprocess.Popen, timeout_s: float) -> tuple[str, str]:
    """Wait for `proc` (killed after timeout_s) and return its (stdout, stderr)."""
    try:
        proc.wait(timeout=timeout_s)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout and proc.stdout.close()
    return (project.base / "started.out").read_text(), (project.base / "started.err").read_text()


def tiny_test_images(project) -> np.ndarray:
    return read_prepared(project.root / "data/prepared/tiny.npz").split("test").x.array(np.float64)


def pipeline_digits(client: MlflowClient, run_id: str, x: np.ndarray, tmp: Path) -> np.ndarray:
    """What the pipeline predicts with the run's own weights (downloaded from its store)."""
    path = client.download_artifacts(run_id, "weights.npz", str(tmp))
    return predict(load_weights(Path(path)), x)


# ------------------------------------------------------------------ a sweep through Slurm


@pytest.fixture(scope="session")
def slurm_sweep(tiny_prepared, team_server, slurm_cluster, tmp_path_factory):
    """A 4-job sweep (lr {0.5, 1} x seed {0, 1}, models logged) through the Slurm cluster
    against the PostgreSQL-backed server: (project, launcher output, experiment name)."""
    project = tiny_prepared.copy(tmp_path_factory.mktemp("slurm-swept") / "p")
    done = project.run(
        *SWEEP,
        *slurm_launcher("slurm-sweep"),
        "train.lr=0.5,1.0",
        "seed=0,1",
        "tracking.sweep=cluster",
        MLFLOW_TRACKING_URI=team_server.uri,
        **slurm_cluster.env,
    )
    return project, done, "slurm-sweep"


def test_slurm_sweep_logs_every_job_under_one_parent(slurm_sweep, team_server):
    _, done, experiment = slurm_sweep
    client = MlflowClient(team_server.uri)
    (parent,), children = sweep_runs(client, experiment, "cluster")
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert parent.data.tags["jobs"] == "4" and parent.data.tags["failed_jobs_count"] == "0"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for c in children:
        assert_complete(client, c)
    jobs = {c.data.tags["slurm_job_id"] for c in children}  # each ran as its own Slurm job
    assert len(jobs) == 4 and all(re.fullmatch(r"\d+_[0-3]", j) for j in jobs)
    assert "sweep cluster: 4/4 jobs finished" in done.stdout


def test_slurm_sweep_artifacts_live_on_the_server_not_in_the_jobs(slurm_sweep, team_server):
    project, _, experiment = slurm_sweep
    client = MlflowClient(team_server.uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp.artifact_location == f"mlflow-artifacts:/{exp.experiment_id}"
    _, children = sweep_runs(client, experiment, "cluster")
    stored = Path(team_server.artifacts_destination) / exp.experiment_id
    for c in children:
        rid = c.info.run_id
        assert c.info.artifact_uri == f"mlflow-artifacts:/{exp.experiment_id}/{rid}/artifacts"
        listed = {a.path for a in client.list_artifacts(rid)}
        assert {"weights.npz", "params.yaml", "learning_curves.png"} <= listed
        for name in listed:  # files, and folders such as predictions/
            assert (stored / rid / "artifacts" / name).exists(), name
        assert (stored / rid / "artifacts" / "predictions" / "test.csv").is_file()
    models = list(stored.glob("models/*/artifacts/MLmodel"))
    assert len(models) == 4  # the pyfunc models, stored by the server too
    # Nothing MLflow stores is left in the jobs' folders, nor anywhere in the project.
    leftovers = [
        p
        for p in project.base.rglob("*")
        if p.name in ("mlartifacts", "mlruns", "MLmodel") or p.suffix == ".png"
    ]
    assert leftovers == []


def test_compare_and_register_a_slurm_sweep_on_the_server(slurm_sweep, team_server, tmp_path):
    project, _, experiment = slurm_sweep
    uri = {"MLFLOW_TRACKING_URI": team_server.uri}
    out = tmp_path / "report"
    shown = project.run(
        "python",
        "-m",
        "pipeline.compare",
        "cluster",
        "--experiment",
        experiment,
        "--out",
        str(out),
        **uri,
    )
    assert "Best setting, chosen on mean validation error" in shown.stdout
    assert (out / "report.md").read_text().strip() == shown.stdout.strip()
    done = project.run(
        "python",
        "-m",
        "pipeline.register",
        "cluster",
        "--experiment",
        experiment,
        "--name",
        "cluster-cnn",
        **uri,
    )
    assert "is now champion" in done.stdout
    client = MlflowClient(team_server.uri, registry_uri=team_server.uri)
    version = client.get_model_version_by_alias("cluster-cnn", "champion")
    run = client.get_run(version.tags["run_id"])
    assert version.tags["sweep"] == "cluster" and version.tags["setting"].startswith("train.lr=")
    assert float(version.tags["val_error"]) == run.data.metrics["val_error"]
    assert version.tags["git_commit"] == run.data.tags["git_commit"]
    assert version.tags["data_sha256"] == run.data.tags["data_sha256"]
    x = tiny_test_images(project)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(team_server.uri)
    try:
        model = mlflow.pyfunc.load_model("models:/cluster-cnn@champion")
        digits = model.predict(x)
    finally:
        mlflow.set_tracking_uri(previous)
    np.testing.assert_array_equal(digits, pipeline_digits(client, run.info.run_id, x, tmp_path))


# ---------------------------------------------------------------------------- the registry


def test_registry_on_sqlite_loads_and_serves_the_champion(prepared_project, tmp_path):
    project = prepared_project
    project.run(*SWEEP, "train.lr=0.5", "tracking.sweep=reg")
    done = project.run("python", "-m", "pipeline.register", "reg")
    assert re.match(
        r"zhang-cnn version 1 \(reg: train\.lr=0\.5, seed 0, .*\) is now champion", done.stdout
    )
    client = project.client
    version = client.get_model_version_by_alias("zhang-cnn", "champion")
    x = tiny_test_images(project)
    expected = pipeline_digits(client, version.tags["run_id"], x, tmp_path)
    port = free_port()
    serve = ["models", "serve", "-m", "models:/zhang-cnn@champion", "--env-manager", "local"]
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                *serve,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=project.root,
            env=project.env,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its workers in its group: stopped together below
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            answered = json.loads(resp.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    np.testing.assert_array_equal(answered, expected)
    assert len(answered) == len(x)


def _fake_sweep(client, exp_id, name, errors):
    """A finished sweep whose child runs each have a logged model: {lr: val_error}."""
    parent = sweeps.create_parent(client, exp_id, name=name, command="python -m x")
    for lr, err in errors.items():
        rid = client.create_run(
            exp_id,
            tags={"mlflow.parentRunId": parent, "git_commit": "c0ffee", "data_sha256": "d" * 64},
        ).info.run_id
        client.log_param(rid, "train.lr", lr)
        client.log_param(rid, "seed", "0")
        client.log_metric(rid, "val_error", err)
        client.log_metric(rid, "test_error", err + 0.01)
        model = client.create_logged_model(exp_id, name="model", source_run_id=rid)
        client.finalize_logged_model(model.model_id, "READY")
        client.set_terminated(rid)
    client.set_terminated(parent)


def test_champion_moves_only_to_a_better_model(experiment, request):
    client, exp_id, _ = experiment
    name = f"alias-{request.node.name}"
    exp = client.get_experiment(exp_id).name

    def register(sweep):
        return registry.register_best(client, experiment=exp, sweep=sweep, name=name)

    _fake_sweep(client, exp_id, "a", {"0.1": 0.30, "0.5": 0.20})
    _fake_sweep(client, exp_id, "b", {"0.1": 0.40, "0.5": 0.35})
    _fake_sweep(client, exp_id, "c", {"1.0": 0.10})
    first = register("a")
    assert (first.version, first.champion) == ("1", "1") and "is now champion" in first.message
    worse = register("b")
    assert (worse.version, worse.champion) == ("2", "1")
    assert "champion stays version 1 (val error 20.00% <= 35.00%)" in worse.message
    again = register("a")  # the same run: its version, not a new one
    assert (again.version, again.champion) == ("1", "1") and "already champion" in again.message
    better = register("c")
    assert (better.version, better.champion) == ("3", "3")
    assert better.message.endswith("is now champion; was version 1, val error 20.00%")
    tags = client.get_model_version_by_alias(name, "champion").tags
    assert tags["sweep"] == "c" and tags["setting"] == "train.lr=1" and tags["val_error"] == "0.1"
    assert tags["git_commit"] == "c0ffee" and tags["data_sha256"] == "d" * 64
    assert len(client.search_model_versions(f"name = '{name}'")) == 3


def test_registering_a_sweep_without_models_says_so(swept_project):
    with pytest.raises(registry.RegistryError, match=r"logged no model .*tracking.log_model"):
        registry.register_best(
            swept_project.client, experiment="zhang-cnn", sweep="basic", name="no-models"
        )


# -------------------------------------------------------------------------------- faults


def test_slurm_launcher_with_a_sqlite_store_is_refused(prepared_project):
    done = prepared_project.run(
        *SWEEP,
        "hydra/launcher=submitit_slurm",
        "train.lr=0.5,1.0",
        "tracking.sweep=refused",
        check=False,
    )
    assert done.returncode != 0
    assert "sweep not started: submitit_slurm jobs run on other machines" in done.stderr
    assert prepared_project.runs() == []


def test_slurm_controller_down_refuses_the_sweep_before_any_job(
    prepared_project, slurm_cluster, tmp_path
):
    conf = Path(slurm_cluster.env["SLURM_CONF"]).read_text()
    dead = tmp_path / "slurm.conf"  # the same cluster, a controller port nobody listens on
    dead.write_text(re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={free_port()}", conf))
    done = prepared_project.run(
        *SWEEP,
        *slurm_launcher("down"),
        "train.lr=0.5,1.0",
        check=False,
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
        SLURM_CONF=str(dead),
    )
    assert done.returncode != 0
    assert "sweep not started: the Slurm controller does not answer" in done.stderr
    assert "scripts/slurm-local up" in done.stderr
    assert not list(prepared_project.root.glob("multirun/*/*/.submitit"))  # nothing submitted


def test_database_down_or_wrong_password_fails_before_anything_starts(
    prepared_project, postgres, tmp_path
):
    project = prepared_project
    secret = "not-the-password"
    with_secret = f"postgresql+psycopg://mlflow:{secret}@127.0.0.1:{postgres.port}/mlflow"
    shown = f"postgresql+psycopg://mlflow:***@127.0.0.1:{postgres.port}/mlflow"
    # The server command: refused before the server starts, password redacted.
    done = project.run(
        "python",
        "-m",
        "pipeline.server",
        "--backend-store-uri",
        with_secret,
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--port",
        str(free_port()),
        check=False,
    )
    assert done.returncode == 1
    assert f"server not started: database {shown} cannot be used" in done.stderr
    assert 'password authentication failed for user "mlflow"' in done.stderr
    assert secret not in done.stdout + done.stderr
    # Training straight into the database: the DVC stage fails before any training.
    bad = {"MLFLOW_TRACKING_URI": postgres.uri, "PGPASSWORD": secret}
    done = project.run(*TRAIN, "--params", "params.yaml", check=False, **bad)
    assert done.returncode == 1
    assert f"train failed: database {postgres.uri} cannot be used" in done.stderr
    assert "password authentication failed" in done.stderr and secret not in done.stderr
    # A database that is down (nothing listens on that port).
    down = f"postgresql+psycopg://mlflow@127.0.0.1:{free_port()}/mlflow"
    done = project.run(
        *TRAIN,
        "--params",
        "params.yaml",
        check=False,
        MLFLOW_TRACKING_URI=down,
    )
    assert done.returncode == 1 and "Connection refused" in done.stderr
    assert not (project.root / "models/weights.npz").exists()


def test_team_server_whose_database_is_down_fails_before_training(
    prepared_project, postgres, team_server
):
    project = prepared_project
    postgres.down()
    try:
        done = project.run(
            *TRAIN,
            "--params",
            "params.yaml",
            check=False,
            MLFLOW_TRACKING_URI=team_server.uri,
        )
    finally:
        postgres.up()
    assert done.returncode == 1
    assert f"train failed: MLflow tracking server {team_server.uri} cannot use its store" in (
        done.stderr
    )
    assert f'"127.0.0.1", port {postgres.port} failed: Connection refused' in done.stderr
    assert not (project.root / "models/weights.npz").exists()
    # PostgreSQL back: the server serves again, without a restart.
    deadline = time.monotonic() + 60
    while True:
        try:
            store.check_reachable(team_server.uri)
            break
        except store.TrackingError:
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(1)


def _child_runs(client, experiment, sweep):
    try:
        return sweep_runs(client, experiment, sweep)[1]
    except Exception:  # the server is down or coming back
        return []


def _wait_until(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _signal_a_training_job(project, server, cluster, experiment, sweep, launcher, args, scancel):
    """Start a Slurm sweep of `args` logging to `server`, wait until its first job has trained
    3 epochs, run `scancel(job id)` (the scancel command line) on it, and let the sweep finish.
    Returns the sweep process, its stdout and stderr."""
    client = MlflowClient(server.uri)
    proc = start(
        project,
        *SWEEP,
        *slurm_launcher(experiment, launcher),
        "tracking.log_model=false",
        *args,
        f"tracking.sweep={sweep}",
        MLFLOW_TRACKING_URI=server.uri,
        **cluster.env,
    )

    def training():
        runs = _child_runs(client, experiment, sweep)
        return runs and len(client.get_metric_history(runs[0].info.run_id, "val_error")) >= 3

    try:
        _wait_until(training, 180, f"a job of {sweep} to train")
        (job,) = [r.data.tags["slurm_job_id"] for r in _child_runs(client, experiment, sweep)]
        subprocess.run(scancel(job), env=os.environ | cluster.env, check=True)
    finally:
        out, err = finish(project, proc, timeout_s=300)
    return proc, out, err


@pytest.mark.heavy
def test_scancel_ends_the_run_killed_and_the_sweep_does_not_hang(
    prepared_project, team_server, slurm_cluster
):
    """Job 0 is cancelled while it trains (SIGTERM: its run ends KILLED at the next batch);
    job 1, queued behind it, is cancelled before it starts (no run). Neither writes a result,
    which without accounting submitit would wait for forever."""
    project = prepared_project
    client = MlflowClient(team_server.uri)
    sweep, out, err = _signal_a_training_job(
        project,
        team_server,
        slurm_cluster,
        "scancel",
        "cancelled",
        "hydra.launcher.array_parallelism=1",
        ["train.epochs=3000", "train.lr=0.5,1.0"],
        lambda job: ["scancel", job.split("_")[0]],  # the array: the running task and the queued
    )
    assert sweep.returncode != 0
    assert re.search(
        r"Slurm jobs ended without a result: \d+_0 \(CANCELLED\), \d+_1 \(CANCELLED\)", err
    )
    (parent,), (child,) = sweep_runs(client, "scancel", "cancelled")
    assert child.info.status == "KILLED" and parent.info.status == "FAILED"
    failed = parent.data.tags["failed_jobs"]
    assert f"train.lr=0.5 tracking.sweep=cancelled: KILLED (run {child.info.run_id})" in failed
    assert "train.lr=1.0 tracking.sweep=cancelled: no MLflow run" in failed
    assert failed.count("CANCELLED") == 2
    assert "sweep cancelled: 0/2 jobs finished" in out


def test_a_preempted_slurm_job_is_requeued_and_resumes_its_run(
    prepared_project, team_server, slurm_cluster
):
    """What Slurm sends before a time limit or a preemption, as submitit asks for it: SIGUSR2
    to the job's step (`scancel --signal=USR2`, as submitit's own test helper sends it). The
    job writes a checkpoint at the next batch boundary, ends its run KILLED and hands the
    signal to submitit, which requeues it (`hydra.launcher.max_num_timeout=1`); the requeued
    job continues the same run from the checkpoint: one run, every metric step once."""
    project = prepared_project
    client = MlflowClient(team_server.uri)
    epochs = 400
    sweep, out, err = _signal_a_training_job(
        project,
        team_server,
        slurm_cluster,
        "requeue",
        "preempted",
        "hydra.launcher.max_num_timeout=1",
        [f"train.epochs={epochs}"],
        lambda job: ["scancel", "--signal=USR2", job],
    )
    assert sweep.returncode == 0, err
    (parent,), (child,) = sweep_runs(client, "requeue", "preempted")
    rid = child.info.run_id
    assert parent.info.status == "FINISHED" and "sweep preempted: 1/1 jobs finished" in out
    assert child.info.status == "FINISHED" and child.data.tags["resumes"] == "1"
    steps = sorted(m.step for m in client.get_metric_history(rid, "batch_loss"))
    assert steps == list(range(1, epochs * BATCHES_PER_EPOCH + 1))
    assert len(client.get_metric_history(rid, "train_loss")) == epochs
    logs = "".join(p.read_text() for p in project.root.glob("multirun/**/.submitit/**/*_log.*"))
    assert f"train interrupted: MLflow run {rid} ended KILLED" in logs
    assert "Requeued job" in logs
    assert f"train: resuming MLflow run {rid} (KILLED) from epoch " in logs


@pytest.mark.heavy
def test_tracking_server_killed_mid_sweep_and_restarted(
    prepared_project, postgres, slurm_cluster, tmp_path
):
    """Job 0 retries through the outage (MLflow's client: MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    default 7, backoff 2 s doubling) and loses nothing; job 1, told not to retry, fails: its
    run cannot even be ended, so the parent ends it FAILED and says so."""
    project = prepared_project
    port = free_port()

    def server():
        return Server(
            postgres.uri,
            env=server_env(postgres),
            port=port,
            artifacts_destination=str(tmp_path / "artifacts"),
            log_path=tmp_path / "server.log",
        ).start()

    first = server()
    client = MlflowClient(first.uri)
    no_retry = '[ "$SLURM_ARRAY_TASK_ID" != 1 ] || export MLFLOW_HTTP_REQUEST_MAX_RETRIES=0'
    epochs = 150
    sweep = start(
        project,
        *SWEEP,
        *slurm_launcher("outage", f"hydra.launcher.setup=['{no_retry}']"),
        "tracking.log_model=false",
        f"train.epochs={epochs}",
        "train.lr=0.5,1.0",
        "tracking.sweep=outage",
        MLFLOW_TRACKING_URI=first.uri,
        **slurm_cluster.env,
    )

    def both_logging():
        runs = _child_runs(client, "outage", "outage")
        return len(runs) == 2 and all(
            len(client.get_metric_history(r.info.run_id, "val_error")) >= 5 for r in runs
        )

    second = None
    try:
        _wait_until(both_logging, 180, "both jobs to log")
        os.killpg(first.proc.pid, signal.SIGKILL)  # no goodbye: as a crash or the OOM killer
        first.proc.wait()
        time.sleep(3)
        second = server()  # the same port and store
        out, _ = finish(project, sweep, timeout_s=400)
        (parent,), children = sweep_runs(client, "outage", "outage")
        by_job = {c.data.tags["hydra_job_num"]: c for c in children}
        retried, failed = by_job["0"], by_job["1"]
        assert_complete(client, retried, epochs=epochs)
    finally:
        sweep.kill()
        if second is not None:
            second.stop()
    assert failed.info.status == "FAILED" and failed.data.tags["sweep_note"]
    assert parent.info.status == "FAILED" and parent.data.tags["failed_jobs_count"] == "1"
    assert "run left RUNNING by its job, ended FAILED" in parent.data.tags["failed_jobs"]
    assert "1/2 jobs finished" in out and "train.lr=1.0" in out.split("not finished:")[1]


@pytest.mark.heavy
def test_twelve_jobs_log_to_the_server_at_once(prepared_project, team_server, slurm_cluster):
    """4 learning rates x 3 seeds, all twelve jobs running at once on the cluster, logging to
    the PostgreSQL-backed server: every run and every metric point arrives; the server's
    memory (its whole process tree) stays bounded."""
    project = prepared_project
    peak = [0.0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            peak[0] = max(peak[0], rss_mib(team_server.pids()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    epochs = 3
    try:
        project.run(
            *SWEEP,
            *slurm_launcher("load"),
            "tracking.log_model=false",
            f"train.epochs={epochs}",
            "train.lr=0.25,0.5,1.0,2.0",
            "seed=0,1,2",
            "tracking.sweep=twelve",
            MLFLOW_TRACKING_URI=team_server.uri,
            **slurm_cluster.env,
        )
    finally:
        stop.set()
        sampler.join()
    client = MlflowClient(team_server.uri)
    (parent,), children = sweep_runs(client, "load", "twelve")
    assert parent.info.status == "FINISHED" and len(children) == 12
    keys = ("train_loss", "train_error", "val_loss", "val_error", "batch_loss")
    points = 0
    for c in children:
        assert_complete(client, c, epochs=epochs)
        points += sum(len(client.get_metric_history(c.info.run_id, k)) for k in keys) + 2
    assert points == 12 * (epochs * POINTS_PER_EPOCH + 2)  # + test_loss and test_error
    assert epochs * BATCHES_PER_EPOCH == 15
    # Reported, not asserted (timing): how many runs were open at once, and the server's peak.
    events = sorted(
        [(c.info.start_time, 1) for c in children] + [(c.info.end_time, -1) for c in children]
    )
    at_once = max(np.cumsum([e for _, e in events]))
    print(f"12 jobs: {points} metric points; {at_once} runs open at once; server {peak[0]:.0f} MiB")
    assert 0 < peak[0] < 2048
