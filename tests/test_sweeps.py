"""Hydra multirun sweeps (basic, joblib, submitit_local launchers), DVC's queue, and
`pipeline.compare`, end to end on tiny data in a throwaway repo with a real MLflow store."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import project
import pytest
from mlflow.tracking import MlflowClient

from pipeline import compare, tracking

pytestmark = pytest.mark.e2e
FAST = ["tracking.log_model=false", "train.epochs=2"]


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweeps")
    uri = f"sqlite:///{base}/mlflow.db"
    root = project.make(base / "repo", uri)
    e = project.env(uri)
    project.run(["dvc", "repro", "prepare"], root, e)
    return root, e, MlflowClient(uri)


def multirun(root, e, *overrides, check=True):
    cmd = [sys.executable, "-m", "pipeline.train", "-m", *FAST, *overrides]
    return project.run(cmd, root, e, check=check)


def sweep_runs(client, name):
    exp = client.get_experiment_by_name("zhang-cnn")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep = '{name}'")
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_role") == "child"]
    return parents, children


def assert_complete(client, run, epochs=2, n_fit=45, batch=10):
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "val_error"):
        assert [m.step for m in client.get_metric_history(rid, key)] == list(range(1, epochs + 1))
    steps = [m.step for m in client.get_metric_history(rid, "batch_loss")]
    assert sorted(steps) == list(range(1, epochs * -(-n_fit // batch) + 1))
    assert "test_error" in run.data.metrics


def test_basic_launcher_parent_and_children(proj):
    root, e, client = proj
    multirun(root, e, "train.lr=0.5,1.0", "seed=0,1", "tracking.sweep=basic")
    (parent,), children = sweep_runs(client, "basic")
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {(c.data.params["train.lr"], c.data.params["seed"]) for c in children} == {
        ("0.5", "0"), ("0.5", "1"), ("1.0", "0"), ("1.0", "1"),
    }  # fmt: skip
    assert all("train.lr=" in c.data.tags["overrides"] for c in children)
    for c in children:
        assert_complete(client, c)
    assert parent.data.tags["command"].startswith("python -m pipeline.train -m")


def test_joblib_four_concurrent_jobs_lose_nothing(proj):
    root, e, client = proj
    done = multirun(root, e, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
                    "train.lr=0.3,0.5,1.0,2.0", "seed=0", "tracking.sweep=joblib4")  # fmt: skip
    (parent,), children = sweep_runs(client, "joblib4")
    assert parent.info.status == "FINISHED" and len(children) == 4
    for c in children:
        assert_complete(client, c)
        assert c.data.tags["blas_threads"] == "1"  # each job pinned to one BLAS thread
    # The launcher's MLflow server served the jobs and is gone afterwards.
    server = re.search(r"MLflow server (http://\S+) over the SQLite store", done.stdout).group(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server}/health", timeout=2)


def test_submitit_local_launcher(proj):
    root, e, client = proj
    multirun(root, e, "hydra/launcher=submitit_local", "train.lr=0.5,1.0", "seed=0",
             "tracking.sweep=submitit")  # fmt: skip
    (parent,), children = sweep_runs(client, "submitit")
    assert parent.info.status == "FINISHED" and len(children) == 2
    for c in children:
        assert_complete(client, c)


def test_one_failing_job_others_finish_and_the_report_names_it(proj, tmp_path):
    root, e, client = proj
    # lr 1e200 overflows float32 weights: that job diverges, the other one trains.
    done = multirun(root, e, "train.dtype=float32", "train.lr=1e200,1.0", "seed=0",
                    "tracking.sweep=faulty", check=False)  # fmt: skip
    assert done.returncode != 0
    (parent,), children = sweep_runs(client, "faulty")
    status = {c.data.params["train.lr"]: c.info.status for c in children}
    assert status == {"1e+200": "FAILED", "1.0": "FINISHED"}
    assert parent.info.status == "FAILED" and "train.lr=1e+200" in parent.data.tags["failed_jobs"]
    text = compare.compare(client, "zhang-cnn", "faulty", tmp_path / "faulty")
    assert "## Runs that did not finish" in text and "train.lr=1e+200" in text


def test_compare_report_numbers_come_from_the_runs(proj, tmp_path):
    _root, _e, client = proj
    _, children = sweep_runs(client, "basic")
    text = compare.compare(client, "zhang-cnn", "basic", tmp_path / "basic")
    for lr in ("0.5", "1.0"):
        errs = [c.data.metrics["test_error"] for c in children if c.data.params["train.lr"] == lr]
        s = compare.summarize(errs)
        row = next(line for line in text.splitlines() if line.startswith(f"| {float(lr):g} "))
        assert f"{100 * s.mean:.2f} ± {100 * s.ci95:.2f}" in row
    for name in ("report.md", "errors.png", "curves.png"):
        assert (tmp_path / "basic" / name).stat().st_size > 0
    (parent,), _ = sweep_runs(client, "basic")
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert logged == {"comparison/report.md", "comparison/errors.png", "comparison/curves.png"}


def test_compare_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df, t in enumerate(compare.T975, start=1):
        assert t == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4)


def test_compare_summary_hand_worked():
    s = compare.summarize([0.1, 0.2, 0.3])
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.2), pytest.approx(0.1))
    assert s.ci95 == pytest.approx(4.3027 * 0.1 / np.sqrt(3))


def test_compare_unknown_and_empty_sweeps(proj, tmp_path):
    root, e, client = proj
    done = project.run([sys.executable, "-m", "pipeline.compare", "no-such-sweep"], root, e,
                       check=False)  # fmt: skip
    assert done.returncode == 1 and "unknown sweep 'no-such-sweep'; known sweeps:" in done.stderr
    exp = client.get_experiment_by_name("zhang-cnn")
    client.create_run(exp.experiment_id, tags={"sweep": "empty", "sweep_role": "parent"})
    with pytest.raises(compare.CompareError, match="has no runs"):
        compare.compare(client, "zhang-cnn", "empty", tmp_path / "empty")


def test_bad_sweep_config_fails_before_any_job(proj):
    root, e, client = proj
    done = multirun(root, e, "train.lr=0.5,-1", "tracking.sweep=bad", check=False)
    assert done.returncode != 0
    assert "sweep not started: train.lr: must be > 0" in done.stdout + done.stderr
    assert sweep_runs(client, "bad") == ([], [])


def test_dvc_queue_sweep_logs_to_the_same_store(proj):
    root, e, client = proj
    project.run(["git", "add", "-A"], root, e)
    project.run(["git", "commit", "-q", "-m", "prepared", "--allow-empty"], root, e)
    project.run(["dvc", "exp", "run", "--queue", "-S", "train.lr=0.5,1.5",
                 "-S", "tracking.log_model=false"], root, e)  # fmt: skip
    project.run(["dvc", "queue", "start", "-j", "1"], root, e)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = project.run(["dvc", "queue", "status"], root, e).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert "Success" in status and "Failed" not in status, status
    shown = json.loads(project.run(["dvc", "exp", "show", "--json"], root, e).stdout)
    names = {
        exp["name"] for rev in shown for exp in (rev.get("experiments") or []) if exp.get("name")
    }
    exp_id = client.get_experiment_by_name("zhang-cnn").experiment_id
    runs = client.search_runs([exp_id], "tags.dvc_exp_name != ''")
    assert {r.data.tags["dvc_exp_name"] for r in runs} == names and len(names) == 2
    assert {r.data.params["train.lr"] for r in runs} == {"0.5", "1.5"}
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_mlflow_ui_shows_parent_and_children_in_a_browser(proj, tmp_path):
    _, _e, client = proj
    (parent,), children = sweep_runs(client, "basic")
    exp = parent.info.experiment_id
    ids = json.dumps([c.info.run_id for c in children])
    server = tracking.Server(client.tracking_uri).start()
    try:
        runs_page = f"{server.uri}/#/experiments/{exp}/runs"
        compare_page = (f"{server.uri}/#/compare-runs?runs={urllib.parse.quote(ids)}"
                        f"&experiments={urllib.parse.quote(json.dumps([exp]))}")  # fmt: skip
        cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--no-first-run",
               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
               "--window-size=1600,1000", "--virtual-time-budget=20000"]  # fmt: skip
        pages = {}
        for name, url in (("runs", runs_page), ("compare", compare_page)):
            pages[name] = subprocess.run([*cmd, "--dump-dom", url], capture_output=True,
                                         text=True, timeout=120).stdout  # fmt: skip
            shot = tmp_path / f"{name}.png"
            subprocess.run([*cmd, f"--screenshot={shot}", url], capture_output=True, timeout=120)
            assert shot.stat().st_size > 10_000
    finally:
        server.stop()
    assert parent.info.run_name in pages["runs"]  # the sweep's parent run, in the runs table
    for c in children:  # every child, side by side on the comparison page
        assert c.info.run_name in pages["compare"]
    assert "test_error" in pages["compare"] and "train.lr" in pages["compare"]
