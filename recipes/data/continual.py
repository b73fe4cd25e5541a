"""Task sequences for continual learning: each task a train set and a test set, plus replay.

A continual-learning trial (``continual:`` in a grid file) trains on its tasks one after another
and after each task answers every task's test set (the accuracy matrix of the paper's §5 and
Table 3). A task is written either as a toy-world domain name or as a mapping of files:

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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from recipes.cache import cached_dir, content_key
from recipes.data.registry import load_dataset, toy_world_key
from recipes.data.schema import concat_records, write_mcq

TOY_DOMAIN_TRAIN_ROWS = 480
"""Training questions per toy domain (30 steps of batch 16 per epoch: minutes on a CPU)."""


@dataclass(frozen=True)
class ToyDomain:
    """A toy-world domain: questions of one type, from a toy training table and a toy test set."""

    train_source: str
    """Registered toy dataset holding the domain's training questions."""
    task_prefix: str
    """``meta.task`` prefix (before ``:``) that selects the domain's rows of ``train_source``."""
    test: str
    """Registered toy eval set of the domain (disjoint from every training table)."""
    description: str
    """What the domain asks."""


TOY_DOMAINS: dict[str, ToyDomain] = {
    "toy-cl-shapes": ToyDomain("toy-imagenet-vqa", "classify", "toy-imagenet-vqa-val", "the class of a shape scene"),
    "toy-cl-attributes": ToyDomain("toy-general", "attribute", "toy-attributes", "colour, texture, count questions"),
    "toy-cl-digits": ToyDomain("toy-general", "digit", "toy-digit-tasks", "parity and arithmetic of digits"),
    "toy-cl-wiki": ToyDomain("toy-general", "wiki", "toy-wiki", "made-up facts about a class"),
    "toy-cl-text": ToyDomain("toy-general", "text", "toy-text-qa", "text-only questions"),
    "toy-cl-count": ToyDomain(
        "toy-count-free-train", "count", "toy-count-free", "how many shapes, as a number (free-form, Listing 2)"
    ),
}
"""Toy continual-learning domains by name (the toy world's sequence of up to five tasks); ``toy-cl-count``
is free-form: its answers are generated and scored by the matcher its rows name (``rs``, like MLLM-CL's RS)."""


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


def _write_toy_domains(directory: Path) -> None:
    for name, domain in TOY_DOMAINS.items():
        table = load_dataset(domain.train_source)
        tasks = [json.loads(meta).get("task", "").split(":")[0] for meta in table.column("meta").to_pylist()]
        rows = [index for index, task in enumerate(tasks) if task == domain.task_prefix][:TOY_DOMAIN_TRAIN_ROWS]
        write_mcq(table.take(pa.array(rows, type=pa.int64())), directory / f"{name}-train.parquet")


def toy_domain_dir() -> Path:
    """Folder of the toy domains' training files (built once per toy world into the cache)."""
    key = content_key({"world": toy_world_key(), "rows": TOY_DOMAIN_TRAIN_ROWS, "domains": sorted(TOY_DOMAINS)})
    return cached_dir("toy-continual", key, _write_toy_domains)


def resolve_task(spec: str | Mapping[str, Any] | ContinualTask) -> ContinualTask:
    """A task from a toy domain name or a ``{name, train, test}`` mapping (clear errors otherwise)."""
    if isinstance(spec, ContinualTask):
        return spec
    if isinstance(spec, str):
        if spec not in TOY_DOMAINS:
            raise ValueError(
                f"unknown continual task {spec!r}: toy domains are {', '.join(TOY_DOMAINS)}; "
                "other tasks are written {name, train, test}"
            )
        return ContinualTask(spec, spec, TOY_DOMAINS[spec].test)
    if isinstance(spec, Mapping):
        missing = {"name", "train", "test"} - set(spec)
        extra = set(spec) - {"name", "train", "test"}
        if missing or extra:
            raise ValueError(f"continual task {dict(spec)!r}: expected keys name, train, test")
        return ContinualTask(str(spec["name"]), str(spec["train"]), str(spec["test"]))
    raise ValueError(f"continual task must be a toy domain name or {{name, train, test}}, got {spec!r}")


def load_train_table(task: ContinualTask) -> pa.Table:
    """A task's training table (a toy domain's view is built into the cache on first use)."""
    if task.train in TOY_DOMAINS:
        return load_dataset(toy_domain_dir() / f"{task.train}-train.parquet")
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
