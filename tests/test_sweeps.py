"""Hydra multirun sweeps (basic, joblib, submitit_local launchers), DVC's queue, and
`pipeline.compare`, end to end on tiny data in a throwaway repo with a real MLflow store.
Each test works on its own copy of a prepared project (or of one with a sweep logged)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request

import pytest
from browser import chromium, needs_chromium
from conftest import SWEEP_FAST
from project import BATCH, N_TEST, N_TRAIN, SWEEP, TRAIN, assert_complete

from pipeline.reports import compare
from pipeline.tracking.server import Server

pytestmark = pytest.mark.e2e


def multirun(project, *overrides, check=True):
    return project.run(*SWEEP, *SWEEP_FAST, *overrides, check=check)


def sweep_runs(project, name):
    client = project.client
    exp = client.get_experiment_by_name("zhang-cnn")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep = '{name}'") if exp else []
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_role") == "child"]
    return parents, children


def test_basic_launcher_parent_and_children(swept_project):
    (parent,), children = sweep_runs(swept_project, "basic")
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {(c.data.params["train.lr"], c.data.params["seed"]) for c in children} == {
        ("0.5", "0"),
        ("0.5", "1"),
        ("1.0", "0"),
        ("1.0", "1"),
    }
    assert all("train.lr=" in c.data.tags["overrides"] for c in children)
    for c in children:
        assert_complete(swept_project.client, c)
    assert parent.data.tags["command"].startswith("python -m pipeline.train -m")


def test_joblib_four_concurrent_jobs_lose_nothing(prepared_project):
    project = prepared_project
    done = multirun(
        project,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "train.lr=0.3,0.5,1.0,2.0",
        "seed=0",
        "tracking.sweep=joblib4",
    )
    (parent,), children = sweep_runs(project, "joblib4")
    assert parent.info.status == "FINISHED" and len(children) == 4
    for c in children:
        assert_complete(project.client, c)
        assert c.data.tags["blas_threads"] == "1"  # each job pinned to one BLAS thread
    # The launcher's MLflow server served the jobs and is gone afterwards.
    server = re.search(r"MLflow server (http://\S+) over the SQLite store", done.stdout).group(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server}/health", timeout=2)


def test_submitit_local_launcher(prepared_project):
    project = prepared_project
    multirun(
        project,
        "hydra/launcher=submitit_local",
        "train.lr=0.5,1.0",
        "seed=0",
        "tracking.sweep=submitit",
    )
    (parent,), children = sweep_runs(project, "submitit")
    assert parent.info.status == "FINISHED" and len(children) == 2
    for c in children:
        assert_complete(project.client, c)


def test_one_failing_job_others_finish_and_the_report_names_it(prepared_project, tmp_path):
    project = prepared_project
    # lr 1e200 overflows float32 weights: that job diverges, the other one trains.
    done = multirun(
        project,
        "train.dtype=float32",
        "train.lr=1e200,1.0",
        "seed=0",
        "tracking.sweep=faulty",
        check=False,
    )
    assert done.returncode != 0
    (parent,), children = sweep_runs(project, "faulty")
    status = {c.data.params["train.lr"]: c.info.status for c in children}
    assert status == {"1e+200": "FAILED", "1.0": "FINISHED"}
    assert parent.info.status == "FAILED" and "train.lr=1e+200" in parent.data.tags["failed_jobs"]
    text = compare.compare(project.client, "zhang-cnn", "faulty", tmp_path / "faulty")
    assert "## Runs that did not finish" in text and "train.lr=1e+200" in text


def test_compare_report_numbers_come_from_the_runs(swept_project):
    import numpy as np

    from pipeline.reports import stats

    project = swept_project
    _, children = sweep_runs(project, "basic")
    done = project.run("python", "-m", "pipeline.compare", "basic")
    text = (project.root / "experiments/basic/report.md").read_text()
    assert done.stdout.strip() == text.strip()  # printed and written
    assert "Downloading artifacts" not in done.stderr
    errs, vals = (
        {(c.data.params["train.lr"], c.data.params["seed"]): c.data.metrics[m] for c in children}
        for m in ("test_error", "val_error")
    )
    for lr in ("0.5", "1.0"):
        values = np.array([errs[lr, s] for s in ("0", "1")])
        low, high = stats.rate_interval(values, n_images=N_TEST)  # within [0, 1]
        row = next(line for line in text.splitlines() if line.startswith(f"| {float(lr):g} "))
        assert f"{100 * values.mean():.2f} [{100 * low:.2f}, {100 * high:.2f}]" in row
    best = min(("0.5", "1.0"), key=lambda lr: vals[lr, "0"] + vals[lr, "1"])  # on validation
    other = {"0.5": "1.0", "1.0": "0.5"}[best]
    assert f"| {float(best):g} **(best)** |" in text
    p = stats.paired([errs[other, s] for s in "01"], [errs[best, s] for s in "01"])
    row = next(line for line in text.splitlines() if line.startswith(f"| {float(other):g} | 2 | "))
    assert f"{100 * p.mean:+.2f} [{100 * p.low:+.2f}, {100 * p.high:+.2f}]" in row
    assert "### Per seed: McNemar's test on the test images" in text  # predictions were logged
    assert f"the same {N_TEST:,} test images" in text
    for name in ("report.md", "errors.png", "curves.png", "comparison.json"):
        assert (project.root / "experiments/basic" / name).stat().st_size > 0
    (parent,), _ = sweep_runs(project, "basic")
    logged = {a.path for a in project.client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/report.md", "comparison/comparison.json"} <= logged
    assert "best_test_error" in project.client.get_run(parent.info.run_id).data.metrics


def test_compare_unknown_and_empty_sweeps(swept_project, tmp_path):
    project = swept_project
    done = project.run("python", "-m", "pipeline.compare", "no-such-sweep", check=False)
    assert done.returncode == 1
    assert "unknown sweep 'no-such-sweep'; known sweeps: ['basic']" in done.stderr
    exp = project.client.get_experiment_by_name("zhang-cnn")
    project.client.create_run(exp.experiment_id, tags={"sweep": "empty", "sweep_role": "parent"})
    with pytest.raises(compare.CompareError, match="has no runs"):
        compare.compare(project.client, "zhang-cnn", "empty", tmp_path / "empty")


def test_bad_sweep_config_fails_before_any_job(prepared_project):
    done = multirun(prepared_project, "train.lr=0.5,-1", "tracking.sweep=bad", check=False)
    assert done.returncode != 0
    assert "sweep not started: train.lr: must be > 0" in done.stdout + done.stderr
    assert sweep_runs(prepared_project, "bad") == ([], [])


@pytest.mark.heavy
def test_dvc_queue_sweep_logs_to_the_same_store(prepared_project):
    project = prepared_project
    project.run(
        "dvc", "exp", "run", "--queue", "-S", "train.lr=0.5,1.5", "-S", "tracking.log_model=false"
    )
    project.run("dvc", "queue", "start", "-j", "1")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = project.run("dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert "Success" in status and "Failed" not in status, status
    shown = json.loads(project.run("dvc", "exp", "show", "--json").stdout)
    names = {
        exp["name"] for rev in shown for exp in (rev.get("experiments") or []) if exp.get("name")
    }
    runs = project.client.search_runs(
        [project.client.get_experiment_by_name("zhang-cnn").experiment_id],
        "tags.dvc_exp_name != ''",
    )
    assert {r.data.tags["dvc_exp_name"] for r in runs} == names and len(names) == 2
    assert {r.data.params["train.lr"] for r in runs} == {"0.5", "1.5"}
    assert all(r.info.status == "FINISHED" for r in runs)


def test_hydra_single_run_in_replay_mode_logs_batch_losses(prepared_project):
    from pipeline.data.prepared import read_prepared
    from pipeline.model import toolbox
    from pipeline.model.inference import error_rate, predict
    from pipeline.model.weights import load_weights

    project = prepared_project
    project.run(
        *TRAIN,
        "train.rng=toolbox",
        "seed=0",
        "train.epochs=100",
        "tracking.log_model=false",
    )
    (run,) = project.runs()
    assert run.info.status == "FINISHED" and run.data.params["train.rng"] == "toolbox"
    steps = [m.step for m in project.client.get_metric_history(run.info.run_id, "batch_loss")]
    assert sorted(steps) == list(range(1, 100 * N_TRAIN // BATCH + 1))  # every image
    # Trained on transposed images, saved for natural ones: the logged test error is the
    # saved weights' error on natural images, and those weights fail on transposed images.
    weights = load_weights(next(project.root.glob("outputs/*/*/models/weights.npz")))
    test = read_prepared(project.root / "data/prepared/tiny.npz").split("test")
    natural = error_rate(predict(weights, test.x), test.labels)
    assert run.data.metrics["test_error"] == natural < 0.3
    assert error_rate(predict(weights, toolbox.present(test.x)), test.labels) > natural + 0.3


@needs_chromium
def test_mlflow_ui_shows_parent_and_children_in_a_browser(swept_project, tmp_path):
    (parent,), children = sweep_runs(swept_project, "basic")
    exp = parent.info.experiment_id
    ids = json.dumps([c.info.run_id for c in children])
    server = Server(swept_project.uri, env=swept_project.env).start()
    try:
        runs_page = f"{server.uri}/#/experiments/{exp}/runs"
        compare_page = (
            f"{server.uri}/#/compare-runs?runs={urllib.parse.quote(ids)}"
            f"&experiments={urllib.parse.quote(json.dumps([exp]))}"
        )
        pages = {}
        for name, url in (("runs", runs_page), ("compare", compare_page)):
            pages[name] = chromium(url, tmp_path / f"dom-{name}", "--dump-dom").stdout
            shot = tmp_path / f"{name}.png"
            chromium(url, tmp_path / f"shot-{name}", f"--screenshot={shot}")
            assert shot.stat().st_size > 10_000
    finally:
        server.stop()
    assert parent.info.run_name in pages["runs"]  # the sweep's parent run, in the runs table
    for c in children:  # every child, side by side on the comparison page
        assert c.info.run_name in pages["compare"]
    assert "test_error" in pages["compare"] and "train.lr" in pages["compare"]
