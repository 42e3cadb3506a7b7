"""DVC stage `train` and Hydra entry point: train the CNN, evaluate it, log one MLflow run.

    python -m pipeline.train --params params.yaml      the DVC stage (dvc.yaml)
    python -m pipeline.train [overrides] [-m]          Hydra: one run, or a sweep (multirun)

Both read everything from outside here (the configuration, the environment, git, the prepared
file, the tracking store) and call `train_and_log` with keyword arguments. The DVC stage writes
its outputs (`pipeline/outputs.yaml`) at the repo root; a Hydra run writes the same files in its
job folder.

The MLflow run gets: params as dotted keys; per-epoch train_loss, train_error, val_loss,
val_error (step = epoch); per-batch `batch_loss` (step = global batch index from 1, loss before
that batch's update); final test_loss, test_error; tags (git commit, data hash, dataset, seed,
BLAS threads, training threads, portable mode and the SIMD paths that ran, NumPy version, the
weights' sha256); its dataset (MLflow's dataset tracking); artifacts (weights.npz, params.yaml,
PNG figures, `predictions/test.csv`: one row per test image, actual and predicted label, for
paired comparisons image by image) and the pyfunc model. It ends FINISHED only after all of that
and the outputs are written, FAILED on an error (divergence included), KILLED on Ctrl-C, SIGTERM,
SIGUSR1 or SIGUSR2, with no output written (see `train_and_log`).

Resuming: training writes a checkpoint (`pipeline.model.checkpoint`) after every
`train.checkpoint_every` epochs, after the last one, and at the batch boundary where a signal
stops it, in `checkpoints/<run>-<config hash>/` at the repo root. With `train.resume: auto` the
same configuration run again continues the same MLflow run from there (taking over a run left
RUNNING by a dead process), logs every metric step once, and ends with the bytes of an
uninterrupted run; a checkpoint made by other code, data or environment is refused, saying which
differs. A sweep job whose FINISHED run has the same config, code and data is skipped.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

import pipeline
from pipeline import interrupts, paths, runtime
from pipeline.config import PARAMS_FILE, RESUME_KEYS, Config, ConfigError, load_params, validate
from pipeline.data.prepared import read_prepared
from pipeline.files import (
    DataError,
    csv_bytes,
    json_bytes,
    sha256_bytes,
    sha256_file,
    tree_sha256s,
    write_csv,
    write_together,
)
from pipeline.model import checkpoint, sgd
from pipeline.model.inference import Evaluation, assess
from pipeline.model.plan import Plan, make_plan
from pipeline.model.weights import weights_bytes
from pipeline.reports import figures
from pipeline.runtime import NotInProject
from pipeline.tracking import liveness, pyfunc, runs, store, sweeps

EPOCH_COLUMNS = ("train_loss", "train_error", "val_loss", "val_error")  # test_*: if logged
CODE_SUFFIXES = (".py", ".yaml", ".json")  # the package's files that decide a run's bytes


@dataclass
class RunResult:
    run_id: str
    trained: sgd.TrainResult
    test: Evaluation
    late_signal: int | None = None  # a signal that came after the outputs were written
    resumed_from: str | None = None  # where its checkpoint stood, for a resumed run


@dataclass(frozen=True)
class Skipped:
    """A sweep job that already has a FINISHED run with the same config, code and data."""

    run_id: str
    test_error: float


@dataclass(frozen=True)
class Checkpointing:
    """Where a run keeps its checkpoints and whether it resumes one (`train.checkpoint_every`,
    `train.resume`), and what it must match to resume (its identity)."""

    slot: checkpoint.Slot
    identity: checkpoint.Identity
    every: int  # epochs between checkpoints; 0: only on a signal
    resume: bool  # train.resume == "auto"


def train_and_log(
    *,
    plan: Plan,
    lr: float,
    batch_size: int,
    epochs: int,
    test_each_epoch: bool,
    outputs: paths.Outputs,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    config_yaml: str,
    log_model: bool,
    dataset: runs.DatasetInfo,
    checkpoints: Checkpointing,
    parent_run_id: str | None = None,
    threads: int = 1,
) -> RunResult:
    """Train `plan` with SGD, evaluate on its test set, log one MLflow run, write `outputs`.

    Inputs: the plan (initial params, data, order); the schedule (lr, batch_size, epochs);
    test_each_epoch: also evaluate the test set after every epoch; where to write; the MLflow
    experiment, run name, tags, params (flat) and the configuration's text (an artifact);
    log_model: also log the pyfunc model; dataset: the input, for MLflow's dataset tracking;
    checkpoints: where checkpoints go and whether to resume one; parent_run_id: the sweep's
    parent run, if any; threads: the threads that train and evaluate (the results are the same
    bytes for any number).
    Returns the run id, the training result and the test evaluation.

    Order, so that an interruption always leaves a true state: train and evaluate (signals act
    between batches, after a checkpoint), log every artifact from a staging folder, then write
    all of `outputs` together (old or new, never a mix), then end the run FINISHED and drop its
    checkpoint. An interruption before the last step ends the run KILLED with the previous
    outputs untouched and the checkpoint kept (`Interrupted.checkpoint` says where).
    """
    with checkpoints.slot.locked() as slot:  # CheckpointError if a live process trains this
        client = mlflow.MlflowClient()
        found = _checkpoint_to_resume(client, checkpoints)
        batches_per_epoch = -(-len(plan.fit) // batch_size)
        identity = checkpoints.identity
        run_tags = {
            **tags,
            "config_sha256": identity.config_sha256,
            "code_sha256": identity.code_sha256,
            **liveness.process_tags(),
        }
        state = sgd.TrainState(plan.params0)
        resumed_from = found.where() if found is not None else None
        if found is not None:
            resumes = client.get_run(found.run_id).data.tags.get("resumes", "0")
            run_tags["resumes"] = str(int(resumes) + 1)
            state = found.state
            plan.order.restore(found.order)  # order(epoch) continues where the checkpoint stood
        run_id = found.run_id if found is not None else None
        with runs.run(
            experiment_id,
            run_name=run_name,
            tags=run_tags,
            parent_run_id=parent_run_id,
            run_id=run_id,
        ) as r:
            run_id = r.info.run_id
            if found is None:
                mlflow.log_params({**params, "train.batches_per_epoch": batches_per_epoch})
                runs.log_dataset(dataset)
            metrics_log = runs.MetricLog(client, run_id, resumed=found is not None)

            def log_epoch(epoch: int, metrics: Mapping[str, float]) -> dict[str, float]:
                shown = {k: v for k, v in metrics.items() if k != "epoch"}
                first = (epoch - 1) * batches_per_epoch + 1
                losses = state.losses[first - 1 : epoch * batches_per_epoch]
                metrics_log.log(
                    shown,
                    epoch,
                    series={"batch_loss": (first, losses)},
                    tags={liveness.HEARTBEAT: liveness.heartbeat_now()},
                )
                return shown

            for epoch, metrics in enumerate(state.history, start=1):  # what a lost process missed
                log_epoch(epoch, metrics)

            def save() -> None:
                ckpt = checkpoint.Checkpoint(identity, run_id, state, plan.order.state())
                checkpoints.slot.write(ckpt)

            def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
                shown = log_epoch(epoch, metrics)
                text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
                print(f"epoch {epoch}/{epochs}: {text}", flush=True)
                every = checkpoints.every
                if every and (epoch % every == 0 or epoch == epochs):
                    save()

            def on_batch(step: int, loss: float) -> None:
                interrupts.check()  # signals take effect here, between batches

            evals = {"val": (plan.val.x, plan.val.y)} if plan.val else {}
            if test_each_epoch:
                evals["test"] = (plan.test.x, plan.test.y)
            try:
                trained = sgd.train(
                    plan.params0,
                    plan.fit.x,
                    plan.fit.y,
                    epochs=epochs,
                    batch_size=batch_size,
                    lr=lr,
                    order=plan.order,
                    evals=evals,
                    on_batch=on_batch,
                    on_epoch=on_epoch,
                    state=state,
                    threads=threads,
                )
                trained.params = plan.to_saved(trained.params)  # natural images, in every mode
                test = assess(trained.params, plan.test_natural, threads=threads)
                if not test_each_epoch:  # else logged at every epoch, the last one included
                    metrics_log.log({"test_loss": test.loss, "test_error": test.error}, epochs)
                interrupts.check()

                contents = train_outputs(outputs, trained, batches_per_epoch)
                # What `pipeline.verify` compares a retraining against: the weights file's own hash.
                mlflow.set_tag("weights_sha256", sha256_bytes(contents[outputs.weights]))
                with tempfile.TemporaryDirectory(prefix="pipeline-artifacts-") as tmp:
                    staged = Path(tmp)
                    weights = staged / outputs.weights.name
                    weights.write_bytes(contents[outputs.weights])
                    _log_artifacts(
                        staged,
                        trained,
                        test,
                        plan.test_natural.labels,
                        batches_per_epoch,
                        config_yaml,
                    )
                    if log_model:
                        pyfunc.log_model(weights)
                interrupts.check()  # the last moment an interruption leaves the outputs unchanged
            except interrupts.Interrupted as exc:
                if exc.safe:  # at a batch boundary or after training: the state is whole
                    save()
                exc.checkpoint = _describe(checkpoints.slot)
                raise
            write_together(contents)
            late = interrupts.take()  # the work is complete: the run ends FINISHED regardless
        result = RunResult(
            run_id=run_id, trained=trained, test=test, late_signal=late, resumed_from=resumed_from
        )
        slot.remove()  # the run FINISHED: nothing is left to resume
    return result


def _checkpoint_to_resume(
    client: mlflow.MlflowClient, checkpoints: Checkpointing
) -> checkpoint.Checkpoint | None:
    """The slot's checkpoint if this run should continue it, else None; says why on a line
    when there is a checkpoint it does not use, and ends that checkpoint's run KILLED if it was
    left RUNNING (the slot's lock is ours: the process that ran it is gone)."""
    slot = checkpoints.slot
    try:
        found = slot.read()
    except checkpoint.CheckpointError as exc:
        print(f"checkpoint not used ({exc}): training starts over", file=sys.stderr)
        return None
    if found is None:
        return None
    try:
        run = client.get_run(found.run_id)
    except MlflowException:
        print(
            f"checkpoint {slot.shown} not used: its MLflow run {found.run_id} is not in "
            f"{store.redact(client.tracking_uri)}; training starts over",
            file=sys.stderr,
        )
        return None
    status = run.info.status
    if not checkpoints.resume:
        print(f"train.resume=never: the checkpoint in {slot} is not used; this run replaces it")
        _close_abandoned(client, run, "train.resume=never started this configuration over")
        return None
    differs = found.identity.differences(checkpoints.identity)
    if differs:
        print(
            f"checkpoint {slot.shown} refused: it was made by another run ({'; '.join(differs)})"
            "; training starts over",
            file=sys.stderr,
        )
        _close_abandoned(client, run, f"its checkpoint was refused ({'; '.join(differs)})")
        return None
    if status == "FINISHED":  # ended after its last checkpoint: a new run is asked for
        return None
    # The slot's lock is ours, so the process that left a RUNNING run is gone (liveness).
    how = "taking over" if status == "RUNNING" else "resuming"
    left = "left RUNNING by a process that is gone" if status == "RUNNING" else status
    print(f"train: {how} MLflow run {found.run_id} ({left}) from {found.where()}", flush=True)
    return found


def _close_abandoned(client: mlflow.MlflowClient, run: Run, why: str) -> None:
    """End `run` KILLED (tag `stale`) if its process left it RUNNING; a line says so."""
    if run.info.status != "RUNNING":
        return
    liveness.close(client, run, f"its process is gone and {why}")
    print(
        f"train: MLflow run {run.info.run_id}, left RUNNING by a process that is gone, ended KILLED"
    )


def _describe(slot: checkpoint.Slot) -> str | None:
    """ "<file> (epoch 3, batch 7)": the checkpoint an interrupted run leaves; None if none."""
    try:
        kept = slot.read()
    except checkpoint.CheckpointError:
        return None
    return None if kept is None else f"{slot.shown} ({kept.where()})"


def _log_artifacts(
    staged: Path,
    trained: sgd.TrainResult,
    test: Evaluation,
    labels: np.ndarray,
    batches_per_epoch: int,
    config_yaml: str,
) -> None:
    """The weights (already in `staged`), the configuration, the test predictions (labels
    (N,): the test set's; for paired comparisons, McNemar's test) and the run's figures, as
    artifacts of the active run."""
    curves = {
        k: [h[k] for h in trained.history if k in h]
        for k in ("train_loss", "val_loss", "val_error")
    }
    params = trained.params
    (staged / "params.yaml").write_text(config_yaml, encoding="utf-8")
    (staged / "predictions").mkdir()
    write_csv(
        staged / "predictions" / "test.csv",
        ["actual", "predicted"],
        list(zip(labels.tolist(), test.predictions.tolist(), strict=True)),
    )
    figures.learning_curves(
        staged / "learning_curves.png",
        batch_loss=trained.batch_losses,
        batches_per_epoch=batches_per_epoch,
        **curves,
    )
    figures.confusion(staged / "confusion_matrix.png", test.confusion)
    figures.kernels(staged / "kernels_c1.png", params["k1"], title="C1 kernels k1")
    figures.kernels(staged / "kernels_c2.png", params["k2"], title="C2 kernels k2")
    mlflow.log_artifacts(str(staged))


def train_outputs(
    outputs: paths.Outputs, trained: sgd.TrainResult, batches: int
) -> dict[Path, bytes]:
    """The train stage's DVC outputs as bytes: weights, final training metrics, per-epoch and
    per-batch curves."""
    last = trained.history[-1]
    columns = [*EPOCH_COLUMNS, *(k for k in ("test_loss", "test_error") if k in last)]
    smoothed = figures.smooth(trained.batch_losses)  # the toolbox's rL, decay 0.99
    return {
        outputs.weights: weights_bytes(trained.params),
        outputs.train_metrics: json_bytes(
            {"epochs": len(trained.history)} | {k: last[k] for k in EPOCH_COLUMNS if k in last}
        ),
        outputs.epochs_csv: csv_bytes(
            ["epoch", *columns],
            [
                (int(h["epoch"]), *(h.get(k, float("nan")) for k in columns))
                for h in trained.history
            ],
        ),
        outputs.batches_csv: csv_bytes(
            ["step", "epoch", "batch_loss", "smoothed_loss"],
            [
                (s, (s - 1) // batches + 1, loss, smoothed[s - 1])
                for s, loss in enumerate(trained.batch_losses, 1)
            ],
        ),
    }


# --------------------------------------------------------------------------- entry points


def _run(
    cfg: Config,
    tree: Mapping[str, Any],
    outputs: paths.Outputs,
    *,
    parent_run_id: str | None = None,
    sweep_tags: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> RunResult | Skipped:
    """What both entry points share: read the environment, git, the store and the prepared
    file, then call `train_and_log` (or, for a sweep job already done, skip it). cores: the
    cores this run may use (None: all this process may use; a sweep job passes its share)."""
    env = runtime.environment()
    threads = runtime.training_threads(
        cfg.train.threads,
        cores=runtime.available_cores() if cores is None else cores,
        slurm_cpus=env.slurm_cpus,
    )
    root = env.root
    uri = env.store_uri(cfg.tracking.uri)
    client, experiment_id = store.connect(uri, cfg.tracking.experiment, paths.artifact_root(root))
    prepared_path = Path(cfg.data.prepared)
    data_sha256 = sha256_file(prepared_path) if prepared_path.is_file() else "missing"
    flat = runs.flatten(tree)
    environment = {
        "blas_threads": env.blas_threads,
        "portable": "on" if env.portable else "off",  # see pipeline.runtime, portable mode
        "simd": runtime.simd_paths(),  # the SIMD paths that really ran
        "numpy_version": np.__version__,
    }
    identity = checkpoint.Identity(
        config={k: v for k, v in flat.items() if k not in RESUME_KEYS},
        code={
            f"pipeline/{name}": sha
            for name, sha in tree_sha256s(Path(pipeline.__file__).parent, CODE_SUFFIXES).items()
        },
        data=data_sha256,
        environment=environment,
    )
    if parent_run_id is not None and sweep_tags and cfg.train.resume == "auto":
        job = sweep_tags.get("overrides", "")
        done, note = sweeps.finished_job(
            client,
            parent_run_id,
            job=job,
            params=flat,
            code_sha256=identity.code_sha256,
            data_sha256=data_sha256,
        )
        if note:
            print(f"job {job or '(no overrides)'}: {note}", flush=True)
        if done is not None:
            return Skipped(done.info.run_id, done.data.metrics.get("test_error", float("nan")))
    prepared = read_prepared(prepared_path, fix=prepare_advice(cfg.data.name))
    if prepared.n_val != cfg.data.val_size:
        raise DataError(
            f"{prepared_path} holds a validation split of {prepared.n_val} images but "
            f"data.val_size is {cfg.data.val_size}: prepare it again (`dvc repro prepare`, or "
            f"`dvc exp run -S data.val_size={cfg.data.val_size}`)"
        )
    plan = make_plan(
        prepared=prepared,
        seed=cfg.seed,
        rng=cfg.train.rng,
        dtype=np.dtype(cfg.train.dtype),
        subset=cfg.data.subset,
        init_seed=cfg.train.init_seed,
        order_seed=cfg.train.order_seed,
    )
    tags = {
        "git_commit": paths.git_commit(Path.cwd()),
        "data_sha256": data_sha256,
        "dataset": cfg.data.name,
        "seed": str(cfg.seed),
        "pipeline_version": pipeline.__version__,
        **environment,
        "threads": str(threads),  # of the training (the weights do not depend on it)
        **({"dvc_exp_name": env.dvc_exp_name} if env.dvc_exp_name else {}),
        **dict(sweep_tags or {}),
    }
    run_name = _run_name(cfg)
    slot = checkpoint.Slot(paths.checkpoints(root) / checkpoint.slot_name(run_name, identity))
    return train_and_log(
        plan=plan,
        lr=cfg.train.lr,
        batch_size=cfg.train.batch_size,
        epochs=cfg.train.epochs,
        test_each_epoch=cfg.train.test_each_epoch,
        outputs=outputs,
        experiment_id=experiment_id,
        run_name=run_name,
        tags=tags,
        params=flat,
        config_yaml=yaml.safe_dump(dict(tree), sort_keys=False),
        log_model=cfg.tracking.log_model,
        dataset=runs.DatasetInfo(
            name=cfg.data.name,
            path=prepared_path.resolve(),
            sha256=data_sha256,
            provenance=raw_provenance(Path(cfg.data.raw_dir) / paths.PROVENANCE),
        ),
        checkpoints=Checkpointing(
            slot=slot,
            identity=identity,
            every=cfg.train.checkpoint_every,
            resume=cfg.train.resume == "auto",
        ),
        parent_run_id=parent_run_id,
        threads=threads,
    )


def job_cores(launcher: Mapping[str, Any], cores: int) -> int:
    """A sweep job's share of this machine's `cores`, from its Hydra launcher's settings: the
    joblib launcher runs n_jobs jobs at once (negative: cores + 1 + n_jobs, joblib's meaning),
    so each gets cores // n_jobs; submitit's launchers give each job `cpus_per_task` (1 when
    unset: its local launcher starts every job at once); the basic launcher runs one job at a
    time, with every core."""
    target = str(launcher.get("_target_", ""))
    if "Joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or 1)
        n_jobs = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        return max(1, cores // n_jobs)
    if "submitit" in target:
        return int(launcher.get("cpus_per_task") or 1)
    return cores


def _run_name(cfg: Config) -> str:
    name = f"{cfg.data.name}-lr{cfg.train.lr:g}-bs{cfg.train.batch_size}-seed{cfg.seed}"
    for key in ("init_seed", "order_seed"):  # only when given apart from `seed`
        value = getattr(cfg.train, key)
        name += "" if value is None else f"-{key.split('_')[0]}{value}"
    return name


def raw_provenance(path: Path) -> str:
    """Where the raw files came from, from fetch's provenance.json ("unknown" without it)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        sources = sorted({f["source"] for f in record["files"].values()})
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    return "; ".join(sources)


def prepare_advice(dataset: str, params_file: Path = PARAMS_FILE) -> str:
    """How to prepare `dataset`: through `dvc repro` when params.yaml selects it, else through
    an experiment that selects it (a Hydra run can name any dataset)."""
    selected = None
    if params_file.is_file():
        selected = (yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}).get("data", {})
    if isinstance(selected, dict) and selected.get("name") == dataset:
        return "prepare it with `dvc repro prepare`"
    return (
        f"data={dataset} has not been prepared: `dvc exp run -S data={dataset} prepare` does it "
        f"(and leaves params.yaml selecting {dataset}; `git checkout params.yaml` undoes that)"
    )


FAILURES = (
    ConfigError,
    DataError,
    store.TrackingError,
    sgd.DivergenceError,
    NotInProject,
    checkpoint.CheckpointError,
)


def interrupted_message(exc: BaseException, outputs: paths.Outputs) -> str:
    """One true line on what an interrupted training left behind."""
    run_id = getattr(exc, "run_id", None)
    if run_id is None:
        return "train interrupted before its MLflow run started: nothing was written"
    line = (
        f"train interrupted: MLflow run {run_id} ended KILLED; no output was written "
        f"({outputs.weights} and the others are as they were)"
    )
    kept = getattr(exc, "checkpoint", None)
    if kept:
        line += f"; checkpoint {kept} kept: the same command resumes it"
    return line


def finished_message(result: RunResult | Skipped) -> str:
    if isinstance(result, Skipped):
        return (
            f"train: skipped, already FINISHED with the same config, code and data (MLflow run "
            f"{result.run_id}, test error {result.test_error:.2%})"
        )
    line = f"train: test error {result.test.error:.2%} (MLflow run {result.run_id}"
    line += f", resumed from {result.resumed_from})" if result.resumed_from else ")"
    if result.late_signal is not None:
        line += "; interrupted after the outputs were written: they and the run are complete"
    return line


def run_stage(params_file: Path) -> int:
    """The DVC stage: params.yaml in, files out; a clear message and exit 1 on failure, 130
    when interrupted."""
    outputs = paths.Outputs()
    with interrupts.raising():
        try:
            runtime.enter_project()
            cfg, tree = load_params(params_file)
            result = _run(cfg, tree, outputs)
        except FAILURES as exc:
            print(f"train failed: {exc}", file=sys.stderr)
            return 1
        except (interrupts.Interrupted, KeyboardInterrupt) as exc:
            print(interrupted_message(exc, outputs), file=sys.stderr)
            return 130
    print(finished_message(result))
    return 0


def hydra_entry() -> None:
    """`python -m pipeline.train [overrides]`: compose conf/ with Hydra and run once per job.

    A single run fails with one line (exit 1) or, interrupted, says what it left (exit 130),
    as the DVC stage does. In a multirun a failing job raises, so that the launcher records it
    and runs the others; an interruption stops the sweep.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig, OmegaConf

    from pipeline.sweep import job_context

    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> float:
        hc = HydraConfig.get()
        outputs = paths.Outputs(Path(hc.runtime.output_dir))
        env = runtime.environment()
        if env.sweep_launcher is not None:  # a local parallel launcher's job: die with it
            runtime.exit_with(env.sweep_launcher)
        try:
            config = validate(cfg)
            tree = OmegaConf.to_container(cfg, resolve=True)
            job = hc.job.num if env.sweep_parent else None  # hydra.job.num: multirun only
            parent, tags = job_context(env, list(hc.overrides.task), job)
            cores = runtime.available_cores()
            if hc.mode == RunMode.MULTIRUN:  # jobs run side by side: each takes its share
                cores = job_cores(OmegaConf.to_container(hc.launcher), cores)
            result = _run(config, tree, outputs, parent_run_id=parent, sweep_tags=tags, cores=cores)
        except FAILURES as exc:
            if hc.mode == RunMode.MULTIRUN:
                raise
            print(f"train failed: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except (interrupts.Interrupted, KeyboardInterrupt) as exc:
            print(interrupted_message(exc, outputs), file=sys.stderr, flush=True)
            if isinstance(exc, interrupts.Interrupted):  # Slurm's SIGUSR2 to submitit: requeue
                interrupts.pass_on(exc.signum)
            raise SystemExit(130) from None
        print(finished_message(result))
        return result.test_error if isinstance(result, Skipped) else result.test.error

    with interrupts.raising():
        try:
            runtime.enter_project()  # Hydra's outputs/ and multirun/ land at the project root
            _main()
        except NotInProject as exc:
            print(f"train failed: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except (interrupts.Interrupted, KeyboardInterrupt):  # outside a job (Hydra, launcher)
            print("train interrupted between jobs", file=sys.stderr)
            raise SystemExit(130) from None


if __name__ == "__main__":
    runtime.tune_malloc()  # reuse each step's large temporaries (glibc); results unchanged
    if "--params" in sys.argv[1:]:
        i = sys.argv.index("--params")
        sys.exit(run_stage(Path(sys.argv[i + 1]) if i + 1 < len(sys.argv) else Path("params.yaml")))
    hydra_entry()
