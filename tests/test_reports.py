"""Reports from runs: the figures, the toolbox's smoothed loss, the
reproduction report (from a real MLflow store), and `make repro`'s summary."""

from __future__ import annotations

import numpy as np
import pytest
import synthetic
from mlflow.entities import Metric

from pipeline.data.prepared import Prepared, prepare_arrays
from pipeline.model import cnn, toolbox
from pipeline.reports import figures, reproduction
from pipeline.reports.summary import summary_text


def test_smooth_is_the_toolbox_running_loss_hand_worked():
    # rL(1) = L_1; rL(t+1) = 0.99 rL(t) + 0.01 L_{t+1}
    np.testing.assert_allclose(figures.smooth([1.0, 2.0, 3.0]), [1.0, 1.01, 1.0299], rtol=1e-15)
    np.testing.assert_allclose(figures.smooth([4.0, 0.0], decay=0.5), [4.0, 2.0])
    assert figures.smooth([]).shape == (0,)


def test_figures_write_stable_pngs(tmp_path):
    k = np.random.default_rng(0).normal(size=(6, 12, 5, 5))
    cm = np.arange(100).reshape(10, 10)
    for name in ("a", "b"):
        figures.learning_curves(
            tmp_path / name / "curves.png",
            batch_loss=[1.0, 0.5, 0.4, 0.3],
            batches_per_epoch=2,
            train_loss=[0.7, 0.35],
            val_loss=[0.6, 0.3],
            val_error=[0.2, 0.1],
        )
        figures.confusion(tmp_path / name / "cm.png", cm)
        figures.kernels(tmp_path / name / "k2.png", k, title="C2")
    for png in ("curves.png", "cm.png", "k2.png"):
        data = (tmp_path / "a" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5_000, png
        assert data == (tmp_path / "b" / png).read_bytes(), f"{png}: same figure, other bytes"


def test_escape_step_is_the_first_batch_below_the_threshold():
    assert reproduction.escape_step(np.array([0.9, 0.5, 0.39, 0.2])) == 3
    assert reproduction.escape_step(np.array([0.9, 0.5])) is None


def tiny_prepared(n_train: int = 100) -> Prepared:
    files = synthetic.idx_files(synthetic.arrays(n_train=n_train, n_test=10))
    return Prepared(prepare_arrays(files, val_size=10, split_seed=0))


def test_plateau_outputs_replay_the_toolbox_batches():
    prepared = tiny_prepared()
    rows = reproduction.plateau_outputs(prepared, batch_size=20, lr=0.5, steps=4, every=2)
    assert [r[0] for r in rows] == [1, 2, 4]
    # Independently: the toolbox's first batch, forward only, from its initial weights.
    data = prepared.split("train")
    params, order = toolbox.replay(0, 100, np.float64)
    idx = order(1)[:20]
    yhat, cache = cnn.forward(params, toolbox.present(data.x.array(np.float64)[idx]))
    loss, _ = cnn.backward(params, cache, data.y[idx])
    # (the step sums its parts' shares: the same loss up to the order of the additions)
    assert rows[0] == (
        1,
        pytest.approx(yhat.mean()),
        pytest.approx(yhat.max(1).mean()),
        pytest.approx(loss, rel=1e-14),
    )


def _log_history(client, run_id, key, values):
    client.log_batch(run_id, metrics=[Metric(key, v, 0, i + 1) for i, v in enumerate(values)])


def test_reproduction_report_from_logged_sweeps(experiment, tmp_path):
    client, exp_id, _ = experiment
    for sweep, jobs in {
        "toolbox_replay": [("toolbox", 0), ("toolbox", 1), ("default", 0)],
        "toolbox_100": [("toolbox", 0)],
    }.items():
        parent = client.create_run(exp_id, tags={"sweep": sweep, "sweep_role": "parent"})
        for mode, seed in jobs:
            child = client.create_run(
                exp_id, tags={"mlflow.parentRunId": parent.info.run_id, "sweep": sweep}
            )
            rid = child.info.run_id
            for key, value in {
                "train.rng": mode,
                "seed": seed,
                "train.batch_size": 25,
                "train.lr": 0.5,
            }.items():
                client.log_param(rid, key, value)
            epochs = 100 if sweep == "toolbox_100" else 3
            _log_history(client, rid, "test_error", list(np.linspace(0.12, 0.01, epochs) + seed))
            _log_history(client, rid, "batch_loss", [1.2, 0.6, 0.45, 0.3, 0.2])
            client.set_terminated(rid, "FINISHED")
    runs, long, schedule = reproduction.collect(client, experiment_name(client, exp_id))
    assert schedule == {"batch_size": 25, "lr": 0.5}  # as the replay runs logged it
    assert sorted(runs["toolbox"]) == [0, 1] and sorted(runs["default"]) == [0]
    assert len(long["test"]) == 100
    text = reproduction.write_report(runs, long, tmp_path, [(1, 0.5, 0.6, 1.2)])
    assert "| toolbox | 1 | 112.00 | 106.50 | 101.00 |" in text  # seed 1's errors, in percent
    assert "| 1 | 0.500 | 0.600 | 1.200 |" in text
    assert "100: 1.00%" in text
    for name in ("report.md", "test_error.png", "plateau.png", "long.png"):
        assert (tmp_path / name).stat().st_size > 0


def experiment_name(client, exp_id: str) -> str:
    return client.get_experiment(exp_id).name


def test_summary_names_results_store_and_commands():
    text = summary_text(
        {"epochs": 20, "test_error": 0.0216, "val_loss": 0.0265},
        store_uri="sqlite:////r/mlflow.db",
        experiment="zhang-cnn",
    )
    assert "  test_error  2.16%" in text and "  epochs      20" in text
    assert "sqlite:////r/mlflow.db  (experiment 'zhang-cnn')" in text and "make ui" in text
