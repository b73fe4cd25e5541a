"""Pareto fronts and hypervolume of points that maximise two numbers: pure functions, no I/O.

    front_indices([(16.8, -8.7), (10.0, 0.2), (3.2, -3.5)])      # [0, 1]: (3.2, -3.5) is beaten
    hypervolume([(16.8, -8.7), (10.0, 0.2)], reference=(0.0, -10.0))

Both coordinates are "higher is better"; a point in the (ID gain, worst OOD drop) plane is
``(id_gain, -worst_ood_drop)``. One point beats another only when it is better on both by
more than ``TIE``; ties, on either axis, do not dominate. The hypervolume is the area of the
plane that the points dominate above ``reference`` (each point's rectangle down to it, their
union counted once): the bigger it is, the more of the trade-off a set of recipes covers.
"""

from __future__ import annotations

from collections.abc import Sequence

TIE = 1e-9
"""Differences at or below this count as ties (float noise of seed means)."""

Point = tuple[float, float]
"""Two coordinates, both maximised."""


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` beats ``b`` on both coordinates."""
    return a[0] > b[0] + TIE and a[1] > b[1] + TIE


def front_indices(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates, in their given order."""
    return [i for i, p in enumerate(points) if not any(dominates(other, p) for other in points)]


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Area dominated by ``points`` above and right of ``reference`` (points not beyond it add nothing)."""
    inside = sorted((x, y) for x, y in points if x > reference[0] and y > reference[1])
    area, reach = 0.0, reference[1]
    for x, y in reversed(inside):  # from the largest first coordinate down; each adds the strip above `reach`
        if y > reach:
            area += (x - reference[0]) * (y - reach)
            reach = y
    return area
