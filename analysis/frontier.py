"""The frontier of a sweep: settings no other setting beats on both ID gain and OOD retention.

    front = pareto_front(summarize(sweep.trials))

ID gain = change of acc/q/id_id vs zero-shot; OOD retention = mean change of the three OOD
quadrants vs zero-shot (both in pp, seeds averaged). One setting beats another only when it
is strictly better on both (by more than `pareto.TIE`); ties, on either axis, do not dominate.
"""

from __future__ import annotations

from analysis import pareto
from analysis.outcomes import Outcome


def _point(outcome: Outcome) -> pareto.Point:
    return outcome.id_gain, outcome.ood_retention


def dominates(a: Outcome, b: Outcome) -> bool:
    """Whether `a` beats `b` on both ID gain and OOD retention."""
    return pareto.dominates(_point(a), _point(b))


def pareto_front(outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes no other outcome dominates, in their given order."""
    return [outcomes[i] for i in pareto.front_indices([_point(o) for o in outcomes])]
