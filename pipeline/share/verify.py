"""Re-check a logged run: retrain it from its commit, data and configuration, compare hashes.

A run's recipe is what decides its weights, as the run logged it: the code (tag `git_commit`),
the data (`data_sha256`, of the prepared file), the configuration (the params, dotted keys; the
`tracking.*` keys only say where to log) and the environment (`blas_threads`, `portable`,
`simd`: the SIMD paths NumPy and OpenBLAS ran, `numpy_version`). `verify` checks the commit out
in a temporary worktree, gets the prepared file by its hash (`pipeline.share.checkout`), writes
the logged params.yaml there, retrains with `python -m pipeline.train` under the logged BLAS
thread count and portable mode, logging to a throwaway store, and compares the new run's recipe
and weights' sha256 with the logged ones. MATCH when the weights' hashes are equal; otherwise
MISMATCH, naming each part of the recipe that differs.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import runtime
from pipeline.files import sha256_file
from pipeline.share import checkout

ENVIRONMENT = {  # run tag -> what it is, in a MISMATCH line
    "blas_threads": "BLAS threads",
    "portable": "portable mode",
    "simd": "SIMD paths",
    "numpy_version": "NumPy version",
}
NOT_LOGGED = "(not logged)"
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DROPPED_VARS = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_STAGE", *runtime.SWEEP_VARS)


class VerifyError(RuntimeError):
    """The run cannot be verified; the message says why and what to do."""


@dataclass(frozen=True)
class Recipe:
    """What decides a run's weights, as logged (module docstring), and the weights' sha256."""

    commit: str
    data_sha256: str
    config: Mapping[str, str]
    environment: Mapping[str, str]
    weights_sha256: str

    @classmethod
    def of(cls, run: Run, weights_sha256: str) -> Recipe:
        tags = run.data.tags
        return cls(
            commit=tags.get("git_commit", NOT_LOGGED),
            data_sha256=tags.get("data_sha256", NOT_LOGGED),
            config={k: v for k, v in run.data.params.items() if not k.startswith("tracking.")},
            environment={k: tags.get(k, NOT_LOGGED) for k in ENVIRONMENT},
            weights_sha256=weights_sha256,
        )


def differences(logged: Recipe, redone: Recipe) -> list[str]:
    """One line per part of the recipe (code, data, config, environment) that differs."""
    lines = []
    if logged.commit != redone.commit:
        lines.append(f"code: logged at commit {logged.commit}, retrained at {redone.commit}")
    if logged.data_sha256 != redone.data_sha256:
        lines.append(f"data: logged sha256 {logged.data_sha256}, retrained on {redone.data_sha256}")
    a, b = logged.config, redone.config
    changed = [
        f"{k} logged {a.get(k, NOT_LOGGED)}, retrained {b.get(k, NOT_LOGGED)}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    if changed:
        lines.append("config: " + "; ".join(changed))
    for tag, what in ENVIRONMENT.items():
        a, b = logged.environment[tag], redone.environment[tag]
        if a != b:
            lines.append(f"environment: {what}: logged {a}, retrained {b}")
    return lines


@dataclass
class Verdict:
    run_id: str
    logged: Recipe
    redone: Recipe | None  # None: the data with the logged hash could not be found
    differences: list[str] = field(default_factory=list)

    @property
    def match(self) -> bool:
        return self.redone is not None and self.redone.weights_sha256 == self.logged.weights_sha256

    def report(self) -> str:
        """MATCH or MISMATCH, with what differs."""
        if self.match:
            return (
                f"MATCH: run {self.run_id} retrained at commit {self.logged.commit[:12]} gives "
                f"weights sha256 {self.logged.weights_sha256}, as logged"
            )
        if self.redone is None:
            head = f"MISMATCH: run {self.run_id} not retrained: the data differs"
        else:
            head = (
                f"MISMATCH: run {self.run_id} retrained gives weights sha256 "
                f"{self.redone.weights_sha256}, the run logged {self.logged.weights_sha256}"
            )
        lines = self.differences or [
            "nothing in the recipe differs (code, data, config, environment): the logged "
            "weights hash was not produced by this recipe, or training is not deterministic here"
        ]
        return "\n".join([head, *(f"  {line}" for line in lines)])


def _get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise VerifyError(
            f"no run {run_id!r} in the MLflow store {client.tracking_uri} "
            f"({str(exc).splitlines()[0]}); check the id, or name the store with --tracking-uri "
            "or MLFLOW_TRACKING_URI"
        ) from None


def _artifact(client: MlflowClient, run_id: str, name: str, dest: Path) -> Path:
    try:
        return Path(client.download_artifacts(run_id, name, str(dest)))
    except (MlflowException, OSError) as exc:
        raise VerifyError(f"run {run_id} has no artifact {name} ({exc})") from None


def _retrain_config(text: str, *, store: str) -> str:
    """The logged params.yaml, logging to `store` (only `tracking` changes: no effect on the
    weights) without the pyfunc model (slow to log, and not compared)."""
    tree = yaml.safe_load(text)
    tree["tracking"] = {**tree.get("tracking", {}), "uri": store, "log_model": False, "sweep": None}
    return yaml.safe_dump(tree, sort_keys=False)


def _child_env(
    env: Mapping[str, str], logged: Recipe, portable: bool | None, python: str
) -> dict[str, str]:
    """The retraining's environment: the logged BLAS thread count and portable mode (or the
    mode asked for; a run that logged none predates the mode: off), nothing of an enclosing DVC
    stage or sweep, and `python`'s folder first on PATH (DVC's stage commands run `python`)."""
    if portable is None:
        portable = logged.environment["portable"] == "on"
    child = runtime.with_portable(env, on=portable)
    child["PATH"] = os.pathsep.join([str(Path(python).parent), child.get("PATH", "")])
    for var in DROPPED_VARS:
        child.pop(var, None)
    threads = logged.environment["blas_threads"]
    if threads.isdigit():
        child |= dict.fromkeys(BLAS_VARS, threads)
    return child


def _retrain(tree: Path, python: str, env: Mapping[str, str], store: str) -> Run:
    done = subprocess.run(
        [python, "-m", "pipeline.train", "--params", "params.yaml"],
        cwd=tree,
        env={**env, "MLFLOW_TRACKING_URI": store},  # it would override tracking.uri
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise VerifyError(f"retraining failed (exit {done.returncode}):\n{tail}")
    client = MlflowClient(store)
    ids = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(ids)
    return run


def verify(
    *,
    client: MlflowClient,
    run_id: str,
    repo: Path,
    env: Mapping[str, str],
    python: str,
    portable: bool | None = None,
    say: Callable[[str], None] = print,
) -> Verdict:
    """Retrain run `run_id` of `client`'s store from repository `repo` (module docstring).

    env: the environment the retraining starts from; python: the interpreter to train with
    (its folder goes first on PATH, and holds `dvc` for fetch and prepare); portable: retrain
    in this mode instead of the logged one.
    Raises VerifyError when the run cannot be verified (unknown run, dirty or missing commit,
    no weights hash or configuration logged, retraining failed).
    """
    run = _get_run(client, run_id)
    commit = run.data.tags.get("git_commit", "")
    if commit.endswith("-dirty"):
        raise VerifyError(
            f"refused: run {run_id} was logged from a work tree with uncommitted changes "
            f"(git_commit {commit}), so no commit holds its code; commit, rerun, verify the new run"
        )
    if not commit or commit == "unknown":
        raise VerifyError(
            f"run {run_id} logged no git commit (tag git_commit): nothing to check out"
        )
    if not checkout.has_commit(repo, commit):
        raise VerifyError(
            f"commit {commit} of run {run_id} is not in the repository at {repo}: fetch it "
            "(`git fetch <remote>`) from the clone that logged the run"
        )
    with tempfile.TemporaryDirectory(prefix="pipeline-verify-store-") as tmp:
        tmp = Path(tmp)
        weights = run.data.tags.get("weights_sha256")
        if not weights:  # logged before the tag existed: the weights artifact's own hash
            weights = sha256_file(_artifact(client, run_id, "weights.npz", tmp))
        logged = Recipe.of(run, weights)
        config = _artifact(client, run_id, "params.yaml", tmp).read_text(encoding="utf-8")
        prepared = yaml.safe_load(config)["data"]["prepared"]
        store = f"sqlite:///{tmp / 'verify.db'}"
        child_env = _child_env(env, logged, portable, python)
        say(f"verify: run {run_id}, commit {commit[:12]}, checked out in a temporary worktree")
        with checkout.worktree(repo, commit) as tree:
            (tree / "params.yaml").write_text(_retrain_config(config, store=store), "utf-8")
            got, notes = checkout.get_prepared(
                repo=repo,
                tree=tree,
                commit=commit,
                rel=prepared,
                sha256=logged.data_sha256,
                env=child_env,
            )
            say(f"verify: data: {'; '.join(notes)}")
            if got != logged.data_sha256:
                line = f"data: no {prepared} with the logged sha256 {logged.data_sha256}"
                return Verdict(run_id, logged, None, [f"{line} ({'; '.join(notes)})"])
            say(f"verify: retraining ({Path(python).name} -m pipeline.train) ...")
            redone_run = _retrain(tree, python, child_env, store)
        redone = Recipe.of(redone_run, redone_run.data.tags.get("weights_sha256", NOT_LOGGED))
    return Verdict(run_id, logged, redone, differences(logged, redone))
