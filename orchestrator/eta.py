"""How long a sweep has left, from the wall time of its finished trials (``python -m orchestrator.sweep``'s progress).

A trial not yet finished is assumed to take the mean wall time of the finished ones: a running
trial has that mean less the time it has run (at least 0) left, unless its own step rate says how
long it has left (``step_rate_seconds_left``: recipes differ, a LoRA step is cheaper than a full
one), and the trials not yet started queue for ``concurrency`` slots, each taking the next slot to
free up. The estimate is when the last slot frees up; before any trial has finished there is none
(None):

    estimate_seconds_left([60, 120], running_started=[70.0], now=100.0, concurrency=2, left=3)   # 180.0
    step_rate_seconds_left([(100.0, 10), (130.0, 40)], total_steps=100)                          # 60.0
    duration_text(180.0)                                                                         # "3m00s"
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


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
) -> float | None:
    """Seconds until the sweep's last trial ends, or None before any trial has finished.

    ``wall_times``: seconds each finished trial took; ``running_started``: when each running trial
    started (the clock of ``now``); ``left``: trials not started yet; ``concurrency``: trials at once;
    ``running_left``: for each running trial, the seconds it has left at its own step rate, where known
    (None: the mean wall time less the time it has run).
    """
    if not wall_times:
        return None
    mean = sum(wall_times) / len(wall_times)
    own = list(running_left or []) + [None] * (len(running_started) - len(running_left or []))
    slots = [
        max(0.0, mean - (now - started)) if pace is None else pace
        for started, pace in zip(running_started, own, strict=True)
    ]
    slots += [0.0] * max(0, max(1, concurrency) - len(slots))
    heapq.heapify(slots)
    for _ in range(left):
        heapq.heappush(slots, heapq.heappop(slots) + mean)
    return max(slots) if running_started or left else 0.0


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
