"""Train the CNN on the prepared data, evaluate it, and log everything to one MLflow run.

Two entry points, one code path (`train_and_log`):
- DVC stage:  python -m pipeline.train --params params.yaml
  reads params.yaml, writes models/weights.npz, metrics/train.json, plots/{epochs,batches}.csv.
- Hydra:      python -m pipeline.train [overrides]   (and -m for multirun sweeps)
  composes conf/, writes the same files into Hydra's job folder.

The MLflow run gets: params as dotted keys; per-epoch train_loss, val_loss, val_error
(step = epoch); per-batch `batch_loss` (step = global batch index from 1, loss before that
batch's update); final test_loss, test_error; tags (git commit, data hash, dataset, seed);
artifacts (weights.npz, params.yaml, PNG figures) and the pyfunc model. It ends FINISHED only
after all of that, FAILED on an error (divergence included), KILLED on Ctrl-C or SIGTERM; the
weights file is written, atomically, only after training succeeded.
"""

from __future__ import annotations

import os
import subprocess
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
from pipeline import cnn, figures, outputs, runtime, serving, toolbox, tracking, training
from pipeline.config import Config, ConfigError, load_params, validate
from pipeline.dataset import Split, load_prepared, load_training_set
from pipeline.evaluate import Evaluation, assess
from pipeline.integrity import DataError, sha256_file
from pipeline.outputs import Paths


@dataclass
class RunResult:
    run_id: str
    trained: training.TrainResult
    test: Evaluation


# What decides a run's result; DVC deletes and rewrites its own outputs (dvc.lock, metrics/,
# plots/) while stages run, so those must not mark the tree dirty.
CODE_PATHS = ("pipeline", "conf", "dvc.yaml", "pyproject.toml", "requirements.lock")


def git_commit() -> str:
    """HEAD's commit, with "-dirty" when the code or configuration differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout

    try:
        head = git("rev-parse", "HEAD").strip()
        top = Path(git("rev-parse", "--show-toplevel").strip())
        paths = [p for p in CODE_PATHS if (top / p).exists()]
        dirty = git("-C", str(top), "status", "--porcelain", "--untracked-files=no", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty.strip() else head


def subset(split: Split, n: int | None) -> Split:
    """The first n samples of a split (all of it when n is None)."""
    if n is None or n >= len(split):
        return split
    return Split(x=split.x[:n], labels=split.labels[:n], y=split.y[:n])


@dataclass
class Plan:
    """What a run trains on, in which order, from which initial parameters."""

    params0: dict[str, np.ndarray]
    fit: Split  # as the network sees them during training
    val: Split | None
    test: Split  # as the network sees it during training (per-epoch evaluation)
    test_natural: Split  # natural images, for the final weights (always natural)
    order: dict[str, Any]  # training.train's shuffle_rng= or order=


def plan(cfg: Config) -> Plan:
    """The run's data and randomness, for `train.rng` default or toolbox.

    default: SeedSequence(seed) generators (initialisation, shuffling), the fit split (or its
    first `data.subset` images), validation after every epoch.
    toolbox: DeepLearnToolbox's run under Octave after rand('state', seed), replayed
    (`pipeline.toolbox`): its initial parameters and randperm order over all 60,000 training
    images in file order, each image transposed as the toolbox presents it; no validation split
    (every image is trained on, as in the toolbox).
    """
    dtype = np.dtype(cfg.train.dtype)
    data = load_prepared(Path(cfg.data.prepared), dtype)
    if len(data.val) != cfg.data.val_size:
        raise DataError(
            f"{cfg.data.prepared} holds a validation split of {len(data.val)} images but "
            f"data.val_size is {cfg.data.val_size}: prepare it again (`dvc repro prepare`, or "
            f"`dvc exp run -S data.val_size={cfg.data.val_size}`)"
        )
    if cfg.train.rng == "toolbox":
        full = load_training_set(Path(cfg.data.prepared), dtype)
        params0, order = toolbox.replay(cfg.seed, len(full), dtype)

        def shown(s: Split) -> Split:
            return Split(x=toolbox.present(s.x), labels=s.labels, y=s.y)

        return Plan(params0, shown(full), None, shown(data.test), data.test, {"order": order})
    init_rng, order_rng = training.make_generators(cfg.seed)
    val = data.val if len(data.val) else None
    return Plan(cnn.init_params(init_rng, dtype), subset(data.fit, cfg.data.subset), val,
                data.test, data.test, {"shuffle_rng": order_rng})  # fmt: skip


def train_and_log(
    cfg: Config,
    paths: Paths,
    *,
    config_tree: Mapping[str, Any],
    parent_run_id: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Train, evaluate on the test set, write `paths`' files and log one MLflow run."""
    _, experiment_id = tracking.connect(cfg.tracking.uri, cfg.tracking.experiment)  # fail fast
    p = plan(cfg)
    batches_per_epoch = -(-len(p.fit) // cfg.train.batch_size)
    tags = {
        "git_commit": git_commit(),
        "data_sha256": sha256_file(Path(cfg.data.prepared)),
        "dataset": cfg.data.name,
        "seed": str(cfg.seed),
        "pipeline_version": pipeline.__version__,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        **({"dvc_exp_name": os.environ["DVC_EXP_NAME"]} if os.environ.get("DVC_EXP_NAME") else {}),
        **dict(extra_tags or {}),
    }
    name = f"{cfg.data.name}-lr{cfg.train.lr:g}-bs{cfg.train.batch_size}-seed{cfg.seed}"
    with tracking.run(experiment_id, run_name=name, tags=tags, parent_run_id=parent_run_id) as r:
        run_id = r.info.run_id
        client = mlflow.MlflowClient()
        mlflow.log_params(tracking.flatten(config_tree))
        mlflow.log_param("train.batches_per_epoch", batches_per_epoch)

        pending: list[float] = []  # this epoch's batch losses, logged in one call per epoch

        def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
            shown = {k: v for k, v in metrics.items() if k != "epoch"}
            mlflow.log_metrics(shown, step=epoch)
            print(f"epoch {epoch}/{cfg.train.epochs}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()), flush=True)  # fmt: skip
            first = (epoch - 1) * batches_per_epoch + 1
            tracking.log_series(client, run_id, "batch_loss", pending, first)
            pending.clear()

        def on_batch(step: int, loss: float) -> None:
            pending.append(loss)
            tracking.stop_point()  # SIGTERM / Ctrl-C take effect here, between batches

        trained = training.train(
            p.params0, p.fit.x, p.fit.y, epochs=cfg.train.epochs,
            batch_size=cfg.train.batch_size, lr=cfg.train.lr,
            x_val=p.val.x if p.val else None, y_val=p.val.y if p.val else None,
            extra_evals={"test": (p.test.x, p.test.y)} if cfg.train.test_each_epoch else None,
            on_batch=on_batch, on_epoch=on_epoch, **p.order,
        )  # fmt: skip
        if cfg.train.rng == "toolbox":  # saved weights take natural images, like all others
            trained.params = toolbox.to_natural(trained.params)
        params = trained.params
        test = assess(params, p.test_natural)
        if not cfg.train.test_each_epoch:  # else logged at every epoch, the last one included
            mlflow.log_metrics({"test_loss": test.loss, "test_error": test.error},
                               step=cfg.train.epochs)  # fmt: skip

        tracking.stop_point()  # a signal during evaluation: no weights, run KILLED
        write_train_outputs(paths, trained, batches_per_epoch)
        curves = {k: [h[k] for h in trained.history if k in h]
                  for k in ("train_loss", "val_loss", "val_error")}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="pipeline-artifacts-") as tmp:
            tmp = Path(tmp)
            (tmp / "params.yaml").write_text(yaml.safe_dump(dict(config_tree), sort_keys=False))
            figures.learning_curves(
                tmp / "learning_curves.png", batch_loss=trained.batch_losses,
                batches_per_epoch=batches_per_epoch, **curves,
            )  # fmt: skip
            figures.confusion(tmp / "confusion_matrix.png", test.confusion)
            figures.kernels(tmp / "kernels_c1.png", params["k1"], title="C1 kernels k1")
            figures.kernels(tmp / "kernels_c2.png", params["k2"], title="C2 kernels k2")
            mlflow.log_artifacts(str(tmp))
        mlflow.log_artifact(str(paths.weights))
        if cfg.tracking.log_model:
            example = p.test_natural.x[:2].astype(np.float64)
            serving.log_model(paths.weights, input_example=example)
    return RunResult(run_id=run_id, trained=trained, test=test)


EPOCH_COLUMNS = ("train_loss", "train_error", "val_loss", "val_error")  # test_*: if logged


def write_train_outputs(paths: Paths, trained: training.TrainResult, batches: int) -> None:
    """Weights, final training metrics and per-epoch / per-batch curves, for DVC."""
    outputs.write_weights(paths.weights, trained.params)
    last = trained.history[-1]
    outputs.write_json(
        paths.train_metrics,
        {"epochs": len(trained.history)} | {k: last[k] for k in EPOCH_COLUMNS if k in last},
    )
    columns = [*EPOCH_COLUMNS, *(k for k in ("test_loss", "test_error") if k in last)]
    outputs.write_csv(
        paths.epochs_csv,
        ["epoch", *columns],
        [(int(h["epoch"]), *(h.get(k, float("nan")) for k in columns)) for h in trained.history],
    )
    smoothed = figures.smooth(trained.batch_losses)  # the toolbox's rL, decay 0.99
    outputs.write_csv(
        paths.batches_csv, ["step", "epoch", "batch_loss", "smoothed_loss"],
        [(s, (s - 1) // batches + 1, loss, smoothed[s - 1])
         for s, loss in enumerate(trained.batch_losses, 1)],
    )  # fmt: skip


def run_stage(params_file: Path) -> int:
    """The DVC stage: params.yaml in, files out; a clear message and exit 1 on failure."""
    try:
        cfg = load_params(params_file)
        tree = yaml.safe_load(params_file.read_text(encoding="utf-8"))
        result = train_and_log(cfg, Paths(), config_tree=tree)
    except (ConfigError, DataError, tracking.TrackingError, training.DivergenceError) as exc:
        print(f"train failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, tracking.Terminated):
        print("train interrupted: the MLflow run ended KILLED; no weights written",
              file=sys.stderr)  # fmt: skip
        return 130
    print(f"train: test error {result.test.error:.2%} (MLflow run {result.run_id})")
    return 0


def hydra_entry() -> None:
    """`python -m pipeline.train [overrides]`: compose conf/ with Hydra and run once per job."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> float:
        from pipeline.sweep import job_context

        config = validate(cfg)
        tree = OmegaConf.to_container(cfg, resolve=True)
        out = Path(HydraConfig.get().runtime.output_dir)
        parent, tags = job_context()
        result = train_and_log(
            config, Paths(out), config_tree=tree, parent_run_id=parent, extra_tags=tags
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
