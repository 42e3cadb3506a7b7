"""MLflow edge: store resolution, one experiment, run statuses, fail-fast on a dead server."""

import os
import signal
import time

import mlflow
import pytest

from pipeline import tracking


def test_flatten_gives_dotted_keys():
    tree = {"seed": 0, "train": {"lr": 1.0, "opt": {"kind": "sgd"}}, "data": {"subset": None}}
    assert tracking.flatten(tree) == {
        "seed": 0, "train.lr": 1.0, "train.opt.kind": "sgd", "data.subset": None,
    }  # fmt: skip


def test_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.resolve_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.resolve_uri("http://x:5000") == "http://x:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking.resolve_uri("http://x:5000") == "sqlite:////elsewhere.db"


def test_default_store_is_absolute_at_the_repo_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # not a git repo: the working directory is the root
    uri = tracking.resolve_uri(None)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db" and uri.startswith("sqlite:////")


def test_unreachable_server_fails_fast():
    start = time.monotonic()
    with pytest.raises(tracking.TrackingError, match=r"unreachable.*unset MLFLOW_TRACKING_URI"):
        tracking.check_reachable("http://127.0.0.1:9")
    assert time.monotonic() - start < 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (MLflow dislikes many stores in one pytest process)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    old = os.environ.get("DVC_ROOT")
    os.environ["DVC_ROOT"] = str(root)
    client, exp_id = tracking.connect(uri, "unit")
    yield client, exp_id, root
    mlflow.set_tracking_uri(None)
    if old is None:
        os.environ.pop("DVC_ROOT", None)
    else:
        os.environ["DVC_ROOT"] = old


def test_experiment_is_created_once_with_absolute_artifacts(store):
    client, exp_id, root = store
    assert tracking.ensure_experiment(client, "unit") == exp_id
    location = client.get_experiment(exp_id).artifact_location
    assert location == (root / "mlartifacts" / "unit").as_uri()


def _status(client, run_id):
    return client.get_run(run_id).info.status


def test_run_statuses(store):
    client, exp_id, _ = store
    with tracking.run(exp_id, run_name="ok") as r:
        ok = r.info.run_id
    with pytest.raises(ValueError), tracking.run(exp_id, run_name="boom") as r:
        failed = r.info.run_id
        raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt), tracking.run(exp_id, run_name="ctrl-c") as r:
        killed = r.info.run_id
        raise KeyboardInterrupt
    with pytest.raises(tracking.Terminated), tracking.run(exp_id, run_name="sigterm") as r:
        terminated = r.info.run_id
        os.kill(os.getpid(), signal.SIGTERM)
        tracking.stop_point()  # where the training loop acts on it, between batches
        raise AssertionError("not reached")
    with pytest.raises(KeyboardInterrupt), tracking.run(exp_id, run_name="late") as r:
        late = r.info.run_id
        os.kill(os.getpid(), signal.SIGINT)  # no stop point follows: acted on at the end
    assert [_status(client, i) for i in (ok, failed, killed, terminated, late)] == [
        "FINISHED", "FAILED", "KILLED", "KILLED", "KILLED",
    ]  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_log_series_keeps_every_point_in_order(store):
    client, exp_id, _ = store
    with tracking.run(exp_id, run_name="series") as r:
        tracking.log_series(client, r.info.run_id, "batch_loss", [0.5 + i for i in range(2500)], 7)
    history = client.get_metric_history(r.info.run_id, "batch_loss")
    assert sorted(m.step for m in history) == list(range(7, 2507))
    assert {m.step: m.value for m in history}[2506] == 0.5 + 2499
