"""Sharing through DVC remotes, end to end: a tiny project pushes to a remote (a local folder, or
S3 served by moto on loopback), a teammate's fresh clone pulls and reruns nothing; experiments
travel through a bare git repository; and the faults: a corrupt object in the remote, a remote
that is missing or unreachable, no remote at all. Each test works on its own copy of the project
`dvc repro` produced once (conftest.tiny_repro), with its own remote."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from project import Project, clone

pytestmark = pytest.mark.e2e

# What `dvc pull` must bring back (cached outputs), and what travels in git (cache: false today).
PULLED = ["data/raw/tiny", "data/prepared/tiny.npz", "models/weights.npz"]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "verify-test-key", "AWS_SECRET_ACCESS_KEY": "verify-secret"}


def contents(root: Path, rel: str) -> dict[str, bytes]:
    """{relative path: bytes} of a file, or of every file under a folder."""
    path = root / rel
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def outputs(root: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for rel in PULLED:
        found |= contents(root, rel)
    return found


def origin(project: Project) -> Path:
    """A bare git repository holding the project's main branch (the team's git remote)."""
    bare = project.base / "origin.git"
    project.run("git", "init", "-q", "--bare", "-b", "main", str(bare))
    project.run("git", "remote", "add", "origin", str(bare))
    project.run("git", "push", "-q", "origin", "main")
    return bare


# --------------------------------------------------------------------------- S3 on loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """An S3 endpoint on loopback: moto's server (the S3 protocol DVC's s3fs speaks)."""
    pytest.importorskip("moto.server", reason="needs moto[server] (PyPI) for an S3 endpoint")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"moto server did not start: {log.read_text()[-500:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def s3_remote(project: Project, endpoint: str, bucket: str) -> None:
    """Make S3 `bucket` at `endpoint` the project's default remote, as the README says
    (config.local: the endpoint; credentials only in the environment)."""
    for args in (
        ["remote", "add", "--local", "-f", "-d", "s3", f"s3://{bucket}/dvc"],
        ["remote", "modify", "--local", "s3", "endpointurl", endpoint],
        ["remote", "modify", "--local", "s3", "verify", "true"],
    ):
        project.run("dvc", *args)


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def new_bucket(endpoint: str) -> str:
    bucket = f"team-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


# --------------------------------------------------------------------------- round trips


def _teammate(project: Project, tmp_path: Path, kind: str, endpoint: str | None, bucket: str):
    """Push everything, then clone from the bare origin and point the clone at the same remote."""
    if kind == "s3":
        s3_remote(project, endpoint, bucket)
    project.run("dvc", "push", "--run-cache", **CREDENTIALS)
    mate = clone(origin(project), tmp_path / "teammate", storage=project.storage)
    if kind == "s3":
        s3_remote(mate, endpoint, bucket)
    return mate


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_fresh_clone_pulls_everything_and_reruns_nothing(repro_project, tmp_path, kind, request):
    project = repro_project
    endpoint = request.getfixturevalue("s3_endpoint") if kind == "s3" else None
    bucket = new_bucket(endpoint) if kind == "s3" else ""
    mate = _teammate(project, tmp_path, kind, endpoint, bucket)
    assert not (mate.root / "models/weights.npz").exists()

    mate.run("dvc", "pull", **CREDENTIALS)
    assert outputs(mate.root) == outputs(project.root)
    again = mate.run("dvc", "repro", **CREDENTIALS)
    assert "Running stage" not in again.stdout, again.stdout
    assert mate.runs() == []  # nothing retrained: no MLflow run in the teammate's store
    status = mate.run("dvc", "status", **CREDENTIALS)
    assert "Data and pipelines are up to date" in status.stdout
    assert mate.run("git", "status", "--porcelain").stdout == ""
    if kind == "local":  # the run cache went too (fetch and prepare: see README, "Sharing")
        assert list((project.storage / "runs").rglob("*"))
    else:  # credentials came from the environment only: no config file holds them
        for config in (mate.root / ".dvc").glob("config*"):
            assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in config.read_text()


def test_experiments_travel_through_a_bare_repository(repro_project, tmp_path):
    project = repro_project
    mate = _teammate(project, tmp_path, "local", None, "")
    project.run("dvc", "exp", "run", "-n", "lr05", "-S", "train.lr=0.5")
    theirs = outputs(project.root)
    metrics = contents(project.root, "metrics")
    project.run("dvc", "exp", "push", "--run-cache", "origin", "lr05")

    mate.run("dvc", "exp", "pull", "origin", "lr05")
    assert "lr05" in mate.run("dvc", "exp", "list", "--name-only").stdout
    mate.run("dvc", "exp", "apply", "lr05")
    assert outputs(mate.root) == theirs  # weights pulled from the remote, not retrained
    assert contents(mate.root, "metrics") == metrics
    assert mate.runs() == []


def test_exp_run_pull_reuses_a_teammates_training(repro_project, tmp_path):
    project = repro_project  # every output is cached, so every stage has a run cache
    mate = _teammate(project, tmp_path, "local", None, "")
    project.run("dvc", "exp", "run", "-n", "lr05", "-S", "train.lr=0.5")
    project.run("dvc", "exp", "push", "--run-cache", "origin", "lr05")

    done = mate.run("dvc", "exp", "run", "-S", "train.lr=0.5", "--pull", "--allow-missing")
    assert "Running stage 'fetch'" not in done.stdout  # skipped: --allow-missing
    assert "Running stage 'prepare'" not in done.stdout
    assert "Stage 'train' is cached - skipping run" in done.stdout, done.stdout
    assert mate.runs() == []  # restored from the run cache: nothing trained
    assert contents(mate.root, "models") == contents(project.root, "models")


# --------------------------------------------------------------------------- faults


def _corrupt(data: bytes) -> bytes:
    return data[:100] + bytes(b ^ 0xFF for b in data[100:104]) + data[104:]


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_corrupt_object_in_the_remote_is_refused(repro_project, tmp_path, kind, request):
    project = repro_project
    endpoint = request.getfixturevalue("s3_endpoint") if kind == "s3" else None
    bucket = new_bucket(endpoint) if kind == "s3" else ""
    mate = _teammate(project, tmp_path, kind, endpoint, bucket)
    lock = (project.root / "dvc.lock").read_text()
    md5 = re.search(r"path: models/weights.npz\n\s+hash: md5\n\s+md5: (\w+)", lock).group(1)
    key = f"files/md5/{md5[:2]}/{md5[2:]}"
    if kind == "local":
        obj = project.storage / key
        obj.chmod(0o644)
        obj.write_bytes(_corrupt(obj.read_bytes()))
    else:
        s3 = s3_client(endpoint)
        body = s3.get_object(Bucket=bucket, Key=f"dvc/{key}")["Body"].read()
        s3.put_object(Bucket=bucket, Key=f"dvc/{key}", Body=_corrupt(body))

    done = mate.run("dvc", "pull", check=False, **CREDENTIALS)
    assert done.returncode != 0
    # DVC names the file (and, from a local remote, the object); it says "missing", not corrupt
    assert "Checkout failed" in done.stderr and "models/weights.npz" in done.stderr, done.stderr
    assert not (mate.root / "models/weights.npz").exists()  # nothing corrupt in the work tree
    assert not list((mate.root / ".dvc/cache").rglob(md5[2:]))  # nor in the cache
    good = contents(project.root, "data/prepared/tiny.npz")
    assert contents(mate.root, "data/prepared/tiny.npz") == good  # the intact objects came


def test_missing_or_unreachable_remote_leaves_local_work_untouched(
    repro_project, tmp_path, s3_endpoint
):
    project = repro_project
    before = outputs(project.root) | contents(project.root, "metrics")
    cache = sorted(p.relative_to(project.root) for p in (project.root / ".dvc/cache").rglob("*"))

    # S3 endpoint that does not answer: push and pull fail, saying so (after botocore's
    # retries, here turned off: about 13 s each with them).
    s3_remote(project, "http://127.0.0.1:9", "nowhere")
    for cmd in ("push", "pull"):
        done = project.run("dvc", cmd, check=False, AWS_MAX_ATTEMPTS="1", **CREDENTIALS)
        assert done.returncode != 0
        assert "Could not connect to the endpoint URL" in done.stderr, done.stderr
    # A bucket that does not exist.
    s3_remote(project, s3_endpoint, "no-such-bucket")
    done = project.run("dvc", "push", check=False, **CREDENTIALS)
    assert done.returncode != 0 and "bucket does not exist" in done.stderr, done.stderr
    assert outputs(project.root) | contents(project.root, "metrics") == before
    after = sorted(p.relative_to(project.root) for p in (project.root / ".dvc/cache").rglob("*"))
    assert after == cache

    # A teammate whose local remote folder does not exist: pull fails, naming what is missing.
    project.run("dvc", "remote", "default", "--local", "storage")
    mate = clone(origin(project), tmp_path / "teammate", storage=tmp_path / "no-such-folder")
    mine = contents(mate.root, "metrics")
    done = mate.run("dvc", "pull", check=False)
    assert done.returncode != 0
    assert "models/weights.npz" in done.stderr and "Missing cache files" in done.stderr
    assert contents(mate.root, "metrics") == mine
    assert not (tmp_path / "no-such-folder").exists()


def test_push_with_no_remote_is_a_clear_error(repro_project):
    project = repro_project
    (project.root / ".dvc/config.local").unlink()
    project.run("dvc", "remote", "remove", "storage")
    done = project.run("dvc", "push", check=False)
    assert done.returncode != 0
    assert "no remote specified" in done.stderr and "dvc remote add -d" in done.stderr
    assert (project.root / "models/weights.npz").is_file()
