"""Which forgetting signal predicts forgetting: every checkpoint of a sweep, each signal against the OOD drops.

    points = signal_points(sweep)          # one per evaluated checkpoint (step > 0) that logged signals
    rows = correlations(points)            # Spearman's rho per signal and target, with bootstrap intervals
    files, section = signals_report(sweep, out_dir, figures)   # what analysis.report adds

A checkpoint's *worst OOD drop* is how far the lowest of the three OOD quadrants is below its
zero-shot accuracy (pp) and its *ood_id drop* the same for OOD^T-ID^I alone. Each signal
(``signal/<value>``, logged by the trial at its evaluations: ``jobs.evaluate.signals``) is ranked
against both over all checkpoints of all trials: Spearman's rank correlation, with a 95%
percentile bootstrap interval over checkpoints (``BOOTSTRAP_SAMPLES`` resamples, fixed seed).
Drift grows with forgetting for ``output_kl``, ``counting_bias`` and ``classname_rate`` (rho > 0
expected) and shrinks for ``top1_agreement`` and ``vision_probe_acc`` (rho < 0 expected); the
signal that tracks forgetting best is the one with the largest |rho| against the worst OOD drop.

A trajectory *recovers* (LMM-CL: apparent forgetting that comes back later in fine-tuning) when
its worst OOD drop reached at least ``RECOVERY_PP`` at an evaluation before the last and the last
evaluation regained at least half of that fall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from markupsafe import Markup
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from scipy.stats import spearmanr

from analysis.markup import render
from analysis.mlflow_reader import OOD_QUADRANTS, Sweep, Trial
from analysis.plots import FigureFile, paper_style, save_figure
from contract.layout import SIGNAL_VALUES, TIME_EVAL_S, signal_metric, signal_time_metric

VALUES = tuple(value for values in SIGNAL_VALUES.values() for value in values)
"""Every signal value, in the layout's order."""
TARGETS = {"worst_ood_drop": "worst OOD drop (pp)", "ood_id_drop": "ood_id drop (pp)"}
"""What each signal is ranked against, with its axis label."""
BOOTSTRAP_SAMPLES = 1000
"""Resamples of the checkpoints for each interval."""
RECOVERY_PP = 2.0
"""Smallest fall of the worst OOD quadrant (pp) that can count as a recovered dip."""


@dataclass(frozen=True)
class SignalPoint:
    """One evaluated checkpoint: its signals and how much it forgot."""

    trial: str
    """Trial name."""
    step: int
    """Training step of the evaluation."""
    signals: dict[str, float]
    """Signal value -> its value at this step (the signals the trial logged)."""
    worst_ood_drop: float
    """How far the lowest OOD quadrant is below zero-shot (pp)."""
    ood_id_drop: float
    """How far ood_id is below zero-shot (pp)."""
    recovered: bool
    """Whether the checkpoint's trajectory recovers (see the module docstring)."""


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho of one signal against one target over the checkpoints, with its bootstrap interval."""

    signal: str
    target: str
    rho: float
    """NaN when the signal or the target does not vary."""
    low: float
    high: float
    n: int
    """Checkpoints that logged the signal."""


def drops(trial: Trial, step: int) -> tuple[float, float]:
    """(worst OOD drop, ood_id drop) of ``trial`` at ``step``, in pp below zero-shot."""
    fallen = {q: trial.zero_shot(q) - trial.history[q][step] for q in OOD_QUADRANTS}
    return max(fallen.values()), fallen["ood_id"]


def recovers(trial: Trial) -> bool:
    """Whether the trial's worst OOD drop fell at least ``RECOVERY_PP`` before its last evaluation and regained half."""
    steps = [s for s in trial.steps("id_id") if s > 0 and all(s in trial.history[q] for q in OOD_QUADRANTS)]
    if len(steps) < 2:
        return False
    series = [drops(trial, s)[0] for s in steps]
    dip = max(series[:-1])
    return dip >= RECOVERY_PP and series[-1] <= dip / 2


def signal_points(sweep: Sweep) -> list[SignalPoint]:
    """Every evaluation after step 0 of every trial that logged a signal there."""
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    points = []
    for trial in sweep.trials:
        logged = client.get_run(trial.run_id).data.metrics
        histories = {
            value: {m.step: m.value for m in client.get_metric_history(trial.run_id, signal_metric(value))}
            for value in VALUES
            if signal_metric(value) in logged
        }
        recovered = recovers(trial)
        for step in trial.steps("id_id"):
            if step == 0 or not all(step in trial.history[q] for q in OOD_QUADRANTS):
                continue
            found = {value: history[step] for value, history in histories.items() if step in history}
            if found:
                worst, ood_id = drops(trial, step)
                points.append(SignalPoint(trial.name, step, found, worst, ood_id, recovered))
    return points


def spearman_interval(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho of (x, y) and the 2.5 / 97.5 percentiles of its bootstrap over the pairs (NaN if undefined)."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(BOOTSTRAP_SAMPLES):
        pick = rng.integers(0, len(x), len(x))
        if np.ptp(x[pick]) > 0 and np.ptp(y[pick]) > 0:
            samples.append(spearmanr(x[pick], y[pick]).statistic)
    low, high = np.percentile(samples, [2.5, 97.5]) if samples else (math.nan, math.nan)
    return rho, float(low), float(high)


def correlations(points: list[SignalPoint]) -> list[Correlation]:
    """Rho of every logged signal against each target, in the layout's order of signals."""
    rows = []
    for value in VALUES:
        having = [p for p in points if value in p.signals]
        if not having:
            continue
        x = np.array([p.signals[value] for p in having])
        for target in TARGETS:
            y = np.array([getattr(p, target) for p in having])
            rows.append(Correlation(value, target, *spearman_interval(x, y), n=len(having)))
    return rows


def best_signal(rows: list[Correlation]) -> Correlation | None:
    """The signal with the largest |rho| against the worst OOD drop (None when no rho is defined)."""
    defined = [row for row in rows if row.target == "worst_ood_drop" and not math.isnan(row.rho)]
    return max(defined, key=lambda row: abs(row.rho)) if defined else None


def signal_costs(sweep: Sweep) -> list[tuple[str, float, float]]:
    """(signal, mean seconds per measurement, share of the evaluations' time) over the sweep's trials."""
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    seconds: dict[str, list[float]] = {}
    evaluation = 0.0
    for trial in sweep.trials:
        logged = client.get_run(trial.run_id).data.metrics
        if TIME_EVAL_S in logged:
            evaluation += sum(m.value for m in client.get_metric_history(trial.run_id, TIME_EVAL_S))
        for signal in SIGNAL_VALUES:
            if signal_time_metric(signal) in logged:
                history = client.get_metric_history(trial.run_id, signal_time_metric(signal))
                seconds.setdefault(signal, []).extend(m.value for m in history)
    return [
        (signal, sum(values) / len(values), sum(values) / evaluation if evaluation else math.nan)
        for signal, values in seconds.items()
    ]


def signals_figure(points: list[SignalPoint], rows: list[Correlation]) -> Figure:
    """One row per signal, one column per target: every checkpoint as a point (hollow: a recovering trajectory)."""
    values = list(dict.fromkeys(row.signal for row in rows))
    by_key = {(row.signal, row.target): row for row in rows}
    figure = Figure(figsize=(7.0, 2.3 * len(values)), layout="constrained")
    axes = figure.subplots(len(values), len(TARGETS), squeeze=False)
    for r, value in enumerate(values):
        having = [p for p in points if value in p.signals]
        for c, (target, label) in enumerate(TARGETS.items()):
            ax = axes[r][c]
            for recovered in (False, True):
                chosen = [p for p in having if p.recovered == recovered]
                ax.scatter(
                    [getattr(p, target) for p in chosen],
                    [p.signals[value] for p in chosen],
                    s=18,
                    facecolors="none" if recovered else "tab:blue",
                    edgecolors="tab:red" if recovered else "tab:blue",
                    label="recovering trajectory" if recovered and chosen else None,
                )
            row = by_key[(value, target)]
            ax.set_title(f"rho {format_rho(row)}", fontsize=8)
            ax.set_xlabel(label)
            ax.set_ylabel(value)
            ax.axvline(0.0, color="0.7", linewidth=0.6)
    if any(p.recovered for p in points):
        figure.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", fontsize=8)
    return figure


def format_rho(row: Correlation) -> str:
    """``+0.82 [+0.61, +0.93]`` (``n/a`` when the signal or the target did not vary)."""
    if math.isnan(row.rho):
        return "n/a"
    return f"{row.rho:+.2f} [{row.low:+.2f}, {row.high:+.2f}]"


def verdict(rows: list[Correlation]) -> str:
    """The line naming the signal that tracks forgetting best on this sweep."""
    best = best_signal(rows)
    if best is None:
        return "No signal varied together with the OOD accuracy on this sweep."
    return (
        f"On this sweep, {best.signal} tracks forgetting best: Spearman's rho {format_rho(best)} against the "
        f"worst OOD drop over {best.n} checkpoints."
    )


def signals_markdown(rows: list[Correlation], costs: list[tuple[str, float, float]], recovered: list[str]) -> str:
    """The correlation table, the verdict, the costs and the recovering trials as Markdown."""
    lines = [
        "**Which forgetting signal predicts forgetting (Spearman's rho, 95% bootstrap interval)**",
        "",
        "| signal | vs worst OOD drop | vs ood_id drop | checkpoints |",
        "|---|---|---|---|",
    ]
    by_key = {(row.signal, row.target): row for row in rows}
    for value in dict.fromkeys(row.signal for row in rows):
        worst, ood_id = by_key[(value, "worst_ood_drop")], by_key[(value, "ood_id_drop")]
        lines.append(f"| {value} | {format_rho(worst)} | {format_rho(ood_id)} | {worst.n} |")
    lines += ["", verdict(rows), ""]
    lines += [
        f"- {signal}: {mean:.2f} s per measurement, {share:.1%} of evaluation time" for signal, mean, share in costs
    ]
    lines.append("")
    lines.append("Recovering trajectories: " + (", ".join(recovered) if recovered else "none") + ".")
    return "\n".join(lines) + "\n"


def signals_report(sweep: Sweep, out_dir: Path, figures: list[FigureFile]) -> tuple[tuple[Path, ...], Markup]:
    """signals.md and the signals figure (appended to ``figures``); nothing when no trial logged a signal."""
    points = signal_points(sweep)
    if not points:
        return (), Markup()
    rows = correlations(points)
    costs = signal_costs(sweep)
    recovered = sorted({p.trial for p in points if p.recovered})
    table = out_dir / "signals.md"
    table.write_text(signals_markdown(rows, costs, recovered), encoding="utf-8")
    with paper_style():
        png, svg = save_figure(signals_figure(points, rows), out_dir / "figures", "signals")
    figures.append(
        FigureFile(
            stem="signals",
            title="Forgetting signals vs forgetting",
            png=png,
            svg=svg,
            caption="Every evaluated checkpoint (step > 0) by its drop below zero-shot (worst OOD quadrant, left; "
            "ood_id, right) and each signal; titles give Spearman's rho with its 95% bootstrap interval; hollow red "
            "points belong to trajectories whose OOD accuracy fell and came back.",
        )
    )
    by_key = {(row.signal, row.target): row for row in rows}
    section = render(
        "signals.html.j2",
        verdict=verdict(rows),
        rows=[
            (value, format_rho(by_key[(value, "worst_ood_drop")]), format_rho(by_key[(value, "ood_id_drop")]), str(n))
            for value, n in dict.fromkeys((row.signal, row.n) for row in rows)
        ],
        costs=[(signal, f"{mean:.2f} s", f"{share:.1%}") for signal, mean, share in costs],
        recovered=recovered,
    )
    return (table,), section
