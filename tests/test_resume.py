"""Interrupted work resumes: checkpoints that continue training exactly (both dtypes, the toolbox
replay), refused when made by another run; signals that checkpoint at a batch boundary and hand
SIGUSR2 on to submitit; stale runs found and closed; metric steps logged once; a sweep's jobs
counted once however often it ran. End to end: kill -9 and SIGTERM mid-epoch, then resume, give
the bytes of an uninterrupted run; an interrupted sweep run again trains only the rest."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import SWEEP_FAST
from mlflow.entities import RunTag
from project import BATCHES_PER_EPOCH, TRAIN

from pipeline import interrupts
from pipeline import runs as runs_command
from pipeline.model import checkpoint, cnn, sgd, toolbox
from pipeline.model.plan import make_generators, shuffled
from pipeline.tracking import liveness, runs, sweeps

N, BATCH, EPOCHS = 30, 10, 3  # 3 batches per epoch


def data(dtype) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.random((N, 28, 28)).astype(dtype)  # (N, 28, 28)
    return x, np.eye(10, dtype=dtype)[rng.integers(0, 10, N)]  # (N, 10)


def start(mode: str, dtype):
    """Initial params and a fresh order of a run, as `make_plan` builds them."""
    if mode == "toolbox":
        return toolbox.replay(3, N, dtype)
    init_rng, order_rng = make_generators(3)
    return cnn.init_params(init_rng, dtype), shuffled(order_rng, N)


class Stop(Exception):
    pass


@pytest.mark.parametrize("mode", ["default", "toolbox"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stop_at", [2, 3, 7])  # inside epoch 1, its end, inside epoch 3
def test_a_resumed_training_is_byte_identical_to_an_uninterrupted_one(mode, dtype, stop_at):
    x, y = data(dtype)
    kw = {"epochs": EPOCHS, "batch_size": BATCH, "lr": 1.0, "evals": {"val": (x[:5], y[:5])}}
    params, order = start(mode, dtype)
    whole = sgd.train(params, x, y, order=order, **kw)

    params, order = start(mode, dtype)
    state = sgd.TrainState(params)
    saved = {}

    def on_batch(step: int, loss: float) -> None:
        if step == stop_at:  # what training does on a signal: save where it stands, stop
            ident = checkpoint.Identity({"seed": 3}, {}, "data", {})
            saved["bytes"] = checkpoint.to_bytes(
                checkpoint.Checkpoint(ident, "run", state, order.state())
            )
            raise Stop

    with pytest.raises(Stop):
        sgd.train(params, x, y, order=order, on_batch=on_batch, state=state, **kw)
    # A new process: the plan built again, the checkpoint read back.
    params, order = start(mode, dtype)
    ckpt = checkpoint.from_bytes(saved["bytes"])
    order.restore(ckpt.order)
    steps = []
    rest = sgd.train(
        params, x, y, order=order, state=ckpt.state, on_batch=lambda s, _: steps.append(s), **kw
    )
    assert steps == list(range(stop_at + 1, EPOCHS * 3 + 1))  # only what was left
    for name in cnn.PARAM_NAMES:
        assert rest.params[name].dtype == dtype
        assert rest.params[name].tobytes() == whole.params[name].tobytes()
    assert rest.batch_losses.tobytes() == whole.batch_losses.tobytes()
    assert rest.history == whole.history


def test_a_checkpoint_says_what_differs_from_the_current_run():
    ident = checkpoint.Identity(
        {"train.lr": 1.0, "seed": 0},
        {"pipeline/model/cnn.py": "a", "pipeline/train.py": "b"},
        "d" * 64,
        {"blas_threads": "1", "numpy_version": "2.4.6"},
    )
    assert ident.differences(ident) == []
    other = checkpoint.Identity(
        {"train.lr": 0.5, "seed": 0},
        {"pipeline/model/cnn.py": "x", "pipeline/train.py": "b"},
        "e" * 64,
        {"blas_threads": "2", "numpy_version": "2.4.6"},
    )
    assert ident.differences(other) == [
        "config: train.lr 1.0 -> 0.5",
        "code: pipeline/model/cnn.py changed",
        f"data: sha256 {'d' * 12}... -> {'e' * 12}...",
        "environment: blas_threads 1 -> 2",
    ]
    assert ident.config_sha256 != other.config_sha256
    with pytest.raises(ValueError, match="not a checkpoint"):
        checkpoint.from_bytes(b"these are not the bytes you are looking for")


def test_a_slot_is_held_by_one_process_and_kept_until_removed(tmp_path):
    slot = checkpoint.Slot(tmp_path / "checkpoints" / "run-abc")
    with slot.locked():
        # A second holder (another open file, as another process would have) is refused.
        busy = pytest.raises(checkpoint.CheckpointError, match=r"another process \(pid \d+ on ")
        with busy, slot.locked():
            pass
        assert slot.read() is None
        params, order = start("default", np.float64)
        ident = checkpoint.Identity({}, {}, "data", {})
        slot.write(checkpoint.Checkpoint(ident, "r1", sgd.TrainState(params), order.state()))
    assert slot.read().run_id == "r1" and slot.read().where() == "the end of epoch 0"
    slot.file.write_bytes(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint"):
        slot.read()
    slot.remove()
    assert not slot.folder.exists()


def test_signals_are_noted_checkpointed_at_safe_points_and_handed_on():
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))  # e.g. submitit's
    try:
        with interrupts.at_safe_points():
            os.kill(os.getpid(), signal.SIGUSR2)
            assert interrupts.pending() and not seen  # noted, not acted on
            with pytest.raises(interrupts.Interrupted) as info:
                interrupts.check()
            assert info.value.safe and info.value.signum == signal.SIGUSR2
            os.kill(os.getpid(), signal.SIGUSR1)
            with pytest.raises(interrupts.Interrupted) as twice:  # asked twice: at once
                os.kill(os.getpid(), signal.SIGTERM)
            assert not twice.value.safe
        interrupts.pass_on(signal.SIGUSR2)  # the handler from before the block gets it
        interrupts.pass_on(signal.SIGTERM)  # not a requeue signal: nothing
        assert seen == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_resumed_run_logs_each_metric_step_once(experiment):
    client, exp_id, _ = experiment
    run = client.create_run(exp_id)
    rid = run.info.run_id
    first = runs.MetricLog(client, rid)
    first.log({"train_loss": 0.5}, 1, series={"batch_loss": (1, [0.9, 0.8, 0.7])})
    first.log({"train_loss": 0.4}, 2, series={"batch_loss": (4, [0.6])})  # then it died
    again = runs.MetricLog(client, rid, resumed=True)  # from a checkpoint at the end of epoch 1
    again.log({"train_loss": 0.4}, 2, series={"batch_loss": (4, [0.6, 0.5, 0.4])}, tags={"a": "b"})
    steps = sorted(m.step for m in client.get_metric_history(rid, "batch_loss"))
    assert steps == [1, 2, 3, 4, 5, 6]
    assert sorted(m.step for m in client.get_metric_history(rid, "train_loss")) == [1, 2]
    assert client.get_run(rid).data.tags["a"] == "b"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_runs_are_listed_and_closed_and_live_ones_untouched(experiment, capsys):
    client, exp_id, _ = experiment
    here, old = socket.gethostname(), "2000-01-01T00:00:00Z"
    me = liveness.process_tags()

    def running(name: str, **tags: str) -> str:
        return client.create_run(exp_id, run_name=name, tags=tags).info.run_id

    live = running("live", **me)
    dead = running("dead", host=here, pid=str(_dead_pid()), heartbeat=old)
    # Our pid, but recorded with another start: the pid was reused by another process.
    reused = running("reused", **(me | {"process_start": "another-boot/1"}))
    far_old = running("far-old", host="elsewhere", pid="1", heartbeat=old)
    far_new = running("far-new", host="elsewhere", pid="1", heartbeat=liveness.heartbeat_now())
    parent = running("sweep", host=here, pid=str(_dead_pid()), sweep_role="parent")
    child = running("job", **(me | {"mlflow.parentRunId": parent}))
    verdicts = {
        j.run.info.run_id: j.verdict.state
        for j in liveness.survey(client, [exp_id], other_hosts_after=None)
    }
    assert verdicts == {
        live: "live",
        dead: "stale",
        reused: "stale",
        far_old: "unknown",
        far_new: "unknown",
        parent: "live",  # its launcher is gone, but one of its jobs runs
        child: "live",
    }
    name = client.get_experiment(exp_id).name
    uri = client.tracking_uri
    argv = ["--uri", uri, "--experiment", name, "--other-hosts-after", "1h"]
    assert runs_command.main(["list-stale", *argv]) == 0
    listed = capsys.readouterr().out
    assert "7 RUNNING runs: 3 stale, 4 live, 0 unknown" in listed
    assert {r.info.status for r in map(client.get_run, verdicts)} == {"RUNNING"}  # only listed
    assert runs_command.main(["close-stale", *argv]) == 0
    closed = capsys.readouterr().out
    assert f"closed   {dead}  {name}/dead  (KILLED): process " in closed
    status = {rid: client.get_run(rid).info.status for rid in verdicts}
    assert status == {
        live: "RUNNING",
        dead: "KILLED",
        reused: "KILLED",
        far_old: "KILLED",
        far_new: "RUNNING",
        parent: "RUNNING",
        child: "RUNNING",
    }
    tag = client.get_run(far_old).data.tags["stale"]
    assert tag.startswith("process 1 on elsewhere: no heartbeat for ") and "close-stale" in tag
    assert client.get_run(dead).info.end_time == 946684800000  # its last heartbeat


def test_a_job_run_again_counts_once_by_what_the_launch_did(experiment):
    """Job a: FINISHED before this launch (skipped). Job b: KILLED before, continued by this
    launch (resumed). Job c: FAILED before, trained again by this launch (a new run)."""
    client, exp_id, _ = experiment
    jobs = ["lr=1 seed=0", "lr=1 seed=1", "lr=2 seed=0"]
    parent = sweeps.create_parent(client, exp_id, name="again", command="x", jobs=jobs)

    def child(overrides: str) -> str:
        tags = {"mlflow.parentRunId": parent, "overrides": overrides}
        return client.create_run(exp_id, tags=tags).info.run_id

    a, b, c_old = child(jobs[0]), child(jobs[1]), child(jobs[2])
    client.set_terminated(a, "FINISHED")
    client.set_terminated(b, "KILLED")
    client.set_terminated(c_old, "FAILED")
    time.sleep(0.01)
    since = int(time.time() * 1000)
    time.sleep(0.01)
    client.log_batch(b, tags=[RunTag("resumes", "1")])
    client.set_terminated(b, "FINISHED")  # continued: its start time is the first launch's
    c_new = child("seed=0 lr=2 train.resume=auto")  # the same job, told otherwise
    client.set_terminated(c_new, "FINISHED")
    done = sweeps.finish_parent(client, parent, jobs=jobs, since_ms=since)
    assert (done.jobs, done.finished, done.failures) == (3, 3, ())
    assert dict(done.done) == {"skipped": 1, "resumed": 1, "trained": 1}
    assert client.get_run(parent).info.status == "FINISHED"
    assert sweeps.jobs_sha256(jobs) == sweeps.jobs_sha256(["seed=1 lr=1", *jobs[::2]])
    assert sweeps.job_identity("seed=0 lr=2 train.resume=never") == "lr=2 seed=0"


# ------------------------------------------------------------------------------ end to end

KILLER = """
import os, runpy, signal, sys
import pipeline.model.sgd as sgd
real, count = sgd.step, [0]
def step(*args, **kwargs):  # the training process signals itself inside update number {at}
    count[0] += 1
    if count[0] == {at}:
        os.kill(os.getpid(), signal.{signal})
    return real(*args, **kwargs)
sgd.step = step
sys.argv = ["pipeline.train", *{argv!r}]
runpy.run_module("pipeline.train", run_name="__main__", alter_sys=True)
"""


def interrupted(project, argv: list[str], *, at: int, signum: str = "SIGKILL"):
    """`python -m pipeline.train ARGV` in `project`, signalled during update number `at`."""
    code = KILLER.format(at=at, signal=signum, argv=argv)
    return project.run("python", "-c", code, check=False)


def histories(client, run) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run: its (step, value) points in step order."""
    rid = run.info.run_id
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(rid, key))
        for key in client.get_run(rid).data.metrics
    }


def outputs_digest(root) -> dict[str, str]:
    from pipeline.files import sha256_file
    from pipeline.paths import OUTPUT_NAMES

    return {rel: sha256_file(root / rel) for rel in sorted(OUTPUT_NAMES.values())}


@pytest.mark.e2e
def test_kill_9_mid_epoch_then_dvc_repro_continues_the_run_byte_identical(repro_project):
    p = repro_project
    before = outputs_digest(p.root)  # the uninterrupted run's
    (whole,) = p.runs()
    killed = interrupted(p, ["--params", "params.yaml"], at=BATCHES_PER_EPOCH + 2)
    assert killed.returncode == -signal.SIGKILL
    left = p.runs()[-1]
    assert left.info.status == "RUNNING"  # nothing could end it
    done = p.run("dvc", "repro", "-f", "-s", "train")
    rid = left.info.run_id
    assert f"train: taking over MLflow run {rid} (left RUNNING by a process that is gone) " in (
        done.stdout
    )
    assert "from the end of epoch 1" in done.stdout
    assert outputs_digest(p.root) == before
    assert p.run("git", "status", "--porcelain", "dvc.lock").stdout == ""  # same hashes
    run = p.client.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.tags["resumes"] == "1"
    assert run.data.tags["weights_sha256"] == whole.data.tags["weights_sha256"]
    assert histories(p.client, run) == histories(p.client, whole)  # every step once, same values
    assert len(p.runs()) == 2 and list((p.root / "checkpoints").iterdir()) == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("dtype", "rng", "signum"),
    # With the kill -9 under `dvc repro` (float64, default order): both dtypes and the replay
    # killed, and SIGTERM's own checkpoint.
    [("float32", "toolbox", "SIGKILL"), ("float64", "toolbox", "SIGTERM")],
)
def test_an_interrupted_run_resumed_ends_as_an_uninterrupted_one(
    prepared_project, dtype, rng, signum
):
    p = prepared_project
    argv = [
        f"train.dtype={dtype}",
        f"train.rng={rng}",
        "train.epochs=3",
        "tracking.log_model=false",
    ]
    per_epoch = 6 if rng == "toolbox" else BATCHES_PER_EPOCH  # the toolbox trains on all 60
    p.run(*TRAIN, *argv)
    stopped = interrupted(p, argv, at=per_epoch + 2, signum=signum)
    if signum == "SIGKILL":
        assert stopped.returncode == -signal.SIGKILL
    else:  # a checkpoint at the batch boundary after the signal, then the run ends KILLED
        assert stopped.returncode == 130, stopped.stderr
        line = stopped.stderr.strip().splitlines()[-1]
        assert line.startswith("train interrupted: MLflow run ") and "ended KILLED" in line
        assert "(epoch 2, batch 2) kept: the same command resumes it" in line
    resumed = p.run(*TRAIN, *argv)
    where = "the end of epoch 1" if signum == "SIGKILL" else "epoch 2, batch 2"
    assert f"from {where}" in resumed.stdout
    whole, run = p.runs()
    assert run.info.status == "FINISHED" and run.data.tags["resumes"] == "1"
    assert run.data.tags["weights_sha256"] == whole.data.tags["weights_sha256"]
    points = histories(p.client, run)
    assert points == histories(p.client, whole)
    assert [s for s, _ in points["batch_loss"]] == list(range(1, 3 * per_epoch + 1))


@pytest.mark.e2e
def test_a_checkpoint_from_other_code_is_refused_and_the_dead_run_closed(prepared_project):
    p = prepared_project
    argv = ["tracking.log_model=false"]
    assert interrupted(p, argv, at=BATCHES_PER_EPOCH + 2).returncode == -signal.SIGKILL
    (left,) = p.runs()
    listed = p.run("python", "-m", "pipeline.runs", "list-stale")
    assert f"stale    {left.info.run_id}  zhang-cnn/" in listed.stdout
    assert "1 RUNNING runs: 1 stale, 0 live, 0 unknown" in listed.stdout
    cnn_py = p.root / "pipeline/model/cnn.py"
    cnn_py.write_text(cnn_py.read_text() + "\n# an edit\n")
    done = p.run(*TRAIN, *argv)
    assert "refused: it was made by another run (code: pipeline/model/cnn.py changed)" in (
        done.stderr
    )
    assert (
        f"MLflow run {left.info.run_id}, left RUNNING by a process that is gone, ended KILLED"
        in (done.stdout)
    )
    left, new = p.runs()
    assert (left.info.status, new.info.status) == ("KILLED", "FINISHED")
    assert "checkpoint was refused (code: pipeline/model/cnn.py changed)" in left.data.tags["stale"]
    assert "resumes" not in new.data.tags  # trained from the start
    listed = p.run("python", "-m", "pipeline.runs", "close-stale")
    assert "0 RUNNING runs: 0 stale, 0 live, 0 unknown; 0 closed (KILLED)" in listed.stdout


@pytest.mark.e2e
def test_an_interrupted_sweep_run_again_trains_only_the_rest(
    prepared_project, tiny_swept, tmp_path
):
    """The sweep of `tiny_swept`, killed (-9) in its third job's second epoch, run again."""
    p = prepared_project
    cmd = ["-m", *SWEEP_FAST, "train.lr=0.5,1.0", "seed=0,1", "tracking.sweep=basic"]
    killed = interrupted(p, cmd, at=2 * 2 * BATCHES_PER_EPOCH + BATCHES_PER_EPOCH + 2)
    assert killed.returncode == -signal.SIGKILL
    (parent,) = [r for r in p.runs() if r.data.tags.get("sweep_role") == "parent"]
    again = p.run(*TRAIN, *cmd)
    assert (
        f"sweep basic: resuming it (parent MLflow run {parent.info.run_id}): 2 finished "
        in again.stdout
    )
    assert "1 interrupted (resumed from their checkpoints, else trained again), 1 not run yet" in (
        again.stdout
    )
    assert "sweep basic: 4/4 jobs finished (2 skipped, 1 resumed, 1 trained)" in again.stdout
    runs_now = p.runs()
    parents = [r for r in runs_now if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs_now if r.data.tags.get("sweep_role") == "child"]
    assert [r.info.run_id for r in parents] == [parent.info.run_id]
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["launches"] == "2"
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}

    def weights(runs):
        return {
            (r.data.params["train.lr"], r.data.params["seed"]): r.data.tags["weights_sha256"]
            for r in runs
            if r.data.tags.get("sweep_role") == "child"
        }

    assert weights(children) == weights(tiny_swept.runs())  # as if never interrupted
    report = p.run("python", "-m", "pipeline.compare", "basic", "--out", str(tmp_path / "r"))
    assert "4 of 4 runs finished" in report.stdout  # each job once: its latest run
    assert report.stdout.count("n=2)") >= 4 and "n=3" not in report.stdout
