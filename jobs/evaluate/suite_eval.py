"""Evaluate a model on a 2x2 suite (MCQ and free-form datasets), data-parallel across the ranks of a trial.

The suite's datasets are cut into fixed batches of row ranges once (the same batches whatever the
number of ranks, so results do not depend on it); of W ranks, rank r answers the r-th of W
contiguous runs of batches and reads only their rows (a parquet row group at a time, see
``recipes.data.row_source``), so no worker holds a whole dataset; rank 0 gathers the per-example
results, puts them back in dataset order and computes the metrics of ``contract.layout``:
``acc/<dataset>`` and ``acc/q/<quadrant>`` (mean of its datasets), in percent, and
``stderr/q/<quadrant>``, the quadrant's binomial standard error in percentage points.
A dataset's MCQ rows are scored by the mode, its free-form rows by their matcher (after greedy
generation within the suite's budget for the dataset), all counted in its one ``acc/<dataset>``.

    evaluator = SuiteEvaluator(load_suite("toy"), processor, mode="logits")
    evaluator = DatasetEvaluator(["toy-wiki", "tests.parquet"], processor)   # acc/<dataset> only
    result = evaluator.evaluate(model)                 # one process
    result = evaluator.evaluate(model, rank, world)    # every rank calls it; rank 0 gets the result
    result = evaluator.evaluate(model, rank, world, image_features=memo)   # a frozen image path's features kept
    result.quadrant("ood_id"), result.predictions      # pyarrow table, one row per question
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch
import torch.distributed as dist

from contract.layout import QUADRANTS, accuracy_metric, dataset_metric, delta_metric, stderr_metric
from jobs.evaluate.image_features import FrozenImageFeatures
from jobs.evaluate.scoring import BatchScorer, batches
from recipes.common.progress_bar import progress_bar
from recipes.data.collate import RecordCollator
from recipes.data.registry import dataset_name
from recipes.data.row_source import RowSource, open_rows
from recipes.data.schema import MCQ_KIND
from recipes.data.suites import Suite

PREDICTION_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("id", pa.string()),
        ("prediction", pa.string()),
        ("correct", pa.float64()),
        ("chosen", pa.string()),
        ("answer", pa.string()),
    ]
)
"""Per-example predictions: what was answered, whether it was right, and the option text chosen."""


@dataclass
class SuiteResult:
    """Metrics and per-example predictions of one evaluation."""

    metrics: dict[str, float]
    """``acc/<dataset>`` and ``acc/q/<quadrant>`` in percent, ``stderr/q/<quadrant>`` in pp."""
    predictions: pa.Table
    """One row per question (``PREDICTION_SCHEMA``)."""
    seconds: float
    """Wall time of the evaluation."""

    @property
    def questions(self) -> int:
        return self.predictions.num_rows

    def quadrant(self, quadrant: str) -> float:
        return self.metrics[accuracy_metric(quadrant)]


def quadrant_metrics(dataset_accuracy: dict[str, float], suite: Suite, questions: dict[str, int]) -> dict[str, float]:
    """``acc/<dataset>`` for every dataset, ``acc/q/<quadrant>`` = mean of the quadrant's datasets and
    ``stderr/q/<quadrant>``, its standard error (``contract.layout.stderr_metric``) from the
    datasets' question counts ``questions``."""
    metrics = {dataset_metric(name): value for name, value in dataset_accuracy.items()}
    for quadrant in QUADRANTS:
        names = [dataset_name(name) for name in suite.quadrants[quadrant]]
        metrics[accuracy_metric(quadrant)] = sum(dataset_accuracy[name] for name in names) / len(names)
        variances = [accuracy_variance(dataset_accuracy[name], questions[name]) for name in names]
        metrics[stderr_metric(quadrant)] = math.sqrt(sum(variances)) / len(names)
    return metrics


def accuracy_variance(accuracy_percent: float, questions: int) -> float:
    """The binomial variance of an accuracy over ``questions`` questions, in pp squared."""
    share = accuracy_percent / 100
    return share * (1 - share) / questions * 100**2


def delta_metrics(metrics: dict[str, float], zero_shot: dict[str, float]) -> dict[str, float]:
    """``delta/q/<quadrant>``: percentage points vs the zero-shot evaluation."""
    return {delta_metric(q): metrics[accuracy_metric(q)] - zero_shot[accuracy_metric(q)] for q in QUADRANTS}


def contiguous_share(count: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s run of ``count`` items cut into ``world_size`` contiguous runs (sizes differ by at most 1)."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


class DatasetEvaluator:
    """Holds datasets' questions in fixed batches and evaluates models on them (``acc/<dataset>``)."""

    def __init__(
        self,
        datasets: Sequence[str],
        processor: Any,
        mode: str = "logits",
        batch_size: int = 32,
        max_new_tokens: int = 8,
        synced_gpus: bool = False,
        open_source: Callable[[str], RowSource] = open_rows,
        budgets: dict[str, int] | None = None,
        store_bytes: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"eval batch_size must be >= 1, got {batch_size}")
        collator = RecordCollator(
            processor, with_answers=False, padding_side="left", always_image=synced_gpus, store_bytes=store_bytes
        )
        self.scorer = BatchScorer(collator, mode=mode, max_new_tokens=max_new_tokens, synced_gpus=synced_gpus)
        self.budgets = dict(budgets or {})
        """Generation budget of free-form rows by dataset name (default: ``max_new_tokens``)."""
        self.sources: dict[str, RowSource] = {}
        """The rows of each dataset, by display name (read batch by batch)."""
        self.batches: list[tuple[str, range]] = []
        """(dataset name, the rows of the batch) in dataset order."""
        for dataset in datasets:
            name = dataset_name(dataset)
            self.sources[name] = open_source(dataset)
            self.batches += [(name, rows) for rows in batches(range(self.sources[name].num_rows), batch_size)]

    def metrics(self, dataset_accuracy: dict[str, float], questions: dict[str, int]) -> dict[str, float]:
        """The metrics of one evaluation from its per-dataset accuracies (percent) and question counts."""
        return {dataset_metric(name): value for name, value in dataset_accuracy.items()}

    @property
    def has_freeform(self) -> bool:
        """Whether any question is free-form (generated and scored by a matcher whatever the mode)."""
        return any(kind != MCQ_KIND for source in self.sources.values() for kind in source.kinds())

    @property
    def mode(self) -> str:
        return self.scorer.mode

    def _answer(
        self,
        model: torch.nn.Module,
        batch_indices: list[int],
        image_features: FrozenImageFeatures | None,
        progress: str | None = None,
    ) -> list[tuple[int, list[dict]]]:
        answered = []
        questions = sum(len(self.batches[index][1]) for index in batch_indices)
        bar = progress_bar(total=questions, desc=progress, unit="question", enabled=progress is not None)
        for index in batch_indices:
            dataset, positions = self.batches[index]
            rows = self.sources[dataset].take(positions)
            scored = self.scorer(model, rows, self.budgets.get(dataset), image_features, key=index)
            bar.update(len(rows))
            answered.append(
                (
                    index,
                    [
                        {"dataset": dataset, "id": row["id"], "answer": row["answer"], **result}
                        for row, result in zip(rows, scored)
                    ],
                )
            )
        bar.close()
        return answered

    def evaluate(
        self,
        model: torch.nn.Module,
        rank: int = 0,
        world_size: int = 1,
        image_features: FrozenImageFeatures | None = None,
        progress: str | None = None,
    ) -> SuiteResult | None:
        """Evaluate ``model``; with several ranks every rank must call this, rank 0 gets the result.

        ``image_features``: a memo of this evaluator's batches' image features, reused across
        evaluations of models that share one frozen image path (``jobs.evaluate.image_features``).
        ``progress``: the label of a progress bar over the questions (a one-off command's, shown
        on a terminal only; ``recipes.common.progress_bar``).
        """
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        mine = list(contiguous_share(len(self.batches), rank, world_size))
        if self.scorer.synced_gpus:  # sharded parameters: every rank runs the same number of forwards
            rounds = -(-len(self.batches) // world_size)
            mine += [mine[-1] if mine else 0] * (rounds - len(mine))
        answered = self._answer(model, mine, image_features, progress)
        model.train(was_training)
        if world_size > 1:
            gathered: list[Any] = [None] * world_size if rank == 0 else None
            dist.gather_object(answered, gathered, dst=0)
            if rank != 0:
                return None
            answered = [item for part in gathered for item in part]
        by_batch = dict(answered)  # padding repeats are identical, so duplicates collapse
        rows = [row for index in sorted(by_batch) for row in by_batch[index]]
        predictions = pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)
        accuracy: dict[str, list[float]] = {}
        for row in rows:
            accuracy.setdefault(row["dataset"], []).append(row["correct"])
        dataset_accuracy = {name: 100.0 * sum(v) / len(v) for name, v in accuracy.items()}
        questions = {name: len(v) for name, v in accuracy.items()}
        return SuiteResult(self.metrics(dataset_accuracy, questions), predictions, time.perf_counter() - started)


class SuiteEvaluator(DatasetEvaluator):
    """A ``DatasetEvaluator`` over a 2x2 suite: adds ``acc/q/<quadrant>``."""

    def __init__(self, suite: Suite, processor: Any, **settings: Any) -> None:
        super().__init__(
            [dataset for _, dataset in suite.entries()],
            processor,
            budgets=suite.max_new_tokens,
            **settings,
        )
        self.suite = suite

    def metrics(self, dataset_accuracy: dict[str, float], questions: dict[str, int]) -> dict[str, float]:
        return quadrant_metrics(dataset_accuracy, self.suite, questions)
