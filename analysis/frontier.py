"""The frontier of a sweep: settings no other setting beats on both ID gain and OOD retention.

    front = pareto_front(summarize(sweep.trials))

ID gain = change of acc/q/id_id vs zero-shot; OOD retention = mean change of the three OOD
quadrants vs zero-shot (both in pp, seeds averaged). One setting beats another only when it
is strictly better on both (by more than TIE_PP); ties, on either axis, do not dominate.
"""

from __future__ import annotations

from analysis.outcomes import Outcome

TIE_PP = 1e-9
"""Differences at or below this (pp) count as ties (float noise of the seed means)."""


def dominates(a: Outcome, b: Outcome) -> bool:
    """Whether `a` beats `b` on both ID gain and OOD retention."""
    return a.id_gain > b.id_gain + TIE_PP and a.ood_retention > b.ood_retention + TIE_PP


def pareto_front(outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes no other outcome dominates, in their given order."""
    return [o for o in outcomes if not any(dominates(other, o) for other in outcomes)]
