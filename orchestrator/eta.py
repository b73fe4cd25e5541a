"""How long a sweep has left, from the wall time of its finished trials (``python -m orchestrator.sweep``'s progress).

A trial not yet finished is assumed to take the mean wall time of the finished ones: a running
trial has that mean less the time it has run (at least 0) left, and the trials not yet started
queue for ``concurrency`` slots, each taking the next slot to free up. The estimate is when the
last slot frees up; before any trial has finished there is none (None):

    estimate_seconds_left([60, 120], running_started=[70.0], now=100.0, concurrency=2, left=3)   # 180.0
    duration_text(180.0)                                                                         # "3m00s"
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def estimate_seconds_left(
    wall_times: Sequence[float], running_started: Sequence[float], now: float, concurrency: int, left: int
) -> float | None:
    """Seconds until the sweep's last trial ends, or None before any trial has finished.

    ``wall_times``: seconds each finished trial took; ``running_started``: when each running trial
    started (the clock of ``now``); ``left``: trials not started yet; ``concurrency``: trials at once.
    """
    if not wall_times:
        return None
    mean = sum(wall_times) / len(wall_times)
    slots = [max(0.0, mean - (now - started)) for started in running_started]
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
