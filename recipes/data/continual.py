"""Task sequences for continual learning: each task a train set and a test set, plus replay.

A continual-learning trial (``continual:`` in a grid file) trains on its tasks one after another
and after each task answers every task's test set (the accuracy matrix of the paper's §5 and
Table 3). A task is written either as a named task of a dataset provider (the toy world's
domains, ``recipes.toyworld.datasets.TOY_DOMAINS``) or as a mapping of files:

    tasks: [toy-cl-shapes, toy-cl-attributes, toy-cl-digits]            # toy world, CPU
    tasks: [toy-cl-shapes, toy-cl-attributes, toy-cl-count]              # with a free-form domain
    tasks: [{name: RS, train: data/mllm-cl/RS-train.parquet, test: data/mllm-cl/RS-test.parquet}, ...]

The toy domains are views of the toy world's tables (by question type), written once into the
cache next to the world; the MLLM-CL files come from ``python -m recipes.data adapt mllm-cl``
(MCQ and free-form rows; each test set's free-form rows are scored by their domain's matcher).
Replay follows MLLM-CL: before task k, ``replay_per_task`` seeded samples of every earlier
task's training set are appended to task k's training data (no over-sampling):

    from recipes.data.continual import ContinualTask, resolve_task, replay_table
    tasks = [resolve_task(spec) for spec in ["toy-cl-shapes", "toy-cl-digits"]]
    extra = replay_table(tasks, stage=1, per_task=20, seed=0)       # 20 rows of toy-cl-shapes
    data = stage_training_table(tasks, stage=1, per_task=20, seed=0)  # toy-cl-digits + that replay
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from recipes.data.registry import DatasetProvider, dataset_providers, load_dataset
from recipes.data.schema import concat_records


@dataclass(frozen=True)
class ContinualTask:
    """One task of a continual-learning sequence."""

    name: str
    """Task name (a column of the accuracy matrix and of the Table-3 table)."""
    train: str
    """Training set: registered name or data file path (MCQ and free-form records)."""
    test: str
    """Test set: registered name or data file path; free-form rows are scored by their matcher."""

    def __post_init__(self) -> None:
        for key in ("name", "train", "test"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"continual task {key} must be a non-empty string, got {value!r}")
        if "/" in self.name or self.name != self.name.strip():
            raise ValueError(f"continual task name {self.name!r} must not contain '/' or surrounding spaces")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "train": self.train, "test": self.test}


def named_tasks() -> dict[str, DatasetProvider]:
    """Task names ``resolve_task`` knows without files (the toy domains), each with its provider."""
    return {name: provider for provider in dataset_providers() for name in provider.continual_tasks}


def resolve_task(spec: str | Mapping[str, Any] | ContinualTask) -> ContinualTask:
    """A task from a toy domain name or a ``{name, train, test}`` mapping (clear errors otherwise)."""
    if isinstance(spec, ContinualTask):
        return spec
    if isinstance(spec, str):
        named = named_tasks()
        if spec not in named:
            raise ValueError(
                f"unknown continual task {spec!r}: toy domains are {', '.join(named)}; "
                "other tasks are written {name, train, test}"
            )
        return ContinualTask(spec, spec, named[spec].continual_tasks[spec])
    if isinstance(spec, Mapping):
        missing = {"name", "train", "test"} - set(spec)
        extra = set(spec) - {"name", "train", "test"}
        if missing or extra:
            raise ValueError(f"continual task {dict(spec)!r}: expected keys name, train, test")
        return ContinualTask(str(spec["name"]), str(spec["train"]), str(spec["test"]))
    raise ValueError(f"continual task must be a toy domain name or {{name, train, test}}, got {spec!r}")


def load_train_table(task: ContinualTask) -> pa.Table:
    """A task's training table (a toy domain's view is built into the cache on first use)."""
    named = named_tasks()
    if task.train in named:
        return load_dataset(named[task.train].continual_train_file(task.train))
    return load_dataset(task.train)


def replay_indices(rows: int, per_task: int, seed: int, task_index: int) -> np.ndarray:
    """Sorted row indices of one task's replay buffer: ``per_task`` distinct rows (all when fewer)."""
    if per_task <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed, 0x5E9, task_index])
    return np.sort(rng.permutation(rows)[: min(per_task, rows)])


def replay_table(tasks: list[ContinualTask], stage: int, per_task: int, seed: int) -> pa.Table | None:
    """Replay rows mixed into task ``stage``: each earlier task's buffer, in task order (None if empty).

    A task's buffer depends only on (seed, its position, its training set), so task k sees the
    same buffers of tasks 0..k-1 as task k-1 did.
    """
    parts = []
    for index, task in enumerate(tasks[:stage]):
        table = load_train_table(task)
        chosen = replay_indices(table.num_rows, per_task, seed, index)
        if len(chosen):
            parts.append(table.take(pa.array(chosen)))
    return concat_records(parts) if parts else None


def stage_training_table(tasks: list[ContinualTask], stage: int, per_task: int, seed: int) -> pa.Table:
    """Task ``stage``'s training data: its own training set plus the replay of the earlier tasks."""
    table = load_train_table(tasks[stage])
    replay = replay_table(tasks, stage, per_task, seed)
    if replay is None:
        return table
    return concat_records([table, replay])


def task_names(tasks: list[ContinualTask]) -> list[str]:
    """The task names, checked unique."""
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"continual task names must be unique; repeated: {', '.join(duplicates)}")
    return names
