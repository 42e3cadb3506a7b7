"""`dvc repro` end to end in a throwaway git repo on tiny synthetic data, with a real MLflow
SQLite store: the run's params, metric histories, artifacts and model; reruns; `dvc exp run -S`;
the faults (divergence, SIGTERM, an unreachable server). Each test works on its own copy of the
project that `dvc repro` produced once (conftest.tiny_repro)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest
from project import BATCH, N_TRAIN, VAL_SIZE

from pipeline.data.prepared import read_prepared
from pipeline.model.inference import predict
from pipeline.model.weights import load_weights
from pipeline.paths import OUTPUT_NAMES

pytestmark = pytest.mark.e2e
OUTPUTS = sorted(OUTPUT_NAMES.values())


def test_repro_logs_one_complete_run(repro_project, tiny_repro):
    project = repro_project
    assert "Running stage 'train'" in tiny_repro[1]
    for rel in OUTPUTS:
        assert (project.root / rel).is_file(), rel
    (run,) = project.runs()
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["train.lr"], p["train.batch_size"], p["train.epochs"], p["seed"]) == (
        "1.0",
        "10",
        "2",
        "0",
    )
    assert p["data.name"] == "tiny" and p["tracking.experiment"] == "zhang-cnn"
    t = run.data.tags
    assert t["dataset"] == "tiny" and t["seed"] == "0" and len(t["data_sha256"]) == 64
    # the committed project, clean although DVC rewrote its own outputs during the stage
    assert len(t["git_commit"]) == 40 and "dirty" not in t["git_commit"]
    (used,) = run.inputs.dataset_inputs  # MLflow's dataset tracking: the UI's Dataset column
    assert (used.dataset.name, used.dataset.digest) == ("tiny", t["data_sha256"][:36])
    assert "data/prepared/tiny.npz" in used.dataset.source
    tags = {tag.key: tag.value for tag in used.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["provenance"] == "folder ../src (fetch.local_dir)"
    run_id = run.info.run_id
    client = project.client
    for key in ("train_loss", "val_loss", "val_error"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2], key
    batches = client.get_metric_history(run_id, "batch_loss")
    per_epoch = -(-(N_TRAIN - VAL_SIZE) // BATCH)
    assert sorted(m.step for m in batches) == list(range(1, 2 * per_epoch + 1))
    csv_losses = np.loadtxt(project.root / "plots/batches.csv", delimiter=",", skiprows=1)[:, 2]
    np.testing.assert_array_equal(max(batches, key=lambda m: m.step).value, csv_losses[-1])
    test = json.loads((project.root / "metrics/test.json").read_text())
    assert run.data.metrics["test_error"] == test["test_error"]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {
        "weights.npz",
        "params.yaml",
        "learning_curves.png",
        "confusion_matrix.png",
        "kernels_c1.png",
        "kernels_c2.png",
    } <= artifacts


def test_pyfunc_model_predicts_like_the_pipeline(repro_project):
    project = repro_project
    (run,) = project.runs()
    mlflow.set_tracking_uri(project.uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    test = read_prepared(project.root / "data/prepared/tiny.npz").split("test")
    x = test.x.array(np.float64)
    expected = predict(load_weights(project.root / "models/weights.npz"), test.x)
    np.testing.assert_array_equal(model.predict(x), expected)
    # The CLI, offline: --env-manager local uses this environment instead of building one.
    (project.root / "in.json").write_text(json.dumps({"inputs": x[:5].tolist()}))
    done = project.run(
        "mlflow",
        "models",
        "predict",
        "-m",
        f"runs:/{run.info.run_id}/model",
        "-i",
        "in.json",
        "-t",
        "json",
        "--env-manager",
        "local",
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["predictions"] == expected[:5].tolist()


def test_metrics_show(repro_project):
    shown = json.loads(repro_project.run("dvc", "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]
    assert "test_error" in metrics["metrics/test.json"]["data"]


def test_second_repro_runs_nothing(repro_project):
    again = repro_project.run("dvc", "repro")
    assert "Running stage" not in again.stdout
    assert len(repro_project.runs()) == 1


def test_forced_repro_is_byte_identical(repro_project):
    project = repro_project
    before = {rel: (project.root / rel).read_bytes() for rel in OUTPUTS}
    project.run("dvc", "repro", "-f", "train", "evaluate")
    for rel in OUTPUTS:
        assert (project.root / rel).read_bytes() == before[rel], rel
    assert len(project.runs()) == 2


def test_exp_run_set_param_logs_a_new_run(repro_project):
    repro_project.run("dvc", "exp", "run", "-S", "train.lr=0.5")
    (run,) = repro_project.runs(**{"train.lr": "0.5"})
    assert run.info.status == "FINISHED"
    assert "lr: 0.5" in (repro_project.root / "params.yaml").read_text()


def _train(project, **extra_env):
    cmd = [sys.executable, "-m", "pipeline.train", "--params", "params.yaml"]
    return subprocess.Popen(
        cmd,
        cwd=project.root,
        env=project.env | extra_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_divergence_fails_the_run_and_writes_no_weights(repro_project):
    project = repro_project
    (project.root / "models/weights.npz").unlink()
    params = project.root / "params.yaml"
    # A sigmoid network saturates rather than overflowing in float64; in float32 this learning
    # rate overflows the weights and the loss turns NaN at the second batch.
    text = params.read_text()
    params.write_text(text.replace("lr: 1.0", "lr: 1.0e+200").replace("float64", "float32"))
    proc = _train(project)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "diverged" in err.lower()
    (run,) = project.runs(**{"train.lr": "1e+200"})
    assert run.info.status == "FAILED"
    assert not (project.root / "models/weights.npz").exists()


def test_sigterm_kills_the_run_and_writes_no_weights(repro_project):
    project = repro_project
    (project.root / "models/weights.npz").unlink()
    params = project.root / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 2", "epochs: 100000"))
    proc = _train(project)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not project.runs(**{"train.epochs": "100000"}):
        time.sleep(0.2)
    time.sleep(1.0)  # well inside training now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (run,) = project.runs(**{"train.epochs": "100000"})
    assert run.info.status == "KILLED"
    assert not (project.root / "models/weights.npz").exists()
    assert not list((project.root / "models").glob(".*tmp"))


def test_unreachable_server_fails_before_training(repro_project):
    start = time.monotonic()
    proc = _train(repro_project, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "unreachable" in err and "http://127.0.0.1:9" in err
    assert time.monotonic() - start < 20
