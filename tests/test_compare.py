"""`pipeline.reports.compare` on sweeps logged by hand to a real MLflow store: the paired table,
Holm, the indistinguishable set, McNemar from the runs' prediction artifacts, seeds needed, the
two-way split of a crossed sweep, what is logged to the parent run, and the messages given
instead of numbers when seeds are missing."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from pipeline.files import write_csv
from pipeline.reports import compare, stats

N_TEST = 200
LABELS = np.arange(N_TEST) % 10


def predictions_with_errors(wrong: list[int]) -> np.ndarray:
    """Predictions that get exactly the images `wrong` wrong."""
    pred = LABELS.copy()
    pred[wrong] = (LABELS[wrong] + 1) % 10
    return pred


def log_sweep(client, exp_id, tmp_path, name, runs, status="FINISHED"):
    """A parent run and one child per entry: (params, val_error, test_error, wrong images)."""
    parent = client.create_run(
        exp_id, tags={"sweep": name, "sweep_role": "parent", "command": f"sweep {name}"}
    )
    for i, (params, val, test, wrong) in enumerate(runs):
        child = client.create_run(
            exp_id,
            tags={"mlflow.parentRunId": parent.info.run_id, "sweep": name, "sweep_role": "child"},
        )
        rid = child.info.run_id
        for key, value in {"data.val_size": 100, **params}.items():
            client.log_param(rid, key, value)
        client.log_metric(rid, "val_error", val, step=1)
        client.log_metric(rid, "test_error", test, step=1)
        if wrong is not None:
            path = tmp_path / "pred" / name / str(i) / "test.csv"
            path.parent.mkdir(parents=True)
            write_csv(
                path,
                ["actual", "predicted"],
                list(zip(LABELS, predictions_with_errors(wrong), strict=True)),
            )
            client.log_artifact(rid, str(path), "predictions")
        client.set_terminated(rid, status if i == len(runs) - 1 else "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return parent


def test_paired_comparison_against_the_best(experiment, tmp_path):
    client, exp_id, _ = experiment
    # lr 1 is best on validation. lr 3 is 2 points worse on test at every seed (±0.5): clearly
    # distinguishable; lr 0.3 is within noise of lr 1.
    shift = {1.0: 0.0, 3.0: 0.02, 0.3: 0.0}
    noise = {0: 0.005, 1: -0.005, 2: 0.0, 3: 0.0025}
    runs, expected = [], {lr: {} for lr in shift}
    for lr in shift:
        for seed in range(4):
            test = 0.10 + shift[lr] + (noise[seed] * (1 if lr != 0.3 else -1) if lr != 1 else 0)
            val = 0.08 if lr == 1.0 else 0.12
            wrong = list(range(round(test * N_TEST)))  # the first k images
            runs.append(({"train.lr": lr, "seed": seed}, val, test, wrong))
            expected[lr][seed] = test
    parent = log_sweep(client, exp_id, tmp_path, "paired", runs)
    text = compare.compare(client, experiment_name(client, exp_id), "paired", tmp_path / "out")

    assert "Best setting, chosen on mean validation error: **train.lr=1**" in text
    tests = {}
    for lr in (0.3, 3.0):
        p = stats.paired([expected[lr][s] for s in range(4)], [expected[1.0][s] for s in range(4)])
        tests[lr] = p
        row = next(line for line in text.splitlines() if line.startswith(f"| {lr:g} | 4 | "))
        assert f"{100 * p.mean:+.2f} [{100 * p.low:+.2f}, {100 * p.high:+.2f}]" in row
    holm = stats.holm([tests[0.3].p_t, tests[3.0].p_t])
    data = json.loads((tmp_path / "out/comparison.json").read_text())
    by_lr = {v["setting"]["train.lr"]: v for v in data["versus_best"]}
    assert by_lr[0.3]["p_t_holm"] == pytest.approx(holm[0])
    assert by_lr[3.0]["p_t_holm"] == pytest.approx(holm[1]) and holm[1] < 0.05 < holm[0]
    assert "Not distinguishable from the best at 5% (Holm-adjusted paired t-test): " in text
    assert "**train.lr=1, train.lr=0.3**" in text
    assert "With 4 pairs the exact Wilcoxon test cannot go below p = 0.1250" in text
    # McNemar: lr 3 at seed 0 gets the first 25 images wrong, lr 1 the first 20: 5 : 0.
    assert by_lr[3.0]["mcnemar"][0] == {
        "replicate": [0, 0],
        "only_best": 5,
        "only_this": 0,
        "p": pytest.approx(stats.mcnemar_exact(5, 0)),
    }
    row = next(line for line in text.splitlines() if line.startswith("| 3 | 5:0 (0.062) |"))
    assert row.count("(") == 4
    # Seeds needed: from the smallest difference shown (lr 0.3) and its spread.
    t = tests[0.3]
    n = stats.seeds_for_power(t.mean, t.sd)
    assert f"Seeds needed: {n} seeds to resolve the smallest difference shown (train.lr=0.3" in text
    # Every interval in the settings table lies within [0, 100].
    for low, high in re.findall(r"\[(-?[\d.]+), (-?[\d.]+)\] \(sd", text):
        assert 0 <= float(low) <= float(high) <= 100
    # Logged to the parent run: files, headline metrics and tags.
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert logged == {
        f"comparison/{f}"
        for f in ("report.md", "errors.png", "curves.png", "paired.png", "comparison.json")
    }
    run = client.get_run(parent.info.run_id)
    assert run.data.metrics["best_test_error"] == pytest.approx(0.10)
    assert run.data.metrics["indistinguishable_settings"] == 2
    assert run.data.metrics["seeds_needed"] == n
    assert run.data.tags["best_setting"] == "train.lr=1"


def test_one_seed_gives_messages_not_numbers(experiment, tmp_path):
    client, exp_id, _ = experiment
    runs = [({"train.lr": lr, "seed": 0}, 0.1 * lr, 0.1 * lr, [0]) for lr in (0.5, 1.0)]
    log_sweep(client, exp_id, tmp_path, "one-seed", runs)
    text = compare.compare(client, experiment_name(client, exp_id), "one-seed", tmp_path / "o")
    assert "| 0.5 **(best)** | 5.00 (n=1: no interval) | 5.00 (n=1: no interval) |" in text
    assert "| 1 | 1 | no test: 1 pair(s): a paired test needs 2 or more seeds run by both |" in text
    assert "no setting shares 2 or more seeds with the best: no spread to plan from" in text
    assert not (tmp_path / "o/paired.png").exists()


def test_a_missing_pair_is_named_and_left_out(experiment, tmp_path):
    client, exp_id, _ = experiment
    runs = [
        ({"train.lr": lr, "seed": s}, 0.1 if lr == 1.0 else 0.2, 0.1 + 0.01 * s + lr / 100, None)
        for lr in (1.0, 2.0)
        for s in range(3)
    ]
    log_sweep(client, exp_id, tmp_path, "missing", runs, status="FAILED")  # lr 2, seed 2 failed
    text = compare.compare(client, experiment_name(client, exp_id), "missing", tmp_path / "m")
    assert "- train.lr=2: seed 2 finished for the best only: left out of this pair's" in text
    assert text.count("| 2 | 2 | +1.00 [+1.00, +1.00] | 0.00 | <0.001 |") == 1
    assert "## Runs that did not finish" in text
    assert "| 2 | no predictions logged | no predictions logged |" in text  # old runs


def test_crossed_seeds_split_the_variance(experiment, tmp_path):
    client, exp_id, _ = experiment
    init_effect, order_effect = [0.0, 0.02, 0.04], [0.0, 0.01]
    runs = [
        (
            {"train.lr": 1.0, "seed": 0, "train.init_seed": i, "train.order_seed": o},
            0.1 + init_effect[i] + order_effect[o],
            0.1 + init_effect[i] + order_effect[o] + (0.001 if i == o else 0),
            None,
        )
        for i in range(3)
        for o in range(2)
    ]
    parent = log_sweep(client, exp_id, tmp_path, "crossed", runs)
    text = compare.compare(client, experiment_name(client, exp_id), "crossed", tmp_path / "c")
    table = np.array([[100 * r[2] for r in runs[k : k + 2]] for k in (0, 2, 4)])  # (init, order)
    tw = stats.two_way(table / 100)
    shares = " | ".join(f"{100 * s:.0f}%" for s in tw.shares)
    assert f"| 1 | test | {shares} |" in text
    assert "init seeds [0, 1, 2] x order seeds [0, 1] (6 combinations)" in text
    assert "One setting: nothing to compare it with." in text
    assert (tmp_path / "c/seeds.png").stat().st_size > 5_000
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert metrics["variance_share_init"] == pytest.approx(tw.shares[0])
    # One combination missing: a message instead of a split.
    log_sweep(client, exp_id, tmp_path, "crossed-gap", runs[:-1])
    text = compare.compare(client, experiment_name(client, exp_id), "crossed-gap", tmp_path / "g")
    assert "no decomposition: 3 init x 2 order seeds with 1 combination(s) missing" in text


def experiment_name(client, exp_id: str) -> str:
    return client.get_experiment(exp_id).name
