"""Console progress of a sweep and its final summary table.

``SweepProgress`` is a Ray Tune callback: every checkpoint evaluation a trial reports becomes
one line (trials running / finished, the trial's ID accuracy and worst OOD change, the best ID
gain and the worst OOD drop of the sweep so far). ``summary_table`` reads the finished runs
back from MLflow, so trials skipped because they finished earlier are in it too:

    tuner = tune.Tuner(..., run_config=tune.RunConfig(callbacks=[SweepProgress(total=6)]))
    print(summary_table(rows))
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback

from contract.layout import OOD_QUADRANTS, TARGET_QUADRANT, accuracy_metric, delta_metric
from recipes.redaction import redact
from recipes.text_table import text_table


def worst_ood(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """(quadrant, delta) of the OOD quadrant that fell the most, if deltas are present."""
    deltas = [(q, metrics[delta_metric(q)]) for q in OOD_QUADRANTS if delta_metric(q) in metrics]
    return min(deltas, key=lambda item: item[1]) if deltas else None


class SweepProgress(Callback):
    """Prints one line per trial evaluation and per trial end."""

    def __init__(self, total: int, already_done: int = 0, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = already_done
        self.failed = 0
        self.best_id_gain: tuple[str, float] | None = None
        self.worst_ood_drop: tuple[str, float] | None = None
        self.stream = stream
        """Where lines go (None: this process's current stdout; Tune pickles the callback, a stream it cannot)."""
        self.started = time.monotonic()

    def _name(self, trial, result: dict | None = None) -> str:
        """The trial's name: from its grid cell, or (a sampled trial) from its reports."""
        reported = result or trial.last_result or {}
        return trial.config.get("cell", {}).get("name") or reported.get("trial_name", trial.trial_id)

    def _print(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.0f}s {self.done}/{self.total} done] {redact(text)}", file=self.stream or sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._print(f"{self._name(trial)}: started")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if accuracy_metric(TARGET_QUADRANT) not in result:
            return
        name = self._name(trial, result)
        gain = result.get(delta_metric(TARGET_QUADRANT), 0.0)
        if self.best_id_gain is None or gain > self.best_id_gain[1]:
            self.best_id_gain = (name, gain)
        worst = worst_ood(result)
        if worst and (self.worst_ood_drop is None or worst[1] < self.worst_ood_drop[1]):
            self.worst_ood_drop = (name, worst[1])
        worst_text = f"worst OOD {worst[1]:+.1f} pp ({worst[0]})" if worst else ""
        sweep_text = ""
        if self.best_id_gain and self.worst_ood_drop:
            sweep_text = f" | sweep: best ID gain {self.best_id_gain[1]:+.1f}, worst OOD {self.worst_ood_drop[1]:+.1f}"
        self._print(
            f"{name} step {int(result.get('step', 0))}: ID {result[accuracy_metric(TARGET_QUADRANT)]:.1f}% ({gain:+.1f} pp), "
            f"{worst_text}{sweep_text}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        self._print(f"{self._name(trial)}: done")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        self.failed += 1
        self._print(f"{self._name(trial)}: FAILED (see the Ray logs; rerun the sweep to resume it)")


@dataclass
class SummaryRow:
    """One trial in the final table."""

    name: str
    status: str
    id_accuracy: float | None
    id_delta: float | None
    worst_ood: tuple[str, float] | None
    run_id: str


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def summary_table(rows: list[SummaryRow]) -> str:
    """Fixed-width table: trial, status, final ID accuracy, its change, worst OOD change, run."""
    header = ("trial", "status", "ID acc %", "ID Δ pp", "worst OOD Δ pp", "MLflow run")
    body = [
        (
            row.name,
            row.status,
            _number(row.id_accuracy),
            _number(row.id_delta, signed=True),
            f"{row.worst_ood[1]:+.1f} ({row.worst_ood[0]})" if row.worst_ood else "-",
            row.run_id[:12],
        )
        for row in rows
    ]
    return text_table(header, body)
