"""Slurm as the sweep callback sees it, without a cluster: finding a sweep's jobs in submitit's
folder, and refusing a sweep where there is no Slurm client (the rest, with a real cluster, is
in test_scaling.py)."""

import os
import time

import pytest

from pipeline.cluster import slurm


def test_submitted_jobs_come_in_hydra_job_order(tmp_path):
    folder = tmp_path / ".submitit"
    for job in ("12_10", "12_2", "13_0", "12_0", "11_5"):
        (folder / job).mkdir(parents=True)
        (folder / job / f"{job}_submitted.pkl").write_bytes(b"")
    (folder / "12_2" / "12_2_0_result.pkl").write_bytes(b"")  # not a submission
    old = folder / "11_5" / "11_5_submitted.pkl"  # an earlier sweep's job, in the same folder
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    pattern = str(folder / "%j")
    assert slurm.submitted_jobs(pattern) == ["11_5", "12_0", "12_2", "12_10", "13_0"]
    assert slurm.submitted_jobs(pattern, since=time.time() - 60) == [
        "12_0",
        "12_2",
        "12_10",
        "13_0",
    ]
    assert slurm.submitted_jobs(str(tmp_path / "nothing/%j")) == []


def test_no_slurm_client_refuses_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no sbatch or scontrol on it
    with pytest.raises(slurm.SlurmError, match="install Debian's slurm-client"):
        slurm.check_controller()
