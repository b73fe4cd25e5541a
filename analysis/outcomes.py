"""Per-setting results of a sweep: final ID accuracy and quadrant deltas, averaged over seeds.

    outcomes = summarize(sweep.trials)
    best = max(outcomes, key=lambda o: o.final_id)
    best.deltas["ood_id"], best.ood_retention

Table 1, the frontier and the data-fraction / mix-ratio curves all read these numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import groupby
from statistics import mean, stdev

from analysis.errors import AnalysisError
from analysis.mlflow_reader import Setting, Trial, stderr_of_mean
from contract.layout import OOD_QUADRANTS, QUADRANTS, TARGET_QUADRANT


@dataclass(frozen=True)
class Outcome:
    """The result of one setting (recipe + data conditions), averaged over its seeds."""

    setting: Setting
    """The recipe and data conditions."""
    trials: tuple[Trial, ...]
    """Its trials (one per seed)."""
    final: Mapping[str, float]
    """Quadrant -> mean final accuracy (percent)."""
    deltas: Mapping[str, float]
    """Quadrant -> mean change vs zero-shot (percentage points)."""

    def __post_init__(self) -> None:
        if not self.trials:
            raise AnalysisError(f"setting {self.setting.recipe.label} has no trials")
        missing = [q for q in QUADRANTS if q not in self.final or q not in self.deltas]
        if missing:
            raise AnalysisError(f"setting {self.setting.recipe.label}: no result for {missing}")

    @property
    def final_id(self) -> float:
        """Final target-task accuracy, acc/q/id_id (percent)."""
        return self.final[TARGET_QUADRANT]

    @property
    def id_gain(self) -> float:
        """Change of the ID accuracy vs zero-shot (pp)."""
        return self.deltas[TARGET_QUADRANT]

    @property
    def ood_retention(self) -> float:
        """Mean change over the three OOD quadrants vs zero-shot (pp); 0 = nothing forgotten."""
        return mean(self.deltas[q] for q in OOD_QUADRANTS)

    def delta_spread(self, quadrant: str) -> float | None:
        """Standard deviation over seeds of the quadrant's change (pp); None with one seed."""
        return stdev(t.delta(quadrant) for t in self.trials) if len(self.trials) > 1 else None

    @property
    def retention_spread(self) -> float | None:
        """Standard deviation over seeds of the OOD retention (pp); None with one seed."""
        if len(self.trials) < 2:
            return None
        return stdev(mean(t.delta(q) for q in OOD_QUADRANTS) for t in self.trials)

    def delta_error(self, quadrant: str) -> float | None:
        """The ± of a quadrant's change in Table 1 (pp): the spread over seeds with two or more
        seeds, else the one run's standard error of the change (None when it logged none)."""
        if len(self.trials) > 1:
            return self.delta_spread(quadrant)
        return self.trials[0].delta_stderr(quadrant)

    @property
    def retention_error(self) -> float | None:
        """The ± of the OOD retention in Table 1 (pp), as ``delta_error``: over seeds, or one run's
        standard error of the mean of its three OOD changes."""
        if len(self.trials) > 1:
            return self.retention_spread
        return stderr_of_mean(self.trials[0].delta_stderr(q) for q in OOD_QUADRANTS)


def summarize(trials: Iterable[Trial]) -> list[Outcome]:
    """One Outcome per setting, in Setting.sort_key order; seeds of a setting are averaged."""
    ordered = sorted(trials, key=lambda t: (t.setting.sort_key, t.seed))
    return [_outcome(setting, tuple(group)) for setting, group in groupby(ordered, key=lambda t: t.setting)]


def _outcome(setting: Setting, trials: tuple[Trial, ...]) -> Outcome:
    return Outcome(
        setting=setting,
        trials=trials,
        final={q: mean(t.final(q) for t in trials) for q in QUADRANTS},
        deltas={q: mean(t.delta(q) for t in trials) for q in QUADRANTS},
    )
