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
BLAS threads, portable mode and the SIMD paths that ran, NumPy version, the weights' sha256);
artifacts (weights.npz, params.yaml, PNG figures) and the pyfunc model. It ends
FINISHED only after all of that, FAILED on an error (divergence included), KILLED on Ctrl-C or
SIGTERM; the weights file is written, atomically, only after training succeeded.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml

import pipeline
from pipeline import paths, runtime
from pipeline.config import Config, ConfigError, load_params, validate
from pipeline.data.prepared import read_prepared
from pipeline.files import DataError, sha256_file, write_csv, write_json
from pipeline.model import sgd
from pipeline.model.inference import Evaluation, assess
from pipeline.model.plan import Plan, make_plan
from pipeline.model.weights import save_weights
from pipeline.reports import figures
from pipeline.tracking import pyfunc, runs, store

EPOCH_COLUMNS = ("train_loss", "train_error", "val_loss", "val_error")  # test_*: if logged


@dataclass
class RunResult:
    run_id: str
    trained: sgd.TrainResult
    test: Evaluation


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
    parent_run_id: str | None = None,
) -> RunResult:
    """Train `plan` with SGD, evaluate on its test set, write `outputs`, log one MLflow run.

    Inputs: the plan (initial params, data, order); the schedule (lr, batch_size, epochs);
    test_each_epoch: also evaluate the test set after every epoch; where to write; the MLflow
    experiment, run name, tags, params (flat) and the configuration's text (an artifact);
    log_model: also log the pyfunc model; parent_run_id: the sweep's parent run, if any.
    Returns the run id, the training result and the test evaluation.
    """
    batches_per_epoch = -(-len(plan.fit) // batch_size)
    with runs.run(experiment_id, run_name=run_name, tags=tags, parent_run_id=parent_run_id) as r:
        run_id = r.info.run_id
        client = mlflow.MlflowClient()
        mlflow.log_params({**params, "train.batches_per_epoch": batches_per_epoch})

        pending: list[float] = []  # this epoch's batch losses, logged in one call per epoch

        def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
            shown = {k: v for k, v in metrics.items() if k != "epoch"}
            mlflow.log_metrics(shown, step=epoch)
            text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
            print(f"epoch {epoch}/{epochs}: {text}", flush=True)
            first = (epoch - 1) * batches_per_epoch + 1
            runs.log_series(client, run_id, "batch_loss", pending, first)
            pending.clear()

        def on_batch(step: int, loss: float) -> None:
            pending.append(loss)
            runs.stop_point()  # SIGTERM / Ctrl-C take effect here, between batches

        evals = {"val": (plan.val.x, plan.val.y)} if plan.val else {}
        if test_each_epoch:
            evals["test"] = (plan.test.x, plan.test.y)
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
        )
        trained.params = plan.to_saved(trained.params)  # natural images, in every mode
        test = assess(trained.params, plan.test_natural)
        if not test_each_epoch:  # else logged at every epoch, the last one included
            mlflow.log_metrics({"test_loss": test.loss, "test_error": test.error}, step=epochs)

        runs.stop_point()  # a signal during evaluation: no weights, run KILLED
        write_train_outputs(outputs, trained, batches_per_epoch)
        # What `pipeline.verify` compares a retraining against: the weights file's own hash.
        mlflow.set_tag("weights_sha256", sha256_file(outputs.weights))
        _log_artifacts(trained, test, batches_per_epoch, config_yaml)
        mlflow.log_artifact(str(outputs.weights))
        if log_model:
            example = plan.test_natural.x[:2].astype(np.float64)  # the signature's dtype
            pyfunc.log_model(outputs.weights, input_example=example)
    return RunResult(run_id=run_id, trained=trained, test=test)


def _log_artifacts(
    trained: sgd.TrainResult, test: Evaluation, batches_per_epoch: int, config_yaml: str
) -> None:
    """The configuration and the run's figures, as artifacts of the active run."""
    curves = {
        k: [h[k] for h in trained.history if k in h]
        for k in ("train_loss", "val_loss", "val_error")
    }
    params = trained.params
    with tempfile.TemporaryDirectory(prefix="pipeline-artifacts-") as tmp:
        tmp = Path(tmp)
        (tmp / "params.yaml").write_text(config_yaml, encoding="utf-8")
        figures.learning_curves(
            tmp / "learning_curves.png",
            batch_loss=trained.batch_losses,
            batches_per_epoch=batches_per_epoch,
            **curves,
        )
        figures.confusion(tmp / "confusion_matrix.png", test.confusion)
        figures.kernels(tmp / "kernels_c1.png", params["k1"], title="C1 kernels k1")
        figures.kernels(tmp / "kernels_c2.png", params["k2"], title="C2 kernels k2")
        mlflow.log_artifacts(str(tmp))


def write_train_outputs(outputs: paths.Outputs, trained: sgd.TrainResult, batches: int) -> None:
    """Weights, final training metrics and per-epoch / per-batch curves, for DVC."""
    save_weights(outputs.weights, trained.params)
    last = trained.history[-1]
    write_json(
        outputs.train_metrics,
        {"epochs": len(trained.history)} | {k: last[k] for k in EPOCH_COLUMNS if k in last},
    )
    columns = [*EPOCH_COLUMNS, *(k for k in ("test_loss", "test_error") if k in last)]
    write_csv(
        outputs.epochs_csv,
        ["epoch", *columns],
        [(int(h["epoch"]), *(h.get(k, float("nan")) for k in columns)) for h in trained.history],
    )
    smoothed = figures.smooth(trained.batch_losses)  # the toolbox's rL, decay 0.99
    write_csv(
        outputs.batches_csv,
        ["step", "epoch", "batch_loss", "smoothed_loss"],
        [
            (s, (s - 1) // batches + 1, loss, smoothed[s - 1])
            for s, loss in enumerate(trained.batch_losses, 1)
        ],
    )


# --------------------------------------------------------------------------- entry points


def _run(
    cfg: Config,
    tree: Mapping[str, Any],
    outputs: paths.Outputs,
    *,
    parent_run_id: str | None = None,
    sweep_tags: Mapping[str, str] | None = None,
) -> RunResult:
    """What both entry points share: read the environment, git, the store and the prepared
    file, then call `train_and_log`."""
    env = runtime.environment()
    root = env.root
    uri = env.store_uri(cfg.tracking.uri)
    _, experiment_id = store.connect(uri, cfg.tracking.experiment, paths.artifact_root(root))
    prepared_path = Path(cfg.data.prepared)
    prepared = read_prepared(prepared_path)
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
    )
    tags = {
        "git_commit": paths.git_commit(Path.cwd()),
        "data_sha256": sha256_file(prepared_path),
        "dataset": cfg.data.name,
        "seed": str(cfg.seed),
        "pipeline_version": pipeline.__version__,
        "blas_threads": env.blas_threads,
        "portable": "on" if env.portable else "off",  # see pipeline.runtime, portable mode
        "simd": runtime.simd_paths(),  # the SIMD paths that really ran
        "numpy_version": np.__version__,
        **({"dvc_exp_name": env.dvc_exp_name} if env.dvc_exp_name else {}),
        **dict(sweep_tags or {}),
    }
    return train_and_log(
        plan=plan,
        lr=cfg.train.lr,
        batch_size=cfg.train.batch_size,
        epochs=cfg.train.epochs,
        test_each_epoch=cfg.train.test_each_epoch,
        outputs=outputs,
        experiment_id=experiment_id,
        run_name=f"{cfg.data.name}-lr{cfg.train.lr:g}-bs{cfg.train.batch_size}-seed{cfg.seed}",
        tags=tags,
        params=runs.flatten(tree),
        config_yaml=yaml.safe_dump(dict(tree), sort_keys=False),
        log_model=cfg.tracking.log_model,
        parent_run_id=parent_run_id,
    )


def run_stage(params_file: Path) -> int:
    """The DVC stage: params.yaml in, files out; a clear message and exit 1 on failure."""
    try:
        cfg, tree = load_params(params_file)
        result = _run(cfg, tree, paths.Outputs())
    except (ConfigError, DataError, store.TrackingError, sgd.DivergenceError) as exc:
        print(f"train failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, runs.Terminated):
        print("train interrupted: the MLflow run ended KILLED; no weights written", file=sys.stderr)
        return 130
    print(f"train: test error {result.test.error:.2%} (MLflow run {result.run_id})")
    return 0


def hydra_entry() -> None:
    """`python -m pipeline.train [overrides]`: compose conf/ with Hydra and run once per job."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    from pipeline.sweep import job_context

    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> float:
        config = validate(cfg)
        tree = OmegaConf.to_container(cfg, resolve=True)
        hc = HydraConfig.get()
        env = runtime.environment()
        job = hc.job.num if env.sweep_parent else None  # hydra.job.num: only set in a multirun
        parent, tags = job_context(env, list(hc.overrides.task), job)
        result = _run(
            config,
            tree,
            paths.Outputs(Path(hc.runtime.output_dir)),
            parent_run_id=parent,
            sweep_tags=tags,
        )
        print(f"train: test error {result.test.error:.2%} (MLflow run {result.run_id})")
        return result.test.error

    _main()


if __name__ == "__main__":
    runtime.tune_malloc()  # reuse each step's large temporaries (glibc); results unchanged
    if "--params" in sys.argv[1:]:
        i = sys.argv.index("--params")
        sys.exit(run_stage(Path(sys.argv[i + 1]) if i + 1 < len(sys.argv) else Path("params.yaml")))
    hydra_entry()
