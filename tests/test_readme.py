"""Every command block of the README works as written: run, in order, in one shell, on a fresh
tiny project, the way a newcomer types them (the venv activated once, as the README says).

Each block is known here by its first command line and has a plan: run it as written, run it
with named substitutions that keep it small (fewer seeds, one epoch, the tiny dataset, the run
id it refers to), or skip it with the reason and the test that covers it instead. A block the
README gains, loses or rewrites fails this test until its plan is written, so the README cannot
drift from what works.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from project import REPO

pytestmark = pytest.mark.e2e
VENV = Path(sys.executable).parent.parent
FENCE = re.compile(r"^```(sh|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Plan:
    skip: str = ""  # why the block is not run here, and what covers it
    subs: dict[str, str] = field(default_factory=dict)  # what to run instead of what is written
    expect: tuple[str, ...] = ()  # text the block's output must show


SWEEP_SMALL = {  # my_sweep keeps its models: the registry's blocks register its best
    "train.lr=0.1,0.3,1.0 seed=0,1,2": "train.lr=0.5,1.0 seed=0 train.epochs=1",
    "tracking.sweep=my_joblib_sweep": "tracking.sweep=my_joblib_sweep tracking.log_model=false",
}
TINY = {"data/prepared/mnist.npz": "data/prepared/tiny.npz"}

PLANS: dict[str, Plan] = {
    "make repro": Plan(
        subs={  # what `make repro` runs once the venv is built (see the Makefile)
            "make repro": (
                ".venv/bin/python -m pipeline.config\nPATH=$PWD/.venv/bin:$PATH dvc repro"
            ),
            "make test": "true",
        },
        expect=("Running stage 'train'",),
    ),  # `make` builds the venv the test already runs in; .ci/run runs the real `make repro`
    ". .venv/bin/activate": Plan(),
    "dvc metrics show": Plan(expect=("test_error", "Running stage 'train'")),
    "sudo apt-get install dataset-fashion-mnist": Plan(
        skip="needs Debian's package and a whole training on Fashion-MNIST; "
        "tests/test_real_data.py fetches it from that package"
    ),
    "python -m pipeline.bench": Plan(
        subs={
            "python -m pipeline.bench ": "python -m pipeline.bench --data data/prepared/tiny.npz"
            " --repeats 1 --profile-batches 2 --no-torch "
        },
        expect=("s/epoch",),
    ),
    "import mlflow": Plan(subs={**TINY, "/path/to/repo": "{root}", "<run id>": "{run_id}"}),
    "python - <<'EOF'": Plan(subs={**TINY, "<run id>": "{run_id}"}, expect=('"predictions"',)),
    "make ui": Plan(
        skip="a server that runs until stopped: test_make_ui_serves_and_refuses_a_second_one"
    ),
    "python -m pipeline.train -m train.lr=0.1,0.3,1.0 seed=0,1,2 tracking.sweep=my_sweep": Plan(
        subs=SWEEP_SMALL, expect=("sweep my_sweep: 2/2 jobs finished", "Best setting")
    ),
    "python -m pipeline.train train.epochs=40": Plan(  # my_sweep again: every job skipped
        subs={
            "train.epochs=40": "train.epochs=2",
            "train.lr=0.1,0.3,1.0 seed=0,1,2": SWEEP_SMALL["train.lr=0.1,0.3,1.0 seed=0,1,2"],
        },
        expect=("sweep my_sweep: 2/2 jobs finished (2 skipped)", "RUNNING runs: 0 stale"),
    ),
    "dvc exp run --queue -S 'train.lr=0.1,0.3,1.0' -S 'seed=0,1,2'": Plan(
        subs={"'train.lr=0.1,0.3,1.0'": "'train.lr=0.5,1.0'", "'seed=0,1,2'": "'seed=0'"}
    ),
    "python -m pipeline.train train.rng=toolbox seed=0 train.epochs=1": Plan(
        expect=("train: test error",)
    ),
    "scripts/postgres-local up": Plan(
        skip="PostgreSQL and the team's server: tests/test_scaling.py starts both with them"
    ),
    "sudo scripts/slurm-local up --cpus 12": Plan(
        skip="a Slurm cluster: tests/test_scaling.py sweeps through scripts/slurm-local"
    ),
    "python -m pipeline.register lr_seed --name zhang-cnn": Plan(
        subs={"lr_seed": "my_sweep"}, expect=("is now champion",)
    ),
    "import mlflow.pyfunc": Plan(subs=TINY),
    "mlflow models serve -m models:/zhang-cnn@champion --env-manager local -p 5001 &": Plan(
        expect=('{"predictions": [',)
    ),
    "dvc push --run-cache": Plan(
        skip="a push to the user's remote and a git remote: tests/test_share.py pushes to a "
        "folder and a bare repository"
    ),
    "git clone <url> zhang-cnn && cd zhang-cnn && make setup": Plan(
        skip="a teammate's clone: tests/test_share.py clones, pulls, and reruns nothing"
    ),
    "dvc remote modify --local storage url /mnt/team/zhang-cnn-dvc": Plan(),
    "dvc remote add -d s3 s3://<bucket>/zhang-cnn": Plan(
        skip="an S3 bucket: tests/test_share.py does the same against moto's S3 server"
    ),
    "dvc exp run -n lr05 -S train.lr=0.5": Plan(
        skip="a git remote: tests/test_share.py pushes and pulls experiments through a bare one"
    ),
    "python -m pipeline.verify <run id>": Plan(
        subs={
            "<run id> --portable off": "{first_run_id} --portable off || test $? = 1",
            "<run id>  ": "{first_run_id}  ",
        },
        expect=("MATCH: run ",),
    ),
}


def readme_blocks(text: str) -> list[tuple[str, str, str]]:
    """(first command line, language, text) of every ```sh and ```python block."""
    out = []
    for lang, body in FENCE.findall(text):
        first = next(
            line.split("  #")[0].strip().rstrip("\\").strip()
            for line in body.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )
        out.append((first, lang, body))
    return out


def test_every_readme_block_has_a_plan():
    keys = [first for first, _, _ in readme_blocks((REPO / "README.md").read_text())]
    assert len(keys) == len(set(keys)), "two README blocks start alike: tell them apart"
    assert set(keys) - set(PLANS) == set(), "README blocks with no plan here: write one"
    assert set(PLANS) - set(keys) == set(), "plans for blocks the README no longer has"


def _shell_env() -> dict[str, str]:
    """A newcomer's shell: no venv on PATH, no store chosen (the README's defaults apply)."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "DVC_", "PIPELINE_", "MLFLOW_", "VIRTUAL_ENV"))
    }
    path = [p for p in keep["PATH"].split(os.pathsep) if Path(p) != VENV / "bin"]
    return keep | {
        "PATH": os.pathsep.join(path),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }


@pytest.fixture
def newcomer(prepared_project):
    """A fresh tiny project whose `.venv` is this test run's environment."""
    (prepared_project.root / ".venv").symlink_to(VENV)
    return prepared_project.root, _shell_env()


def _run_ids(root: Path) -> tuple[str, str]:
    """The first and the latest training run of the project's default store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zhang-cnn")
    found = client.search_runs(
        [exp.experiment_id], "tags.data_sha256 != ''", order_by=["attributes.start_time ASC"]
    )
    return found[0].info.run_id, found[-1].info.run_id


@pytest.mark.heavy
def test_readme_blocks_run_as_written(newcomer):
    root, env = newcomer
    shell = Shell(root, env)
    done = 0
    try:
        for first, lang, body in readme_blocks((REPO / "README.md").read_text()):
            plan = PLANS[first]
            if plan.skip:
                continue
            ids = _run_ids(root) if "<run id>" in body else ("", "")
            for old, new in plan.subs.items():
                assert old in body, f"block {first!r}: {old!r} is no longer in it"
                new = new.format(root=root, run_id=ids[1], first_run_id=ids[0])
                body = body.replace(old, new)
            if lang == "python":
                body = f"python - <<'PYTHON_BLOCK'\n{body}PYTHON_BLOCK\n"
            output = _run_in(shell, body, first)
            for text in plan.expect:
                assert text in output, f"block {first!r}: no {text!r} in:\n{output[-3000:]}"
            done += 1
    finally:
        shell.close()
    assert done >= 8
    # The queue the README started runs in the background: every task succeeds.
    deadline = time.monotonic() + 300
    status = ""
    while time.monotonic() < deadline:
        status = subprocess.run(
            [str(VENV / "bin" / "dvc"), "queue", "status"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2 and "Failed" not in status, status


def _run_in(shell: Shell, script: str, first: str, timeout_s: float = 600) -> str:
    """Run `script` in the shared shell; its output, or a failure naming the block."""
    marker = f"__BLOCK_DONE_{time.monotonic_ns()}__"
    # In the shell itself (an activation must last), stopping it at the first failing command;
    # stdin from /dev/null: the block's commands must not read the rest of this script.
    shell.send(f"set -e\n{{\n{script}\n}} </dev/null\nset +e\necho {marker} 0\n")
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = shell.lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"the shell ended in README block {first!r}:\n{''.join(lines)}")
        if marker in line:  # after the block's last output, which may not end its line
            return "".join([*lines, line.split(marker)[0]])
        lines.append(line)
    raise AssertionError(
        f"README block {first!r} did not end in {timeout_s:.0f} s:\n{''.join(lines)}"
    )


class Shell:
    """One bash process, fed commands on stdin; its merged output read line by line."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_ui_serves_and_refuses_a_second_one(newcomer):
    root, env = newcomer
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
        os.utime(root / name, (0, 0))  # older than the venv's stamp: `make` builds nothing
    if not (VENV / ".installed").exists():
        pytest.skip(f"{VENV} was not built by `make setup` (no .installed stamp)")
    port = str(_free_port())
    ui = subprocess.Popen(
        ["make", "ui", f"UI_PORT={port}"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(port))) == 0:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("make ui did not listen")
        second = subprocess.run(
            ["make", "ui", f"UI_PORT={port}"], cwd=root, env=env, capture_output=True, text=True
        )
        assert second.returncode != 0
        assert f"port {port} is in use (a UI already running?)" in second.stdout
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
