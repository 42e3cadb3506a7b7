"""The text and figures of a sweep's comparison (`pipeline.reports.compare`), from its
`sweep_analysis.Analysis`: pure rendering, no MLflow, no statistics of its own."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipeline.reports.figures import save
from pipeline.reports.sweep_analysis import (
    METRICS,
    PAIRED_ON,
    Analysis,
    RateSummary,
    Replicate,
    label,
    metric_values,
    replicate_label,
)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _rate(s: RateSummary) -> str:
    if s.low is None:
        return f"{_pct(s.mean)} (n=1: no interval)"
    return f"{_pct(s.mean)} [{_pct(s.low)}, {_pct(s.high)}] (sd {_pct(s.sd)}, n={s.n})"


def _cells(g: tuple) -> list[str]:
    return [f"{v:g}" if isinstance(v, float) else str(v) for v in g]


def _replicates_line(reps: list[Replicate]) -> str:
    """`seeds [0, 1, 2]`, or for separate init and order seeds `init seeds [...] x order seeds
    [...] (n combinations)`."""
    if all(i == o for i, o in reps):
        return f"seeds {[i for i, _ in reps]}"
    inits, orders = sorted({i for i, _ in reps}), sorted({o for _, o in reps})
    return f"init seeds {inits} x order seeds {orders} ({len(reps)} combinations)"


def seeds_line(a: Analysis) -> str:
    """Seeds a paired t-test needs for the smallest difference shown, or why there is no number."""
    if not a.versus:
        return "one setting: no difference between settings to resolve"
    v = a.smallest
    if v is None:
        return "no setting shares 2 or more seeds with the best: no spread to plan from"
    where = f"{label(a.keys, v.setting)} against the best, {100 * v.test.mean:+.2f} points"
    if v.seeds is None:
        return f"the smallest difference shown ({where}): {v.seeds_why_not}"
    return (
        f"{v.seeds} seeds to resolve the smallest difference shown ({where}, sd of the paired "
        f"differences {100 * v.test.sd:.2f}) with 80% power in a two-sided paired t-test at 5% "
        f"(this sweep: {v.test.n})"
    )


def report(sweep, parent, children, done, failed, a: Analysis, figures: list[str]) -> str:
    """The markdown report: the sweep's runs (MLflow `Run`s) and the analysis; `figures`: the
    files written beside it."""
    keys = a.keys
    reps = sorted({rep for g in a.groups.values() for rep in g})
    lines = [
        f"# Sweep `{sweep}`",
        "",
        f"MLflow parent run `{parent.info.run_id}` (experiment id {parent.info.experiment_id}); "
        f"{len(done)} of {len(children)} runs finished; {_replicates_line(reps)}.",
        "",
        f"Command: `{parent.data.tags.get('command', '?')}`",
        "",
        "## Settings",
        "",
        "Error in percent over seeds: mean [95% interval] (standard deviation, number of seeds). "
        "The interval is Student's t over seeds on the logit scale, back-transformed: it stays "
        "within [0, 100] and is for the typical error (the back-transformed mean logit), which "
        "sits below the mean when one seed is far off.",
        "",
        f"| {' | '.join(keys)} | validation error | test error |",
        f"|{'---|' * (len(keys) + 2)}",
    ]
    for g, s in a.summaries.items():
        mark = " **(best)**" if g == a.best else ""
        row = [_rate(s[m]) if m in s else "—" for m in METRICS]
        lines.append(f"| {' | '.join(_cells(g))}{mark} | {' | '.join(row)} |")
    best = a.summaries[a.best]
    lines += [
        "",
        f"Best setting, chosen on mean validation error: **{label(keys, a.best)}**: validation "
        f"{_rate(best['val_error'])}, test "
        f"{_rate(best['test_error']) if 'test_error' in best else '—'}.",
        "",
        *_paired_section(a),
        *_mcnemar_section(a),
        *_variance_section(a),
        "## Figures",
        "",
        "![error against the swept setting, 95% logit-t intervals](errors.png)",
        "",
        "![validation error per epoch, mean over seeds](curves.png)",
        "",
    ]
    if "seeds.png" in figures:
        lines += ["![test error per init seed and order seed](seeds.png)", ""]
    if failed:
        lines += ["## Runs that did not finish", ""]
        lines += [
            f"- `{r.data.tags.get('overrides', '?')}`: {r.info.status} (run `{r.info.run_id}`)"
            for r in failed
        ]
        lines.append("")
    return "\n".join(lines)


def _paired_section(a: Analysis) -> list[str]:
    keys = a.keys
    lines = ["## Against the best, paired by seed", ""]
    if not a.versus:
        return [*lines, "One setting: nothing to compare it with.", ""]
    lines += [
        "Test error of each setting minus the best's, in percentage points, over the seeds both "
        "ran (the same initial weights and sample order): mean [95% t interval], standard "
        "deviation of the differences; two-sided p-values of the paired t-test and of the exact "
        "Wilcoxon signed-rank test, each also Holm-adjusted across the settings compared; the "
        "seeds a paired t-test needs for 80% power at 5% at this difference and spread. On test "
        "error because the best was chosen on validation error, which would favour it.",
        "",
        f"| {' | '.join(keys)} | seeds | difference | sd | t-test p | Holm | Wilcoxon p | Holm | "
        "seeds for 80% power |",
        f"|{'---|' * (len(keys) + 8)}",
    ]
    for v in a.versus:
        t = v.test
        if t is None:
            cells = [str(len(v.shared)), f"no test: {v.why_not}", *["—"] * 6]
        else:
            cells = [
                str(t.n),
                f"{100 * t.mean:+.2f} [{100 * t.low:+.2f}, {100 * t.high:+.2f}]",
                f"{100 * t.sd:.2f}",
                _p(t.p_t),
                _p(v.p_t_holm),
                _p(t.p_wilcoxon),
                _p(v.p_w_holm),
                str(v.seeds) if v.seeds is not None else f"— ({v.seeds_why_not})",
            ]
        lines.append(f"| {' | '.join(_cells(v.setting))} | {' | '.join(cells)} |")
    lines.append("")
    for v in a.versus:
        for reps, whose in ((v.only_best, "the best"), (v.only_this, label(keys, v.setting))):
            if reps:
                ran = ", ".join(replicate_label(r) for r in reps)
                lines.append(
                    f"- {label(keys, v.setting)}: {ran} finished for {whose} only: left out of "
                    "this pair's comparison."
                )
    if lines[-1] != "":
        lines.append("")
    same = ", ".join(label(keys, g) for g in a.indistinguishable)
    untested = [v for v in a.versus if v.test is None]
    lines += [
        f"Not distinguishable from the best at 5% (Holm-adjusted paired t-test): **{same}**"
        + (
            f"; not tested: {', '.join(label(keys, v.setting) for v in untested)}"
            if untested
            else ""
        )
        + ".",
        "",
    ]
    small = [v.test.n for v in a.versus if v.test is not None and v.test.n <= 5]
    if small:
        n = min(small)
        lines += [
            f"With {n} pairs the exact Wilcoxon test cannot go below p = {2 / 2**n:.4f} "
            "(every pair the same way): it can only support the t-test here.",
            "",
        ]
    lines += [f"Seeds needed: {seeds_line(a)}.", ""]
    if any(v.test for v in a.versus):
        lines += ["![paired differences against the best](paired.png)", ""]
    return lines


def _mcnemar_section(a: Analysis) -> list[str]:
    if not any(v.shared for v in a.versus):
        return []
    reps = sorted({r for v in a.versus for r in v.shared})
    lines = [
        "### Per seed: McNemar's test on the test images",
        "",
        "For each seed, the two runs' predictions on the same "
        + (f"{a.n_test:,} " if a.n_test else "")
        + "test images: b:c = images only the best gets right : images only the other setting "
        "gets right, and the exact two-sided McNemar p (binomial), not adjusted. It asks whether "
        "these two trained networks differ on this test set; whether the settings differ across "
        "seeds is the paired test above.",
        "",
        f"| {' | '.join(a.keys)} | {' | '.join(replicate_label(r) for r in reps)} |",
        f"|{'---|' * (len(a.keys) + len(reps))}",
    ]
    for v in a.versus:
        cells = []
        for rep in reps:
            m = v.mcnemar.get(rep, "no pair")
            cells.append(f"{m[0]}:{m[1]} ({_p(m[2])})" if isinstance(m, tuple) else m)
        lines.append(f"| {' | '.join(_cells(v.setting))} | {' | '.join(cells)} |")
    return [*lines, ""]


def _variance_section(a: Analysis) -> list[str]:
    if not a.variance and not a.variance_notes:
        return []
    lines = [
        "## Where the spread comes from",
        "",
        "Replicates that cross initialisation seeds with order seeds (one run per pair): a "
        "two-way analysis of variance without replication, with variance components by the "
        "method of moments (negative estimates set to 0), as shares of the variance of one "
        "run. Training is deterministic, so what the two seeds' main effects leave is their "
        "interaction (which initialisation meets which order). F-tests of each main effect "
        "against the interaction.",
        "",
    ]
    for g, note in a.variance_notes.items():
        lines += [f"- {label(a.keys, g)}: no decomposition: {note}.", ""]
    if a.variance:
        lines += [
            f"| {' | '.join(a.keys)} | error | init | order | interaction | sd of one run "
            "| p (init) | p (order) |",
            f"|{'---|' * (len(a.keys) + 7)}",
        ]
        for g, split in a.variance.items():
            for m, tw in split.items():
                shares = [f"{100 * s:.0f}%" if math.isfinite(s) else "—" for s in tw.shares]
                sd = math.sqrt(tw.var_rows + tw.var_cols + tw.var_resid)
                lines.append(
                    f"| {' | '.join(_cells(g))} | {m.replace('_error', '')} | "
                    f"{' | '.join(shares)} | {100 * sd:.2f} | {_p(tw.p_rows)} | {_p(tw.p_cols)} |"
                )
        lines.append("")
    return lines


# --------------------------------------------------------------------------- the figures


def _positions(a: Analysis, settings: list[tuple]) -> tuple[list, bool]:
    numeric = len(a.keys) == 1 and all(isinstance(g[0], float) for g in a.groups)
    return ([g[0] for g in settings] if numeric else list(range(len(settings)))), numeric


def errors_figure(path: Path, a: Analysis) -> None:
    """Mean error per setting with its 95% logit-t interval (within [0, 100])."""
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = list(a.summaries)
    pos, numeric = _positions(a, xs)
    shift = 1.04 if numeric and min(pos) > 0 else 0.08  # side by side: val left, test right
    for i, (metric, marker) in enumerate(zip(METRICS, ("o", "s"), strict=True)):
        have = [(p, a.summaries[g].get(metric)) for p, g in zip(pos, xs, strict=True)]
        have = [(p, s) for p, s in have if s is not None]
        at = [p * shift**i if shift > 1 else p + shift * i for p, _ in have]
        (line,) = ax.plot(at, [100 * s.mean for _, s in have], marker=marker, ls="-", lw=1)
        for x, (_, s) in zip(at, have, strict=True):
            if s.low is not None:
                ax.vlines(x, 100 * s.low, 100 * s.high, color=line.get_color(), lw=1.5)
        line.set_label(metric.replace("_", " "))
    if numeric and min(pos) > 0:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(pos, [label(a.keys, g) for g in xs], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, min(100, ax.get_ylim()[1]))
    ax.set(xlabel=a.keys[0] if numeric else "setting", ylabel="error (%): mean, 95% interval")
    ax.legend()
    save(fig, path)


def paired_figure(path: Path, a: Analysis) -> None:
    """One row per setting: test error minus the best's, mean and 95% t interval (points), and
    each seed's difference."""
    rows = [v for v in a.versus if v.test is not None]
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.45 * len(rows)))
    for y, v in enumerate(rows):
        t = v.test
        ax.plot([100 * t.low, 100 * t.high], [y, y], color="C0", lw=2)
        ax.plot(100 * t.mean, y, "o", color="C0", label="mean, 95% t interval" if y == 0 else None)
        ax.plot(
            100 * np.array(v.diffs),
            np.full(len(v.diffs), y + 0.18),
            "|",
            color="grey",
            ms=7,
            label="one seed" if y == 0 else None,
        )
        ax.annotate(
            f"Holm p {_p(v.p_t_holm)}",
            (100 * t.high, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [label(a.keys, v.setting) for v in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.margins(x=0.2)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.set(xlabel=f"test error minus {label(a.keys, a.best)}'s, paired by seed (points)")
    save(fig, path)


def seeds_figure(path: Path, a: Analysis) -> None:
    """Test error per (init seed, order seed), one panel per crossed setting."""
    settings = [g for g in a.variance if PAIRED_ON in a.variance[g]]
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.8), squeeze=False)
    for ax, g in zip(axes[0], settings, strict=True):
        values = metric_values(a.groups[g], PAIRED_ON)
        inits, orders = sorted({r[0] for r in values}), sorted({r[1] for r in values})
        table = np.array([[100 * values[(i, o)] for o in orders] for i in inits])  # (init, order)
        im = ax.imshow(table, cmap="viridis")
        for (i, j), v in np.ndenumerate(table):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white")
        ax.set_xticks(range(len(orders)), orders)
        ax.set_yticks(range(len(inits)), inits)
        ax.set(xlabel="order seed", ylabel="init seed", title=label(a.keys, g) or "all runs")
        fig.colorbar(im, ax=ax, fraction=0.046, label="test error (%)")
    save(fig, path)


def curves_figure(path: Path, keys: list[str], curves: dict[tuple, list[list[float]]]) -> None:
    """Validation error per epoch, mean over a setting's runs (up to its shortest run)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for g, runs in curves.items():
        n = min(len(c) for c in runs)
        if n == 0:
            continue
        mean = 100 * np.mean([c[:n] for c in runs], axis=0)
        ax.plot(range(1, n + 1), mean, marker="o", label=label(keys, g))
    ax.set(xlabel="epoch", ylabel="validation error (%), mean over seeds")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    save(fig, path)
