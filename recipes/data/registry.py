"""Dataset names -> files: the names dataset providers make on first use, or any data file path / URL.

    from recipes.data.registry import load_dataset, resolve_dataset
    resolve_dataset("toy-imagenet-vqa")        # <cache>/toy-world/<key>/toy-imagenet-vqa.parquet
    resolve_dataset("/data/imagenet-vqa.parquet")
    table = load_dataset("toy-wiki")

A registered name belongs to a dataset provider (``DatasetProvider``): a package that makes its
datasets on first use and knows them by name, together with its named eval suites
(``recipes.data.suites``) and continual-learning tasks (``recipes.data.continual``). The
providers are the modules that ``PROVIDER_MODULES`` names, each defining ``PROVIDER``; the
registry imports them the first time a name is asked for, so the data contract never imports
them. The one built in is the toy world (``recipes.toyworld.datasets``: its names resolve to
files generated once into ``$FORGETLESS_CACHE``).
"""

from __future__ import annotations

import importlib
import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pyarrow as pa

from recipes.common.storage import exists, is_remote
from recipes.data.readers import read_records

PROVIDER_MODULES = ("recipes.toyworld.datasets",)
"""The dataset providers: modules defining ``PROVIDER``, imported on the first question about a name."""


@dataclass(frozen=True)
class DatasetProvider:
    """Datasets that a package makes on first use and knows by name (what a provider module's ``PROVIDER`` is)."""

    datasets: tuple[str, ...]
    """Registered dataset names, in the order messages list them."""
    dataset_file: Callable[[str], Path]
    """The file of one of ``datasets``, made on first use."""
    suites: Mapping[str, Callable[[], dict[str, list[str]]]] = field(default_factory=dict)
    """Named eval suites: suite name -> its quadrants (quadrant -> registered names)."""
    continual_tasks: Mapping[str, str] = field(default_factory=dict)
    """Named continual-learning tasks: task name -> its test set (a registered name)."""
    continual_train_file: Callable[[str], Path] | None = None
    """The training file of one of ``continual_tasks``, made on first use."""


@cache
def dataset_providers() -> tuple[DatasetProvider, ...]:
    """The ``PROVIDER`` of every module in ``PROVIDER_MODULES`` (imported once, on first use)."""
    return tuple(importlib.import_module(module).PROVIDER for module in PROVIDER_MODULES)


def registered_datasets() -> tuple[str, ...]:
    """Names ``resolve_dataset`` knows without a path."""
    return tuple(name for provider in dataset_providers() for name in provider.datasets)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset name that is neither registered nor an existing file."""


def resolve_dataset(name_or_path: str | os.PathLike) -> Path | str:
    """The file of a registered name (generated if needed), or an existing path; URLs are returned as given."""
    text = str(name_or_path)
    for provider in dataset_providers():
        if text in provider.datasets:
            return provider.dataset_file(text)
    if is_remote(text):
        if not exists(text):
            raise DatasetNotFoundError(f"dataset {text!r}: no such file")
        return text
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise DatasetNotFoundError(
        f"dataset {text!r} is neither a registered name nor an existing file; registered names: {', '.join(registered_datasets())}"
    )


def dataset_name(name_or_path: str | os.PathLike) -> str:
    """The display name of a dataset: its registered name, or its file's stem."""
    text = str(name_or_path)
    if text in registered_datasets():
        return text
    return posixpath.splitext(posixpath.basename(text.rstrip("/")))[0]


def load_dataset(name_or_path: str | os.PathLike, skip_bad: bool = False) -> pa.Table:
    """The validated table (MCQ and free-form records) of a registered name or file (``readers.read_records``)."""
    return read_records(resolve_dataset(name_or_path), skip_bad=skip_bad)
