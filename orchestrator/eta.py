"""How long a sweep has left, from the trials seen so far (``python -m orchestrator.sweep``'s progress).

A trial's wall time is its start-up (loading the model and the like: up to its first step report,
less its zero-shot evaluation, which only the first trials of a sweep compute and the later ones
read from the cache), its steps (evaluations between them included) and its tail (the last
evaluation and checkpoint after its last step report). ``expected_wall_time`` puts a trial not
started yet together from what the trials so far showed (``TrialPace``): the quickest start-up,
the mean seconds per step times the steps, and the mean tail; without step reports it is the mean
wall time of the finished trials. Recipes differ in what a step costs (a LoRA step skips the
weight gradients a full one computes): ``step_cost`` (FLOPs per step from ``orchestrator.pricing``,
any unit) scales the seconds per step seen to each trial. A running trial has that less the time
it has run (at least 0) left, unless its own step rate says how long it has left
(``step_rate_seconds_left``), and the trials not yet started queue for ``concurrency`` slots, each
taking the next slot to free up (``queued``: each one's expected wall time, else ``left`` trials
of the mean). The estimate is when the last slot frees up; before any trial has finished there is none (None):

    estimate_seconds_left([60, 120], running_started=[70.0], now=100.0, concurrency=2, left=3)   # 180.0
    step_rate_seconds_left([(100.0, 10), (130.0, 40)], total_steps=100)                          # 60.0
    expected_wall_time([TrialPace(30.0, 1.0, 100, tail=10.0)], wall_times=[140.0])               # 140.0
    expected_wall_time([TrialPace(30.0, 1.0, 100, tail=10.0, step_cost=3.0)], [140.0], step_cost=2.0)  # 106.7
    duration_text(180.0)                                                                         # "3m00s"
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TrialPace:
    """Where one trial's wall time went, from its step reports."""

    start_up: float
    """Seconds from its start to its first step report, less its zero-shot evaluation."""
    seconds_per_step: float | None
    """Seconds a step took between its first and latest step reports (None: one report so far)."""
    total_steps: int
    """The steps it runs in all."""
    tail: float | None = None
    """Seconds from its last step report to its end (None while it runs)."""
    step_cost: float = 1.0
    """What one of its steps costs next to other trials' (FLOPs per step, any unit; 1.0 where unknown)."""


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def expected_wall_time(paces: Sequence[TrialPace], wall_times: Sequence[float], step_cost: float = 1.0) -> float | None:
    """Seconds a trial whose steps cost ``step_cost`` will take: the quickest start-up seen, the mean
    seconds per unit of step cost times its cost and the mean steps, and the mean tail of the finished
    trials; the mean of ``wall_times`` where the paces do not say (no step rate or no finished trial with
    a tail yet); None before any trial ended."""
    rates = [pace.seconds_per_step / pace.step_cost for pace in paces if pace.seconds_per_step is not None]
    tails = [pace.tail for pace in paces if pace.tail is not None]
    if not rates or not tails:
        return _mean(wall_times) if wall_times else None
    steps = _mean([pace.total_steps for pace in paces])
    return min(pace.start_up for pace in paces) + _mean(rates) * step_cost * steps + _mean(tails)


def mean_tail(paces: Sequence[TrialPace]) -> float:
    """Mean seconds the finished trials took after their last step report (0 before one finished)."""
    tails = [pace.tail for pace in paces if pace.tail is not None]
    return _mean(tails) if tails else 0.0


def step_rate_seconds_left(progress: Sequence[tuple[float, int]], total_steps: int) -> float | None:
    """Seconds a running trial has left at its own pace: ``progress`` is its (time, step) reports since
    its first one, oldest first; None until two reports a step apart say how fast it goes."""
    if len(progress) < 2 or progress[-1][1] <= progress[0][1]:
        return None
    (first_time, first_step), (last_time, last_step) = progress[0], progress[-1]
    seconds_per_step = (last_time - first_time) / (last_step - first_step)
    return max(0, total_steps - last_step) * seconds_per_step


def estimate_seconds_left(
    wall_times: Sequence[float],
    running_started: Sequence[float],
    now: float,
    concurrency: int,
    left: int,
    running_left: Sequence[float | None] | None = None,
    expected: float | None = None,
    queued: Sequence[float] | None = None,
) -> float | None:
    """Seconds until the sweep's last trial ends, or None before any trial has finished.

    ``wall_times``: seconds each finished trial took; ``running_started``: when each running trial
    started (the clock of ``now``); ``left``: trials not started yet; ``concurrency``: trials at once;
    ``running_left``: for each running trial, the seconds it has left at its own step rate, where known
    (None: the expected wall time less the time it has run); ``expected``: the wall time of a trial not
    started yet (``expected_wall_time``; None: the mean of ``wall_times``); ``queued``: the expected wall
    time of each trial not started yet, in the order they start (None: ``left`` trials of ``expected``).
    """
    if not wall_times:
        return None
    mean = _mean(wall_times) if expected is None else expected
    own = list(running_left or []) + [None] * (len(running_started) - len(running_left or []))
    slots = [
        max(0.0, mean - (now - started)) if pace is None else pace
        for started, pace in zip(running_started, own, strict=True)
    ]
    slots += [0.0] * max(0, max(1, concurrency) - len(slots))
    heapq.heapify(slots)
    queue = list(queued) if queued is not None else [mean] * left
    for wall_time in queue:
        heapq.heappush(slots, heapq.heappop(slots) + wall_time)
    return max(slots) if running_started or queue else 0.0


def duration_text(seconds: float) -> str:
    """A short duration: "45s", "3m05s", "2h07m"."""
    seconds = round(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
