"""Console progress of a sweep and its final summary table.

``SweepProgress`` is a Ray Tune callback: every checkpoint evaluation a trial reports becomes
one line (trials running / finished, the trial's ID accuracy and worst OOD change, the best ID
gain and the worst OOD drop of the sweep so far). After each trial's end a line gives the trials
running and left and, from the first finished trial on, the time left (``orchestrator.eta``).
The running trials' steps, which they report every ``log_every`` steps, are one status line
redrawn in place on a terminal, and elsewhere (CI, ``ray job submit`` logs) a plain line at most
every ``PLAIN_EVERY_S`` seconds. ``summary_table`` reads the finished runs back from MLflow, so
trials skipped because they finished earlier are in it too:

    tuner = tune.Tuner(..., run_config=tune.RunConfig(callbacks=[SweepProgress(total=6, concurrency=2)]))
    print(summary_table(rows))
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback

from contract.layout import OOD_QUADRANTS, TARGET_QUADRANT, TIME_EVAL_S, accuracy_metric, delta_metric
from contract.reports import STEP, TOTAL_STEPS, TRIAL_NAME
from orchestrator.eta import (
    TrialPace,
    duration_text,
    estimate_seconds_left,
    expected_wall_time,
    mean_tail,
    step_rate_seconds_left,
)
from recipes.common.redaction import redact
from recipes.common.text_table import text_table


def worst_ood(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """(quadrant, delta) of the OOD quadrant that fell the most, if deltas are present."""
    deltas = [(q, metrics[delta_metric(q)]) for q in OOD_QUADRANTS if delta_metric(q) in metrics]
    return min(deltas, key=lambda item: item[1]) if deltas else None


PLAIN_EVERY_S = 30.0
"""Least seconds between two lines of the running trials' steps when output is not a terminal."""
SHOWN_TRIALS = 4
"""Running trials a steps line names; it counts the others."""
CLEAR_LINE = "\r\x1b[K"
"""Back to the start of the terminal's line and clear it (under the redrawn status line)."""


class SweepProgress(Callback):
    """Prints one line per trial start, evaluation and end, the time left, and the running trials' steps."""

    def __init__(
        self,
        total: int,
        already_done: int = 0,
        concurrency: int = 1,
        stream: TextIO | None = None,
        step_costs: dict[str, float] | None = None,
    ) -> None:
        self.total = total
        self.done = already_done
        self.failed = 0
        self.best_id_gain: tuple[str, float] | None = None
        self.worst_ood_drop: tuple[str, float] | None = None
        self.stream = stream
        """Where lines go (None: this process's current stdout; Tune pickles the callback, a stream it cannot)."""
        self.started = time.monotonic()
        self.concurrency = concurrency
        """How many trials run at once."""
        self.step_costs = dict(step_costs or {})
        """Trial name -> what one of its steps costs (``orchestrator.eta``), for the trials to run, in the
        order they start; trials not in it (sampled ones) cost the mean."""
        self.names: dict[str, str] = {}
        """Trial id -> name of each trial started in this run."""
        self.running: dict[str, float] = {}
        """Trial id -> when the trial started (``time.monotonic``)."""
        self.steps: dict[str, tuple[str, int, int]] = {}
        """Trial id -> (name, step reached, steps in all) of a running trial that reports its steps."""
        self.progress: dict[str, list[tuple[float, int]]] = {}
        """Trial id -> its step-progress reports in this run, (``time.monotonic``, step), first and latest."""
        self.zero_shot_s: dict[str, float] = {}
        """Trial id -> seconds its step-0 (zero-shot) evaluation took; the trials after it read it from the cache."""
        self.finished_paces: list[TrialPace] = []
        """Where the wall time of each trial that ended in this run went (those that reported steps)."""
        self.wall_times: list[float] = []
        """Seconds each trial that ended in this run took (failed ones left out)."""
        self.last_steps_line: float | None = None
        self.status_drawn = False
        """Whether the terminal's last line is the redrawn status line."""

    def _name(self, trial, result: dict | None = None) -> str:
        """The trial's name: from its grid cell, or (a sampled trial) from its reports."""
        reported = result or trial.last_result or {}
        return trial.config.get("cell", {}).get("name") or reported.get(TRIAL_NAME, trial.trial_id)

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def _line(self, text: str) -> str:
        elapsed = time.monotonic() - self.started
        return f"[{elapsed:6.0f}s {self.done}/{self.total} done] {redact(text)}"

    def _print(self, text: str) -> None:
        redraw = self.status_drawn
        if redraw:
            self._out().write(CLEAR_LINE)
            self.status_drawn = False
        print(self._line(text), file=self._out(), flush=True)
        if redraw and self.steps:
            self._draw_status()

    def left(self) -> int:
        """Trials not started yet."""
        return max(0, self.total - self.done - len(self.running))

    def pace(self, trial_id: str, ended: float | None = None) -> TrialPace | None:
        """What a trial's step reports say of its pace (None before its first one)."""
        reports = self.progress.get(trial_id)
        if not reports or trial_id not in self.steps or trial_id not in self.running:
            return None
        (first_time, first_step), (last_time, last_step) = reports[0], reports[-1]
        rate = (last_time - first_time) / (last_step - first_step) if last_step > first_step else None
        tail = None if ended is None else ended - last_time
        start_up = first_time - self.running[trial_id] - self.zero_shot_s.get(trial_id, 0.0)
        cost = self.step_costs.get(self.names.get(trial_id, ""), 1.0)
        return TrialPace(max(0.0, start_up), rate, self.steps[trial_id][2], tail, cost)

    def _expected(self, paces: list[TrialPace], name: str) -> float | None:
        """Wall time a trial named ``name`` takes at the pace seen so far (``expected_wall_time``)."""
        return expected_wall_time(paces, self.wall_times, self.step_costs.get(name, 1.0))

    def eta_text(self) -> str:
        """ "2 running, 3 left", and ", ETA 4m10s" once a trial has ended."""
        text = f"{len(self.running)} running, {self.left()} left"
        tail = mean_tail(self.finished_paces)
        own_paces = []
        for trial_id in self.running:
            left = None
            if trial_id in self.steps:
                left = step_rate_seconds_left(self.progress.get(trial_id, []), self.steps[trial_id][2])
            own_paces.append(None if left is None else left + tail)
        paces = self.finished_paces + [pace for pace in map(self.pace, self.running) if pace is not None]
        now = time.monotonic()
        for index, (trial_id, started) in enumerate(self.running.items()):
            expected = self._expected(paces, self.names.get(trial_id, ""))
            if own_paces[index] is None and expected is not None:
                own_paces[index] = max(0.0, expected - (now - started))
        started_names = set(self.names.values())
        costed = [name for name in self.step_costs if name not in started_names][: self.left()]
        queued = [self._expected(paces, name) for name in costed]
        queued += [self._expected(paces, "")] * (self.left() - len(costed))
        eta = estimate_seconds_left(
            self.wall_times,
            list(self.running.values()),
            now,
            self.concurrency,
            self.left(),
            own_paces,
            queued=None if None in queued else queued,
        )
        return text if eta is None else f"{text}, ETA {duration_text(eta)}"

    def steps_text(self) -> str:
        """The running trials' steps: "llm-full-lr1e-05 40/100, projector-full-lr1e-05 20/100"."""
        named = [f"{name} {step}/{total}" for name, step, total in self.steps.values()]
        more = f", +{len(named) - SHOWN_TRIALS} more" if len(named) > SHOWN_TRIALS else ""
        return ", ".join(named[:SHOWN_TRIALS]) + more

    def _draw_status(self) -> None:
        width = shutil.get_terminal_size().columns - 1
        self._out().write(CLEAR_LINE + self._line(f"{self.steps_text()} | {self.eta_text()}")[:width])
        self._out().flush()
        self.status_drawn = True

    def _show_steps(self) -> None:
        """Redrawn in place on a terminal; elsewhere a plain line at most every ``PLAIN_EVERY_S`` seconds."""
        isatty = getattr(self._out(), "isatty", None)
        if isatty and isatty():
            self._draw_status()
            return
        now = time.monotonic()
        if self.last_steps_line is None or now - self.last_steps_line >= PLAIN_EVERY_S:
            self.last_steps_line = now
            self._print(f"{self.steps_text()} | {self.eta_text()}")

    def _ended(self, trial, failed: bool) -> None:
        pace = self.pace(trial.trial_id, ended=time.monotonic())
        if pace is not None and not failed:
            self.finished_paces.append(pace)
        started = self.running.pop(trial.trial_id, None)
        self.steps.pop(trial.trial_id, None)
        self.progress.pop(trial.trial_id, None)
        self.zero_shot_s.pop(trial.trial_id, None)
        if started is not None and not failed:
            self.wall_times.append(time.monotonic() - started)
        self.done += 1
        self.failed += failed

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running[trial.trial_id] = time.monotonic()
        self.names[trial.trial_id] = self._name(trial)
        self._print(f"{self._name(trial)}: started")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get(STEP) == 0 and TIME_EVAL_S in result:
            self.zero_shot_s[trial.trial_id] = float(result[TIME_EVAL_S])
        known = self.steps.get(trial.trial_id)
        if STEP in result and trial.trial_id in self.running and (TOTAL_STEPS in result or known):
            total = result.get(TOTAL_STEPS) or known[2]  # trials that report no steps (continual ones) stay out
            self.steps[trial.trial_id] = (self._name(trial, result), int(result[STEP]), total)
        if TOTAL_STEPS in result:  # a step-progress report between evaluations
            reports = self.progress.setdefault(trial.trial_id, [])
            reports[1:] = []  # keep the first and the newest
            reports.append((time.monotonic(), int(result[STEP])))
            self._show_steps()
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
            f"{name} step {int(result.get(STEP, 0))}: ID {result[accuracy_metric(TARGET_QUADRANT)]:.1f}% ({gain:+.1f} pp), "
            f"{worst_text}{sweep_text}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trial, failed=False)
        self._print(f"{self._name(trial)}: done")
        if self.running or self.left():
            self._print(self.eta_text())

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trial, failed=True)
        self._print(f"{self._name(trial)}: FAILED (see the Ray logs; rerun the sweep to resume it)")
        if self.running or self.left():
            self._print(self.eta_text())

    def on_experiment_end(self, trials, **info) -> None:
        if self.status_drawn:  # the summary table starts on a clean line
            self._out().write(CLEAR_LINE)
            self._out().flush()
            self.status_drawn = False


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
