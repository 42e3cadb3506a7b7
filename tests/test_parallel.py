"""Threads for one run (pipeline.model.parallel) and how many a run takes (pipeline.runtime,
pipeline.train): parts that depend on the work alone, results in part order, each sweep job its
share of the machine. That the weights do not depend on the thread count: tests/test_sgd.py."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline import runtime
from pipeline.model.parallel import Workers, parts, workers
from pipeline.train import job_cores


def test_parts_are_consecutive_nearly_equal_and_independent_of_threads():
    sizes = [s.stop - s.start for s in parts(50, 4)]
    assert sizes == [13, 13, 12, 12]
    assert [(s.start, s.stop) for s in parts(7, 4)] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert parts(3, 4) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # never an empty part
    assert parts(1, 4) == [slice(0, 1)] and parts(10, 1) == [slice(0, 10)]


@pytest.mark.parametrize("threads", [1, 3])
def test_workers_return_results_in_item_order_whoever_finishes_first(threads):
    ran_in = set()

    def slow_first(i: int) -> int:
        time.sleep(0.02 if i == 0 else 0.0)
        ran_in.add(threading.get_ident())
        return i * i

    assert Workers(threads).map(slow_first, range(6)) == [0, 1, 4, 9, 16, 25]
    assert (threading.get_ident() in ran_in) == (threads == 1)  # one thread: the caller's


def test_a_failing_part_raises_once_every_part_has_ended():
    done = []

    def part(i: int) -> int:
        if i == 0:
            raise ValueError("part 0 failed")
        time.sleep(0.02)
        done.append(i)
        return i

    with pytest.raises(ValueError, match="part 0 failed"):
        Workers(2).map(part, range(3))
    assert sorted(done) == [1, 2]  # no part left running behind the error


def test_the_process_keeps_one_pool_per_thread_count():
    assert workers(2) is workers(2) and workers(2) is not workers(3)
    with pytest.raises(ValueError, match="threads"):
        workers(0)


def test_threads_of_a_run_configured_slurm_or_the_cores():
    assert runtime.training_threads(3, cores=8, slurm_cpus=2) == 3  # train.threads wins
    assert runtime.training_threads(None, cores=8, slurm_cpus=2) == 2  # a Slurm job's task
    assert runtime.training_threads(None, cores=8) == 8
    assert runtime.training_threads(None, cores=0) == 1
    assert runtime.available_cores() >= 1


def test_slurm_cpus_from_the_job_environment():
    assert runtime.environment({}).slurm_cpus is None  # not in a Slurm job
    job = {"SLURM_JOB_ID": "7"}
    assert runtime.environment(job).slurm_cpus == 1  # Slurm's default: one CPU a task
    assert runtime.environment(job | {"SLURM_CPUS_ON_NODE": "4"}).slurm_cpus == 4
    both = job | {"SLURM_CPUS_ON_NODE": "4", "SLURM_CPUS_PER_TASK": "2"}
    assert runtime.environment(both).slurm_cpus == 2


def test_sweep_jobs_side_by_side_share_the_cores():
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert job_cores({"_target_": joblib, "n_jobs": 2}, 2) == 1
    assert job_cores({"_target_": joblib, "n_jobs": 2}, 8) == 4
    assert job_cores({"_target_": joblib, "n_jobs": -1}, 8) == 1  # joblib: one job a core
    assert job_cores({"_target_": joblib, "n_jobs": -2}, 8) == 1  # 7 jobs on 8 cores
    assert job_cores({"_target_": joblib, "n_jobs": 16}, 8) == 1
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert job_cores({"_target_": local, "cpus_per_task": None}, 8) == 1
    assert job_cores({"_target_": local, "cpus_per_task": 3}, 8) == 3
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert job_cores({"_target_": basic}, 8) == 8  # one job at a time
