"""The reproduction report: the toolbox's run replayed, next to this pipeline's default mode
(`python -m pipeline.reproduction`, `make reproduction`).

Reads the runs of the sweeps `toolbox_replay` (train.rng in {toolbox, default} x seeds 0-4,
3 epochs) and `toolbox_100` (the replay of seed 0 over 100 epochs) from MLflow, and writes
report.md with figures: test error after every epoch, the early loss plateau and its escape
(the toolbox's smoothed loss rL(t+1) = 0.99 rL(t) + 0.01 L_t), and the long run, beside the
reference claims (about 11% test error after one epoch, about 1.2% after 100).
Run the sweeps first (`make reproduction` does all three steps).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.data.prepared import Prepared
from pipeline.files import atomic_write_bytes
from pipeline.model import sgd, toolbox
from pipeline.reports import stats
from pipeline.reports.compare import CompareError, find_sweep
from pipeline.reports.figures import save, smooth

PLATEAU_EXIT = 0.40  # rL below this: the outputs are no longer all near 0 (loss ~0.45)
MODES = ("toolbox", "default")


def history(client: MlflowClient, run: Run, key: str) -> np.ndarray:
    points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
    return np.array([m.value for m in points])


def escape_step(r_l: np.ndarray) -> int | None:
    """First step (from 1) after the initial drop at which rL falls below PLATEAU_EXIT."""
    below = np.flatnonzero(r_l < PLATEAU_EXIT)
    return int(below[0]) + 1 if below.size else None


def plateau_outputs(
    prepared: Prepared,
    *,
    seed: int = 0,
    batch_size: int = 50,
    lr: float = 1.0,
    steps: int = 600,
    every: int = 50,
) -> list[tuple[int, float, float, float]]:
    """Replay the toolbox's first `steps` batches (float64); every `every` batches, the batch's
    mean output, mean largest output and loss before its update: what the plateau is."""
    data = prepared.split("train")
    images = toolbox.present(data.x)  # the toolbox's (transposed) images, converted per batch
    params, order = toolbox.replay(seed, len(data), np.float64)
    perm = order(1)
    rows = []
    for t in range(1, steps + 1):
        idx = perm[batch_size * (t - 1) : batch_size * t]
        params, loss, yhat = sgd.step(params, images.batch(idx, np.float64), data.y[idx], lr)
        if t == 1 or t % every == 0:  # yhat (batch, 10)
            rows.append((t, float(yhat.mean()), float(yhat.max(axis=1).mean()), loss))
    return rows


def collect(client: MlflowClient, experiment: str) -> tuple[dict, dict | None, dict]:
    """The reproduction sweeps' results: {mode: {seed: {"test": per-epoch test error, "rl":
    smoothed batch loss, "run": id}}}, the long run (or None), and the replay's schedule
    {"batch_size", "lr"} as logged by its runs."""
    _, children = find_sweep(client, experiment, "toolbox_replay")
    runs: dict[str, dict[int, dict]] = {m: {} for m in MODES}
    schedule = {"batch_size": 50, "lr": 1.0}  # the toolbox's, if no replay run finished
    for r in children:
        if r.info.status != "FINISHED":
            continue
        mode, seed = r.data.params["train.rng"], int(r.data.params["seed"])
        if mode == "toolbox":
            p = r.data.params
            schedule = {"batch_size": int(p["train.batch_size"]), "lr": float(p["train.lr"])}
        loss = history(client, r, "batch_loss")
        runs[mode][seed] = {
            "test": history(client, r, "test_error"),
            "rl": smooth(loss),
            "run": r.info.run_id,
        }
    long = None
    try:
        _, (run, *_) = find_sweep(client, experiment, "toolbox_100")
        if run.info.status == "FINISHED":
            long = {
                "test": history(client, run, "test_error"),
                "run": run.info.run_id,
                "rl": smooth(history(client, run, "batch_loss")),
            }
    except CompareError:
        pass
    return runs, long, schedule


def write_report(runs: dict, long: dict | None, out: Path, outputs: list | None = None) -> str:
    out.mkdir(parents=True, exist_ok=True)
    _figures(runs, long, out)
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [
        "# Reproduction: DeepLearnToolbox's CNN run, replayed",
        "",
        "`toolbox` = `train.rng=toolbox`: the toolbox's own initial weights and `randperm` "
        "sample order under Octave after `rand('state', seed)`, all 60,000 training images in "
        "file order, each presented transposed as the toolbox holds it, float64, learning rate 1, "
        "batch 50. `default` = this pipeline's default randomness (`SeedSequence(seed)`), "
        "50,000 training images (10,000 held out for validation), otherwise the same.",
        "",
        "## Test error (%) after each epoch",
        "",
        "| mode | seed | epoch 1 | epoch 2 | epoch 3 | rL first < 0.40 at batch |",
        "|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        for seed, r in sorted(runs[mode].items()):
            cells = " | ".join(pct(v) for v in r["test"][:3])
            lines.append(f"| {mode} | {seed} | {cells} | {escape_step(r['rl'])} |")
    lines += ["", "Over seeds (mean ± 95% CI, Student's t):", ""]
    for mode in MODES:
        if not runs[mode]:
            continue
        for epoch in (1, 3):
            vals = [r["test"][epoch - 1] for r in runs[mode].values() if len(r["test"]) >= epoch]
            n, mean, _ = stats.mean_sd(vals)
            low, high = stats.t_interval(vals) if n > 1 else (math.nan, math.nan)
            lines.append(
                f"- {mode}, epoch {epoch}: {pct(mean)} ± {pct((high - low) / 2)}% "
                f"(range {pct(min(vals))}-{pct(max(vals))}%, n={n})"
            )
    lines += [
        "",
        "![test error per epoch](test_error.png)",
        "",
        "## The early plateau",
        "",
        "![smoothed loss over the first epoch](plateau.png)",
        "",
    ]
    if outputs:
        lines += [
            "Toolbox replay, seed 0, first batches (computed by the report, not logged): "
            "the network's outputs on each batch before its update.",
            "",
            "| batch | mean output | mean largest output | batch loss |",
            "|---|---|---|---|",
        ]
        lines += [f"| {s} | {m:.3f} | {mx:.3f} | {loss:.3f} |" for s, m, mx, loss in outputs]
        lines.append("")
    if long is not None:
        t = long["test"]
        best = int(np.argmin(t))
        lines += [
            "## 100 epochs (toolbox replay, seed 0)",
            "",
            f"Test error after epoch 1: {pct(t[0])}%, 10: {pct(t[9])}%, 50: {pct(t[49])}%, "
            f"100: {pct(t[-1])}%; lowest {pct(t[best])}% after epoch {best + 1}.",
            "",
            "![test error over 100 epochs](long.png)",
            "",
        ]
    text = "\n".join(lines)
    atomic_write_bytes(out / "report.md", (text + "\n").encode())
    return text


def _figures(runs: dict, long: dict | None, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, style in zip(MODES, ("-o", "--s"), strict=True):
        for seed, r in sorted(runs[mode].items()):
            ax.plot(
                range(1, len(r["test"]) + 1),
                100 * r["test"],
                style,
                color=f"C{seed}",
                label=f"{mode} seed {seed}",
                alpha=0.8,
            )
    ax.axhline(11, color="grey", lw=0.8, ls=":", label="reference, 1 epoch (~11%)")
    ax.set(xlabel="epoch", ylabel="test error (%)", xticks=[1, 2, 3])
    ax.legend(fontsize=6, ncol=2)
    save(fig, out / "test_error.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, style in zip(MODES, ("-", "--"), strict=True):
        for seed, r in sorted(runs[mode].items()):
            n = 1200
            ax.plot(
                np.arange(1, min(n, len(r["rl"])) + 1),
                r["rl"][:n],
                style,
                lw=1,
                color=f"C{seed}",
                label=f"{mode} seed {seed}",
            )
    ax.axhline(PLATEAU_EXIT, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="batch (first epoch)", ylabel="smoothed loss rL", ylim=(0, 1.3))
    ax.legend(fontsize=6, ncol=2)
    save(fig, out / "plateau.png")

    if long is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        t = 100 * long["test"]
        ax.plot(range(1, len(t) + 1), t, "-", label="toolbox replay, seed 0")
        ax.axhline(1.2, color="grey", lw=0.8, ls=":", label="reference, 100 epochs (~1.2%)")
        ax.set(xlabel="epoch", ylabel="test error (%)", yscale="log")
        ax.legend()
        save(fig, out / "long.png")
