"""`dvc repro` end to end in a throwaway git repo on tiny synthetic data, with a real MLflow
SQLite store: the run's params, metric histories, artifacts and model; reruns; `dvc exp run -S`;
the faults (divergence, SIGTERM, an unreachable server)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import project
import pytest
from mlflow.tracking import MlflowClient

from pipeline.dataset import load_prepared
from pipeline.outputs import load_weights
from pipeline.training import predict

pytestmark = pytest.mark.e2e
OUTPUTS = ["models/weights.npz", "metrics/train.json", "metrics/test.json", "plots/epochs.csv",
           "plots/batches.csv", "plots/confusion.csv"]  # fmt: skip


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    uri = f"sqlite:///{base}/mlflow.db"
    root = project.make(base / "repo", uri)
    e = project.env(uri)
    first = project.run(["dvc", "repro"], root, e)
    client = MlflowClient(uri)
    return root, e, uri, client, first


def _runs(client, **filters):
    exp = client.get_experiment_by_name("zhang-cnn")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if all(r.data.params.get(k) == v for k, v in filters.items())]


def test_repro_logs_one_complete_run(proj):
    root, _, _, client, _ = proj
    for rel in OUTPUTS:
        assert (root / rel).is_file(), rel
    (run,) = _runs(client)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["train.lr"], p["train.batch_size"], p["train.epochs"], p["seed"]) == (
        "1.0", "10", "2", "0",
    )  # fmt: skip
    assert p["data.name"] == "tiny" and p["tracking.experiment"] == "zhang-cnn"
    t = run.data.tags
    assert t["dataset"] == "tiny" and t["seed"] == "0" and len(t["data_sha256"]) == 64
    # the committed project, clean although DVC rewrote its own outputs during the stage
    assert len(t["git_commit"]) == 40 and "dirty" not in t["git_commit"]
    run_id = run.info.run_id
    for key in ("train_loss", "val_loss", "val_error"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2], key
    batches = client.get_metric_history(run_id, "batch_loss")
    n_fit = 60 - 15
    per_epoch = -(-n_fit // 10)
    assert sorted(m.step for m in batches) == list(range(1, 2 * per_epoch + 1))
    csv_losses = np.loadtxt(root / "plots/batches.csv", delimiter=",", skiprows=1)[:, 2]
    np.testing.assert_array_equal(sorted(batches, key=lambda m: m.step)[-1].value, csv_losses[-1])
    test = json.loads((root / "metrics/test.json").read_text())
    assert run.data.metrics["test_error"] == test["test_error"]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"weights.npz", "params.yaml", "learning_curves.png", "confusion_matrix.png",
            "kernels_c1.png", "kernels_c2.png"} <= artifacts  # fmt: skip


def test_pyfunc_model_predicts_like_the_pipeline(proj):
    root, e, uri, client, _ = proj
    (run,) = _runs(client)
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    test = load_prepared(root / "data/prepared/tiny.npz", np.float64).test
    expected = predict(load_weights(root / "models/weights.npz"), test.x)
    np.testing.assert_array_equal(model.predict(test.x), expected)
    # The CLI, offline: --env-manager local uses this environment instead of building one.
    (root / "in.json").write_text(json.dumps({"inputs": test.x[:5].tolist()}))
    cmd = ["mlflow", "models", "predict", "-m", f"runs:/{run.info.run_id}/model",
           "-i", "in.json", "-t", "json", "--env-manager", "local"]  # fmt: skip
    done = project.run(cmd, root, e)
    assert json.loads(done.stdout.strip().splitlines()[-1])["predictions"] == expected[:5].tolist()


def test_metrics_show(proj):
    root, e, *_ = proj
    shown = json.loads(project.run(["dvc", "metrics", "show", "--json"], root, e).stdout)
    metrics = next(iter(shown.values()))["data"]
    assert "test_error" in metrics["metrics/test.json"]["data"]


def test_second_repro_runs_nothing(proj):
    root, e, _, client, _ = proj
    again = project.run(["dvc", "repro"], root, e)
    assert "Running stage" not in again.stdout
    assert len(_runs(client)) == 1


def test_forced_repro_is_byte_identical(proj):
    root, e, _, client, _ = proj
    before = {rel: (root / rel).read_bytes() for rel in OUTPUTS}
    project.run(["dvc", "repro", "-f", "train", "evaluate"], root, e)
    for rel in OUTPUTS:
        assert (root / rel).read_bytes() == before[rel], rel
    assert len(_runs(client)) == 2


def test_exp_run_set_param_logs_a_new_run(proj):
    root, e, _, client, _ = proj
    project.run(["git", "add", "-A"], root, e)
    project.run(["git", "commit", "-q", "-m", "results"], root, e)
    project.run(["dvc", "exp", "run", "-S", "train.lr=0.5"], root, e)
    (run,) = _runs(client, **{"train.lr": "0.5"})
    assert run.info.status == "FINISHED"
    assert "lr: 0.5" in (root / "params.yaml").read_text()
    project.run(["git", "checkout", "params.yaml", "dvc.lock"], root, e)


def _train(root, e, *args):
    cmd = [sys.executable, "-m", "pipeline.train", "--params", "params.yaml", *args]
    return subprocess.Popen(cmd, cwd=root, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def test_divergence_fails_the_run_and_writes_no_weights(proj, tmp_path):
    root, e, _, client, _ = proj
    (root / "models/weights.npz").unlink()
    text = (root / "params.yaml").read_text()
    # A sigmoid network saturates rather than overflowing in float64; in float32 this learning
    # rate overflows the weights and the loss turns NaN at the second batch.
    bad = text.replace("lr: 1.0", "lr: 1.0e+200").replace("dtype: float64", "dtype: float32")
    (root / "params.yaml").write_text(bad)
    try:
        proc = _train(root, e)
        _, err = proc.communicate(timeout=120)
    finally:
        (root / "params.yaml").write_text(text)
    assert proc.returncode == 1
    assert "diverged" in err.lower()
    (run,) = _runs(client, **{"train.lr": "1e+200"})
    assert run.info.status == "FAILED"
    assert not (root / "models/weights.npz").exists()


def test_sigterm_kills_the_run_and_writes_no_weights(proj):
    root, e, _, client, _ = proj
    (root / "models/weights.npz").unlink(missing_ok=True)
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(text.replace("epochs: 2", "epochs: 100000"))
    try:
        proc = _train(root, e)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _runs(client, **{"train.epochs": "100000"}):
            time.sleep(0.2)
        time.sleep(1.0)  # well inside training now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        (root / "params.yaml").write_text(text)
    assert proc.returncode == 130, err
    (run,) = _runs(client, **{"train.epochs": "100000"})
    assert run.info.status == "KILLED"
    assert not (root / "models/weights.npz").exists()
    assert not list((root / "models").glob(".*tmp"))


def test_unreachable_server_fails_before_training(proj):
    root, e, *_ = proj
    start = time.monotonic()
    proc = _train(root, e | {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "unreachable" in err and "http://127.0.0.1:9" in err
    assert time.monotonic() - start < 20
