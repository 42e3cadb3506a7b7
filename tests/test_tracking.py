"""MLflow edge: the store chosen from the environment, one experiment, run statuses, signals,
fail-fast on a dead server, series logged in batches, the sweep's parent run."""

import os
import signal
import time

import pytest

from pipeline import interrupts, paths, runtime
from pipeline.tracking import runs, store, sweeps


def test_flatten_gives_dotted_keys():
    tree = {"seed": 0, "train": {"lr": 1.0, "opt": {"kind": "sgd"}}, "data": {"subset": None}}
    assert runs.flatten(tree) == {
        "seed": 0,
        "train.lr": 1.0,
        "train.opt.kind": "sgd",
        "data.subset": None,
    }


def test_store_precedence_environment_then_config_then_repo_root(tmp_path):
    env = runtime.environment({"DVC_ROOT": str(tmp_path)})
    assert env.store_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert env.store_uri("http://x:5000") == "http://x:5000"
    env = runtime.environment({"DVC_ROOT": str(tmp_path), "MLFLOW_TRACKING_URI": "sqlite:////e.db"})
    assert env.store_uri("http://x:5000") == "sqlite:////e.db"


def test_default_store_is_absolute_at_the_repo_root(tmp_path):
    root = paths.repo_root(cwd=tmp_path)  # not a git repo: the working directory is the root
    assert root == tmp_path.resolve()
    uri = paths.default_store(root)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db" and uri.startswith("sqlite:////")


def test_environment_reads_the_variables_the_pipeline_uses():
    env = runtime.environment(
        {"DVC_EXP_NAME": "exp-1", "OPENBLAS_NUM_THREADS": "1", "PIPELINE_SWEEP": "s"}
    )
    assert (env.dvc_exp_name, env.blas_threads, env.sweep, env.sweep_parent) == (
        "exp-1",
        "1",
        "s",
        None,
    )
    assert runtime.environment({}).blas_threads == "default"


def test_a_password_in_a_uri_is_never_printed():
    uri = "postgresql+psycopg://mlflow:s3cr%40t@db.example:5432/mlflow"
    assert store.redact(uri) == "postgresql+psycopg://mlflow:***@db.example:5432/mlflow"
    assert store.redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert store.redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    said = 'password "s3cr@t" and s3cr%40t rejected'
    assert store.scrub(said, uri) == 'password "***" and *** rejected'


def test_which_artifact_locations_other_machines_can_reach():
    assert store.shares_artifacts("mlflow-artifacts:/3")
    assert store.shares_artifacts("s3://bucket/mlflow/3")
    assert not store.shares_artifacts("file:///home/me/repo/mlartifacts/zhang-cnn")
    assert not store.shares_artifacts("/home/me/repo/mlartifacts/zhang-cnn")


def test_a_database_that_is_down_fails_fast_naming_it_without_its_password():
    # Nothing listens on port 9 (discard); libpq is refused at once.
    uri = "postgresql+psycopg://mlflow:topsecret@127.0.0.1:9/mlflow"
    with pytest.raises(store.TrackingError) as caught:
        store.check_reachable(uri)
    said = str(caught.value)
    assert said.startswith("database postgresql+psycopg://mlflow:***@127.0.0.1:9/mlflow cannot")
    assert "Connection refused" in said and "topsecret" not in said


def test_unreachable_server_fails_fast():
    start = time.monotonic()
    with pytest.raises(store.TrackingError, match=r"unreachable.*unset MLFLOW_TRACKING_URI"):
        store.check_reachable("http://127.0.0.1:9")
    assert time.monotonic() - start < 5


def test_experiment_is_created_once_with_absolute_artifacts(experiment, request):
    client, exp_id, artifacts = experiment
    assert store.ensure_experiment(client, request.node.name, artifacts) == exp_id
    location = client.get_experiment(exp_id).artifact_location
    assert location == (artifacts / request.node.name).as_uri()
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"


def _status(client, run_id):
    return client.get_run(run_id).info.status


def test_run_statuses(experiment):
    client, exp_id, _ = experiment
    with runs.run(exp_id, run_name="ok") as r:
        ok = r.info.run_id
    with pytest.raises(ValueError), runs.run(exp_id, run_name="boom") as r:
        failed = r.info.run_id
        raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt), runs.run(exp_id, run_name="ctrl-c") as r:
        killed = r.info.run_id
        raise KeyboardInterrupt
    with pytest.raises(interrupts.Interrupted) as info, runs.run(exp_id, run_name="term") as r:
        terminated = r.info.run_id
        os.kill(os.getpid(), signal.SIGTERM)
        interrupts.check()  # where the training loop acts on it, between batches
        raise AssertionError("not reached")
    assert info.value.run_id == terminated and info.value.signum == signal.SIGTERM
    with pytest.raises(interrupts.Interrupted), runs.run(exp_id, run_name="late") as r:
        late = r.info.run_id
        os.kill(os.getpid(), signal.SIGINT)  # no safe point follows: acted on at the end
    with runs.run(exp_id, run_name="taken") as r:
        taken = r.info.run_id
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupts.take() == signal.SIGTERM  # work done: the run still ends FINISHED
    assert [_status(client, i) for i in (ok, failed, killed, terminated, late, taken)] == [
        "FINISHED",
        "FAILED",
        "KILLED",
        "KILLED",
        "KILLED",
        "FINISHED",
    ]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_log_series_keeps_every_point_in_order(experiment):
    client, exp_id, _ = experiment
    with runs.run(exp_id, run_name="series") as r:
        runs.log_series(client, r.info.run_id, "batch_loss", [0.5 + i for i in range(2500)], 7)
    history = client.get_metric_history(r.info.run_id, "batch_loss")
    assert sorted(m.step for m in history) == list(range(7, 2507))
    assert {m.step: m.value for m in history}[2506] == 0.5 + 2499


def test_parent_run_ends_from_its_children(experiment):
    client, exp_id, _ = experiment
    outcomes = {}
    for name, statuses in {
        "good": ["FINISHED"] * 2,
        "bad": ["FINISHED", "FAILED"],
        "none": [],
    }.items():
        parent = sweeps.create_parent(client, exp_id, name=name, command="python -m x")
        for i, status in enumerate(statuses):
            child = client.create_run(
                exp_id, tags={"mlflow.parentRunId": parent, "overrides": f"job={i}"}
            )
            client.set_terminated(child.info.run_id, status)
        outcomes[name] = (sweeps.finish_parent(client, parent), client.get_run(parent))
    good, bad, none = (outcomes[k] for k in ("good", "bad", "none"))
    assert good[0] == sweeps.SweepOutcome("good", 2, 2) and good[1].info.status == "FINISHED"
    assert (bad[0].name, bad[0].jobs, bad[0].finished) == ("bad", 2, 1)
    assert bad[1].info.status == "FAILED"
    assert bad[0].failures == (bad[1].data.tags["failed_jobs"],)
    assert bad[1].data.tags["failed_jobs"].startswith("job=1: FAILED (run ")
    assert bad[1].data.tags["failed_children"] == "1"
    assert none[1].info.status == "FAILED"  # a sweep whose jobs never started did not succeed


def test_parent_run_counts_the_jobs_launched_not_the_runs_logged(experiment):
    """Job 0 finished on its second attempt; job 1 was left RUNNING by a dead process; job 2
    never logged a run; job 3 was cancelled. Only what the jobs did decides the parent."""
    client, exp_id, _ = experiment
    parent = sweeps.create_parent(client, exp_id, name="launched", command="python -m x")
    jobs = ["lr=1 seed=0", "lr=1 seed=1", "lr=2 seed=0", "lr=2 seed=1"]

    def child(num, status):
        run = client.create_run(
            exp_id,
            tags={"mlflow.parentRunId": parent, "overrides": jobs[num], "hydra_job_num": num},
        )
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    child(0, "FAILED")
    time.sleep(0.01)  # start times order the attempts
    child(0, "FINISHED")
    left = child(1, "RUNNING")
    child(3, "KILLED")
    notes = {2: "Slurm job 7_2 CANCELLED", 3: "Slurm job 7_3 CANCELLED"}
    done = sweeps.finish_parent(client, parent, jobs=jobs, notes=notes)
    assert (done.jobs, done.finished) == (4, 1)
    assert done.failures == (
        f"lr=1 seed=1: run left RUNNING by its job, ended FAILED (run {left})",
        "lr=2 seed=0: no MLflow run (the job never started training); Slurm job 7_2 CANCELLED",
        done.failures[2],
    )
    assert done.failures[2].startswith("lr=2 seed=1: KILLED (run ")
    assert client.get_run(left).info.status == "FAILED"
    tags = client.get_run(parent).data.tags
    assert (tags["jobs"], tags["children"], tags["failed_jobs_count"]) == ("4", "4", "3")
    assert client.get_run(parent).info.status == "FAILED"


def test_parent_of_an_interrupted_sweep_ends_killed_and_leaves_running_children(experiment):
    client, exp_id, _ = experiment
    parent = sweeps.create_parent(client, exp_id, name="stopped", command="python -m x")
    run = client.create_run(exp_id, tags={"mlflow.parentRunId": parent, "hydra_job_num": "0"})
    done = sweeps.finish_parent(client, parent, jobs=["a=1"], ended=False, interrupted=True)
    assert client.get_run(parent).info.status == "KILLED" and done.finished == 0
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # its job may still run
