"""Last and Average of a continual-learning accuracy matrix (the paper's §5, appendix D.4).

``matrix[k][j]`` is the accuracy (percent) on task j's test set after training on tasks 0..k.
*Last* is each task's accuracy after the final task (``matrix[-1][j]``). *Average* at task k is
the mean accuracy over the tasks seen so far when task k has been learned
(``mean(matrix[k][0..k])``): Table 3's "Average" column of task k. The single *Average* number
is the mean of those over the stages, and *Last* as one number is the mean of the last row:

    scores = continual_scores([[80, 20], [70, 90]], ["RS", "Med"])
    scores.last == {"RS": 70, "Med": 90}; scores.average_at == {"RS": 80, "Med": 80}
    scores.average == 80.0; scores.last_mean == 80.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contract.layout import CONTINUAL_AVERAGE, CONTINUAL_LAST, task_average_metric, task_last_metric


@dataclass(frozen=True)
class ContinualScores:
    """Last and Average of one trial's accuracy matrix."""

    last: dict[str, float]
    """Task -> accuracy after the final task."""
    average_at: dict[str, float]
    """Task k -> mean accuracy on tasks 0..k after learning task k (Table 3's Average column)."""
    average: float
    """Mean over stages of ``average_at``."""
    last_mean: float
    """Mean of ``last`` over the tasks."""

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: ``cl/last/<task>``, ``cl/average_at/<task>``, ``cl/last``, ``cl/average``."""
        metrics = {task_last_metric(task): value for task, value in self.last.items()}
        metrics.update({task_average_metric(task): value for task, value in self.average_at.items()})
        metrics.update({CONTINUAL_LAST: self.last_mean, CONTINUAL_AVERAGE: self.average})
        return metrics


def continual_scores(matrix: Sequence[Sequence[float]], tasks: Sequence[str]) -> ContinualScores:
    """Last and Average of a full matrix (one row per trained task, one column per task)."""
    if not tasks:
        raise ValueError("tasks: at least one task is needed")
    if len(matrix) != len(tasks) or any(len(row) != len(tasks) for row in matrix):
        raise ValueError(f"matrix must be {len(tasks)} x {len(tasks)} (stages x tasks), got {[len(r) for r in matrix]}")
    last = {task: float(matrix[-1][j]) for j, task in enumerate(tasks)}
    average_at = {task: sum(matrix[k][: k + 1]) / (k + 1) for k, task in enumerate(tasks)}
    return ContinualScores(
        last=last,
        average_at=average_at,
        average=sum(average_at.values()) / len(tasks),
        last_mean=sum(last.values()) / len(tasks),
    )
