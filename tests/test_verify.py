"""`python -m pipeline.verify RUN_ID` end to end on the tiny project's logged run: MATCH, with the
data found by its hash in the DVC remote; MISMATCH naming a changed configuration or portable
mode; and the runs it refuses (unknown, dirty, commit not in the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import runtime
from pipeline.files import sha256_file
from pipeline.verify import main as verify_main

pytestmark = pytest.mark.e2e


def _avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _verify(project, *args: str):
    return project.run("python", "-m", "pipeline.verify", *args, check=False, timeout=600)


def test_run_logs_what_verify_compares(repro_project):
    (run,) = repro_project.runs()
    tags = run.data.tags
    assert tags["weights_sha256"] == sha256_file(repro_project.root / "models/weights.npz")
    if runtime._has_x86_64_v3():  # portable mode, by default, where the CPU allows it
        assert tags["portable"] == "on"
        assert tags["simd"] == "numpy X86_V3, openblas Haswell"
    assert tags["numpy_version"] and tags["blas_threads"] == "1"


def test_verify_matches_getting_the_data_from_the_remote(repro_project):
    project = repro_project
    (run,) = project.runs()
    project.run("dvc", "push")
    # Neither the work tree nor DVC's cache holds the data now: only the remote does.
    (project.root / "data/prepared/tiny.npz").unlink()
    for path in sorted((project.root / ".dvc/cache").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()

    done = _verify(project, run.info.run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MATCH" in done.stdout and "MISMATCH" not in done.stdout
    assert "from DVC's cache or remote" in done.stdout
    assert len(project.runs()) == 1  # the retraining logged to a throwaway store
    worktrees = project.run("git", "worktree", "list").stdout.strip().splitlines()
    assert len(worktrees) == 1  # the temporary worktree is gone


def test_verify_names_what_differs(repro_project):
    project = repro_project
    (run,) = project.runs()
    # Deliberate changes: the logged configuration no longer says what the run did, and the
    # retraining runs with portable mode off.
    artifact = Path(run.info.artifact_uri.removeprefix("file://")) / "params.yaml"
    artifact.write_text(artifact.read_text().replace("lr: 1.0", "lr: 0.5"))

    done = _verify(project, run.info.run_id, "--portable", "off")
    assert done.returncode == 1
    report = done.stdout[done.stdout.index("MISMATCH") :]
    assert "config: train.lr logged 1.0, retrained 0.5" in report, report
    if runtime._has_x86_64_v3():  # the run was logged in portable mode
        assert "environment: portable mode: logged on, retrained off" in report
    if _avx512():  # elsewhere portable mode runs the paths the CPU picks by itself
        assert "environment: SIMD paths: logged numpy X86_V3, openblas Haswell" in report
    assert "data:" not in report and "code:" not in report


def test_verify_refuses_what_it_cannot_check(repro_project, monkeypatch, capsys):
    project = repro_project
    (run,) = project.runs()
    run_id, commit = run.info.run_id, run.data.tags["git_commit"]
    monkeypatch.chdir(project.root)

    def verify(run_id: str) -> str:
        assert verify_main([run_id, "--tracking-uri", project.uri]) == 1
        out, err = capsys.readouterr()
        assert "MATCH" not in out
        return err

    assert "no run '0123456789abcdef" in verify("0123456789abcdef0123456789abcdef")
    project.client.set_tag(run_id, "git_commit", f"{commit}-dirty")
    err = verify(run_id)
    assert "refused" in err and "uncommitted changes" in err
    project.client.set_tag(run_id, "git_commit", "f" * 40)
    assert "is not in the repository" in verify(run_id)
