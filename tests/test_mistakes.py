"""A mistake never costs data: bad values are refused before DVC deletes anything, a config
change does not refetch, interruptions say what they left (and it is true), broken stores are
named before any data loads, paths work from any subfolder, no process outlives its sweep."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SWEEP_FAST
from project import BIN, SWEEP, TRAIN

from pipeline import interrupts
from pipeline.paths import OUTPUT_NAMES
from pipeline.tracking import store

OUTPUTS = sorted(OUTPUT_NAMES.values())


def digest(root: Path, rels=OUTPUTS) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in rels}


# --------------------------------------------------------------------------- bad values


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=-1", "train.lr: must be > 0, got -1.0"),
        ("train.lr=abc", "train.lr: Value 'abc' of type 'str' could not be converted to Float"),
        ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
        ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
        ("train.dtype=float16", "train.dtype: must be float32 or float64, got 'float16'"),
        ("seed=-1", "seed: must be >= 0"),
        (
            "tracking.uri=http://127.0.0.1:9",
            "MLflow tracking server http://127.0.0.1:9 is unreachable",
        ),
    ],
)
def test_bad_exp_run_value_fails_before_any_output_is_removed(repro_project, override, message):
    before = digest(repro_project.root)
    env = {"MLFLOW_TRACKING_URI": ""} if override.startswith("tracking.uri") else {}
    done = repro_project.run("dvc", "exp", "run", "-S", override, check=False, **env)
    assert done.returncode != 0
    assert f"validate failed: {message}" in done.stderr, done.stderr
    assert "`git checkout params.yaml` restores the committed one" in done.stderr
    assert digest(repro_project.root) == before  # every output as it was
    assert "Running stage 'train'" not in done.stdout
    assert len(repro_project.runs()) == 1  # no new MLflow run either


@pytest.mark.e2e
def test_an_edited_params_yaml_fails_before_dvc_repro_removes_anything(repro_project):
    params = repro_project.root / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 2", "epochs: -2"))
    before = digest(repro_project.root)
    done = repro_project.run("dvc", "repro", check=False)
    assert done.returncode != 0 and "validate failed: train.epochs: must be >= 1" in done.stderr
    assert digest(repro_project.root) == before


@pytest.mark.e2e
def test_a_failed_experiment_is_undone_with_dvc_checkout(repro_project):
    # A valid value that fails inside training: DVC has removed the train outputs by then.
    before = digest(repro_project.root)
    done = repro_project.run(
        "dvc", "exp", "run", "-S", "train.lr=1e200", "-S", "train.dtype=float32", check=False
    )
    assert done.returncode != 0 and "diverged" in done.stderr
    repro_project.run("git", "checkout", "params.yaml")
    repro_project.run("dvc", "checkout")  # every output is cached: all of them come back
    assert digest(repro_project.root) == before


# --------------------------------------------------------------------------- raw data


@pytest.mark.e2e
def test_a_training_change_neither_refetches_nor_needs_the_network(repro_project):
    raw = ["data/raw/tiny/" + n for n in sorted(os.listdir(repro_project.root / "data/raw/tiny"))]
    before = digest(repro_project.root, raw)
    shutil.rmtree(repro_project.base / "src")  # the only source: a refetch would now fail
    done = repro_project.run("dvc", "exp", "run", "-S", "data.subset=20")
    assert "Running stage 'fetch'" not in done.stdout
    assert "Running stage 'prepare'" not in done.stdout  # subset only matters to training
    assert "Running stage 'train'" in done.stdout
    # Forced, fetch finds its verified files in place (they persist) and needs no source.
    repro_project.run("dvc", "repro", "-f", "fetch")
    assert digest(repro_project.root, raw) == before


@pytest.mark.e2e
def test_prepare_refuses_a_raw_file_that_does_not_match_the_manifest(repro_project):
    raw = repro_project.root / "data/raw/tiny/train-labels-idx1-ubyte"
    data = bytearray(raw.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: still a well-formed IDX file
    raw.write_bytes(bytes(data))
    prepared = repro_project.root / "data/prepared/tiny.npz"
    before = prepared.read_bytes()
    done = repro_project.run("python", "-m", "pipeline.prepare", check=False)
    assert done.returncode == 1
    assert "train-labels-idx1-ubyte does not match the manifest" in done.stderr
    assert "run `dvc repro fetch`" in done.stderr and prepared.read_bytes() == before


# --------------------------------------------------------------------------- interruptions


STAND_IN = """
import os, signal, sys, time
from pathlib import Path
import {module} as where
import {entry_module} as entry

def arrives(*args, **kwargs):  # the step of the entry point where the signal arrives
    os.kill(os.getpid(), signal.{signal})
    time.sleep(0.1)  # delivered by now: raised at once, or noted for the next safe point
    return {returns}

where.{attr} = arrives
sys.exit(entry.{call})
"""


def signal_during(project, *, module, attr, entry, call, signum="SIGTERM", returns="None"):
    """Run an entry point in `project` with `module.attr` replaced by a step that signals."""
    code = STAND_IN.format(
        module=module, attr=attr, entry_module=entry, call=call, signal=signum, returns=returns
    )
    return project.run("python", "-c", code, check=False)


@pytest.mark.e2e
def test_interrupted_fetch_and_prepare_say_what_they_left(prepared_project):
    fetch = "pipeline.fetch"
    done = signal_during(prepared_project, module=fetch, attr="fetch", entry=fetch, call="main([])")
    assert done.returncode == 130
    assert done.stderr.strip() == (
        "fetch interrupted: files already verified in data/raw/tiny stay, no partial file was "
        "written; rerun to fetch the rest"
    )
    prepared = prepared_project.root / "data/prepared/tiny.npz"
    before = prepared.read_bytes()
    prep = "pipeline.prepare"
    done = signal_during(
        prepared_project,
        module=prep,
        attr="prepare_arrays",
        entry=prep,
        call="main([])",
        signum="SIGINT",
    )
    assert done.returncode == 130
    assert done.stderr.strip() == "prepare interrupted: the prepared file was not changed"
    assert prepared.read_bytes() == before


@pytest.mark.e2e
def test_sigterm_while_logging_artifacts_leaves_the_outputs_and_says_so(repro_project):
    before = digest(repro_project.root)
    done = signal_during(
        repro_project,
        module="pipeline.reports.figures",
        attr="kernels",  # the run is logging its figures
        entry="pipeline.train",
        call="run_stage(Path('params.yaml'))",
    )
    assert done.returncode == 130
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train interrupted: MLflow run "), err
    assert "ended KILLED; no output was written (models/weights.npz and the others" in err[0]
    assert digest(repro_project.root) == before  # true: nothing was written
    run_id = err[0].split("MLflow run ")[1].split()[0]
    assert repro_project.client.get_run(run_id).info.status == "KILLED"


@pytest.mark.e2e
def test_sigterm_after_the_outputs_are_written_finishes_the_run(repro_project):
    code = """
import os, signal, sys
from pathlib import Path
import pipeline.train as train
real = train.write_together
def write_then_signal(contents):
    real(contents)
    os.kill(os.getpid(), signal.SIGTERM)
train.write_together = write_then_signal
sys.exit(train.run_stage(Path("params.yaml")))
"""
    done = repro_project.run("python", "-c", code, check=False)
    assert done.returncode == 0, done.stderr
    assert (
        "interrupted after the outputs were written: they and the run are complete" in done.stdout
    )
    assert repro_project.runs()[-1].info.status == "FINISHED"


@pytest.mark.e2e
def test_interrupted_evaluate_changes_nothing(repro_project):
    before = digest(repro_project.root)
    ev = "pipeline.evaluate"
    done = signal_during(repro_project, module=ev, attr="assess", entry=ev, call="main([])")
    assert done.returncode == 130
    assert done.stderr.strip() == "evaluate interrupted: its outputs were not changed"
    assert digest(repro_project.root) == before


@pytest.mark.e2e
def test_hydra_entry_on_sigterm_exits_130_with_one_line(prepared_project):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "train.epochs=100000", "tracking.log_model=false"],
        cwd=prepared_project.root,
        env=prepared_project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not prepared_project.runs():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("train interrupted: MLflow run ")
    assert prepared_project.runs()[0].info.status == "KILLED"


# --------------------------------------------------------------------------- orphans


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True, text=True)
    rows = [line.split(None, 3) for line in out.stdout.splitlines()]
    found, grew = {pid}, True
    while grew:
        grew = False
        for p, pp, *_ in rows:
            if int(pp) in found and int(p) not in found:
                found.add(int(p))
                grew = True
    return found - {pid}


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"):
            continue  # a zombie waiting for its parent: already dead
        alive.add(pid)
    return alive


@pytest.mark.e2e
def test_kill_9_of_a_joblib_sweep_leaves_no_process_behind(prepared_project):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "train.epochs=100000",
            "tracking.log_model=false",
            "train.lr=0.5,1.0",
            "tracking.sweep=doomed",
        ],
        cwd=prepared_project.root,
        env=prepared_project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(prepared_project.runs()) < 3:  # parent + 2 jobs
        time.sleep(0.5)
    assert len(prepared_project.runs()) >= 3, "the sweep's jobs did not start"
    family = _descendants(proc.pid)
    assert any("mlflow" in Path(f"/proc/{p}/cmdline").read_text() for p in _alive(family))
    proc.kill()  # kill -9: no handler, no atexit
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(family):
        time.sleep(0.5)
    assert not _alive(family), [Path(f"/proc/{p}/cmdline").read_text() for p in _alive(family)]


# --------------------------------------------------------------------------- broken stores


def _mlflow_db(tmp_path: Path) -> Path:
    path = tmp_path / "mlflow.db"
    store.connect(f"sqlite:///{path}", "x", tmp_path / "artifacts")
    import mlflow

    mlflow.set_tracking_uri(None)
    return path


def test_a_file_that_is_not_a_database_is_named_with_the_fix(tmp_path):
    path = tmp_path / "mlflow.db"
    path.write_text("these are my notes\n")
    with pytest.raises(store.TrackingError) as info:
        store.connect(f"sqlite:///{path}", "x", tmp_path)
    text = str(info.value)
    assert f"{path} is not an SQLite database" in text and f"mv {path} {path}.bak" in text
    assert "\n" not in text  # one paragraph


def test_a_damaged_store_is_named_with_the_fix(tmp_path):
    path = _mlflow_db(tmp_path)
    data = bytearray(path.read_bytes())
    data[4096:] = os.urandom(len(data) - 4096)  # every page after the first is garbage
    path.write_bytes(bytes(data))
    with pytest.raises(store.TrackingError, match=r"is damaged \(SQLite: .*\.recover"):
        store.check_sqlite(path)


def test_a_locked_store_is_named_with_the_fix(tmp_path):
    path = _mlflow_db(tmp_path)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(store.TrackingError, match=r"is locked: .*fuser"):
            store.check_sqlite(path, lock_timeout_s=0.2)
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr (Debian e2fsprogs) is absent")
def test_a_read_only_store_is_named_before_any_data_loads(repro_project):
    db = repro_project.base / "mlflow.db"
    done = subprocess.run(["chattr", "+i", str(db)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
    try:
        (repro_project.root / "data/prepared/tiny.npz").unlink()  # loading data would fail too
        done = repro_project.run(*TRAIN, "--params", "params.yaml", check=False)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"MLflow store {db} is read-only for this user" in lines[0]


# --------------------------------------------------------------------------- paths


@pytest.mark.e2e
def test_entry_points_work_from_a_subfolder(swept_project):
    sub = swept_project.root / "conf" / "train"
    # As with an editable install of the project: its package is importable from anywhere.
    env = swept_project.env | {"PYTHONPATH": str(swept_project.root)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.compare", "basic"],
        cwd=sub,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (swept_project.root / "experiments/basic/report.md").is_file()
    assert not (sub / "experiments").exists()
    train = [sys.executable, "-m", "pipeline.train", "train.epochs=1", "tracking.log_model=false"]
    done = subprocess.run(train, cwd=sub, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list(swept_project.root.glob("outputs/*/*/models/weights.npz"))
    assert not (sub / "outputs").exists()
    dvc = subprocess.run([str(BIN / "dvc"), "status"], cwd=sub, env=env)
    assert dvc.returncode == 0


def test_advice_names_the_dataset_to_prepare(tmp_path, monkeypatch):
    from pipeline.train import prepare_advice

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  name: mnist\n")
    assert prepare_advice("mnist", Path("params.yaml")) == "prepare it with `dvc repro prepare`"
    advice = prepare_advice("fashion_mnist", Path("params.yaml"))
    assert "`dvc exp run -S data=fashion_mnist prepare`" in advice


@pytest.mark.e2e
def test_a_sweep_name_in_use_resumes_its_own_jobs_and_refuses_other_ones(swept_project, tmp_path):
    p = swept_project
    other = p.run(*SWEEP, "train.lr=0.5", "tracking.sweep=basic", check=False)
    assert other.returncode != 0
    said = other.stdout + other.stderr
    assert "a sweep named 'basic' already exists in experiment 'zhang-cnn' with other jobs" in said
    assert "Rerun that command to resume it, or name this sweep differently" in said
    assert len(p.runs()) == 5  # the parent and its 4 children, nothing new
    sweep = ["-m", *SWEEP_FAST, "train.lr=0.5,1.0", "seed=0,1", "tracking.sweep=basic"]
    same = p.run(*TRAIN, *sweep)
    assert "sweep basic: 4/4 jobs finished (4 skipped)" in same.stdout
    assert len(p.runs()) == 5  # every job already FINISHED with the same config, code and data
    forced = p.run(*TRAIN, *sweep, "train.resume=never")
    assert "sweep basic: resuming it" in forced.stdout and "all 4 jobs train again" in forced.stdout
    assert "sweep basic: 4/4 jobs finished (4 trained)" in forced.stdout
    found = p.runs()
    parents = [r for r in found if r.data.tags.get("sweep_role") == "parent"]
    assert len(found) == 9 and len(parents) == 1 and parents[0].info.status == "FINISHED"
    report = p.run("python", "-m", "pipeline.compare", "basic", "--out", str(tmp_path / "r"))
    assert "4 of 4 runs finished" in report.stdout  # each job once: its latest run
    assert "| train.resume" not in report.stdout  # how a run resumes is not a setting


def test_interrupts_take_and_check():
    with interrupts.at_safe_points():
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupts.take() == signal.SIGTERM and interrupts.take() is None
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(interrupts.Interrupted, match="SIGINT"):
            interrupts.check()
