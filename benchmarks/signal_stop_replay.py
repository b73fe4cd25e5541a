"""python benchmarks/signal_stop_replay.py --experiment toy-table1 [--tracking-uri sqlite:///mlflow.db] [--signal output_kl]

What stopping every trial on a forgetting signal would have kept of a finished grid sweep's
no-forgetting frontier, and what it would have saved. Each trial is replayed as if the grid had
said ``early_stop: {signal: S, max: T}`` (``min`` for a signal that falls as a model forgets,
``contract.layout.FALLING_SIGNAL_VALUES``): it stops at its first evaluation after step 0 whose
signal passes T, and that evaluation is its last. A seeded trial computes the same numbers to the
digit when it runs again (the demo's summary does), so a trial stopped at step k would have logged
exactly what the full run logged up to k; only ``eval.signal_every`` (signals between
evaluations) is not replayed. T runs over the signal's own values in the sweep (each one a stop
rule; the largest stops nothing); a dozen of them are printed, evenly spaced, and the cheapest that
keeps the hypervolume goal.

Per threshold it prints the trials stopped, the trial-steps and the evaluation time (each trial's
``time/eval_s`` at the steps it keeps) as shares of the full sweep's, and the hypervolume of the
trials' (ID gain, worst OOD drop) points as a share of the full sweep's (``analysis.search_frontier``;
reference: no ID gain, the full sweep's largest worst OOD drop plus 1 pp, as
``benchmarks/frontier_search.py`` has it). The goal of the forgetting-signals work: >= 90% of the
hypervolume for <= 50% of the evaluation time. The threshold is chosen on the same sweep it is
scored on: read the row as what the best stop rule could do, not what a rule fixed in advance does.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mlflow.tracking import MlflowClient  # noqa: E402

from analysis.mlflow_reader import OOD_QUADRANTS, Sweep, Trial, load_sweep  # noqa: E402
from analysis.search_frontier import frontier_hypervolume, point_of  # noqa: E402
from contract.layout import FALLING_SIGNAL_VALUES, TIME_EVAL_S, signal_metric  # noqa: E402
from recipes.common.text_table import markdown_table  # noqa: E402

GOAL_HYPERVOLUME = 0.90
GOAL_EVALUATION_SHARE = 0.50
SHOWN_RULES = 12
"""Threshold rows printed (evenly spaced over the signal's values, plus the cheapest one meeting the hypervolume goal)."""


def evaluated_steps(trial: Trial) -> list[int]:
    """Steps after step 0 with every quadrant evaluated."""
    return [s for s in trial.steps("id_id") if s > 0 and all(s in trial.history[q] for q in OOD_QUADRANTS)]


def stop_step(trial: Trial, signal: dict[int, float], threshold: float, falling: bool) -> int:
    """The step the trial would end at: its first evaluation whose signal passes ``threshold``, else its last."""
    steps = evaluated_steps(trial)
    for step in steps:
        value = signal.get(step)
        if value is not None and (value < threshold if falling else value > threshold):
            return step
    return steps[-1]


def truncated(trial: Trial, step: int) -> Trial:
    """The trial as if it had ended at ``step``."""
    history = {q: {s: v for s, v in values.items() if s <= step} for q, values in trial.history.items()}
    return replace(trial, history=history)


def replay(sweep: Sweep, signal_value: str) -> tuple[list[tuple[str, ...]], str]:
    """The table's rows (one per threshold) and the line saying whether a row meets the goal."""
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    signals, eval_seconds = {}, {}
    for trial in sweep.trials:
        signals[trial.name] = {
            m.step: m.value for m in client.get_metric_history(trial.run_id, signal_metric(signal_value))
        }
        eval_seconds[trial.name] = {m.step: m.value for m in client.get_metric_history(trial.run_id, TIME_EVAL_S)}
    falling = signal_value in FALLING_SIGNAL_VALUES
    thresholds = sorted({v for history in signals.values() for s, v in history.items() if s > 0}, reverse=falling)
    full_points = [point_of(t, t.name, {q: t.delta(q) for q in ("id_id", *OOD_QUADRANTS)}) for t in sweep.trials]
    reference = max(max(p.worst_ood_drop for p in full_points), 0.0) + 1.0
    full_hv = frontier_hypervolume(full_points, reference)
    full_steps = sum(evaluated_steps(t)[-1] for t in sweep.trials)
    full_eval = sum(sum(v for s, v in eval_seconds[t.name].items() if s > 0) for t in sweep.trials)
    rows, best = [], None
    for threshold in thresholds:
        ends = {t.name: stop_step(t, signals[t.name], threshold, falling) for t in sweep.trials}
        kept = [truncated(t, ends[t.name]) for t in sweep.trials]
        points = [point_of(t, t.name, {q: t.delta(q) for q in ("id_id", *OOD_QUADRANTS)}) for t in kept]
        hv = frontier_hypervolume(points, reference) / full_hv if full_hv else float("nan")
        steps = sum(ends.values()) / full_steps
        evaluation = sum(
            sum(v for s, v in eval_seconds[t.name].items() if 0 < s <= ends[t.name]) for t in sweep.trials
        ) / (full_eval or float("nan"))
        stopped = sum(ends[t.name] < evaluated_steps(t)[-1] for t in sweep.trials)
        rule = f"{'min' if falling else 'max'} {threshold:.4g}"
        rows.append((rule, f"{stopped}/{len(kept)}", f"{steps:.0%}", f"{evaluation:.0%}", f"{hv:.0%}"))
        if hv >= GOAL_HYPERVOLUME and (best is None or evaluation < best[1]):
            best = (rule, evaluation, hv, len(rows) - 1)
    shown = {round(i * (len(rows) - 1) / (SHOWN_RULES - 1)) for i in range(SHOWN_RULES)} if rows else set()
    shown |= {best[3]} if best else set()
    rows = [row for index, row in enumerate(rows) if index in shown]
    if best is None:
        verdict = f"no {signal_value} rule keeps {GOAL_HYPERVOLUME:.0%} of the hypervolume"
    else:
        met = "meets" if best[1] <= GOAL_EVALUATION_SHARE else "misses"
        verdict = (
            f"cheapest rule keeping >= {GOAL_HYPERVOLUME:.0%} of the hypervolume: {signal_value} {best[0]}, "
            f"{best[2]:.0%} of it for {best[1]:.0%} of the evaluation time ({met} the <= {GOAL_EVALUATION_SHARE:.0%} goal)"
        )
    return rows, verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/signal_stop_replay.py", description=__doc__.split("\n\n")[1].replace("\n", " ")
    )
    parser.add_argument("--experiment", required=True, help="a finished grid sweep's experiment (e.g. toy-table1)")
    parser.add_argument(
        "--tracking-uri", default="sqlite:///mlflow.db", help="its MLflow store (default sqlite:///mlflow.db)"
    )
    parser.add_argument("--signal", default="output_kl", help="the signal value to stop on (default output_kl)")
    args = parser.parse_args(argv)
    sweep = load_sweep(args.experiment, args.tracking_uri)
    rows, verdict = replay(sweep, args.signal)
    header = ("stop rule", "trials stopped", "trial-steps", "evaluation time", "hypervolume")
    print(markdown_table(header, rows))
    print(f"\n{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
