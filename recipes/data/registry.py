"""Dataset names -> files: the toy world's registered names (MCQ and free-form), or any data file path / URL.

    from recipes.data.registry import load_dataset, resolve_dataset
    resolve_dataset("toy-imagenet-vqa")        # <cache>/toy-world/<key>/toy-imagenet-vqa.parquet
    resolve_dataset("/data/imagenet-vqa.parquet")
    table = load_dataset("toy-wiki")

A registered name resolves to a file of the toy world, which is generated on first use into
``$FORGETLESS_CACHE/toy-world/<key>/`` (default cache ``~/.cache/forgetless``). The key is a
content hash of the generator version and its parameters; generation goes to a temporary
folder renamed into place under a lock, so processes that race to build it all end up using
the one result (``recipes.cache.cached_dir``). The free-form toy datasets
(``recipes.data.toy_freeform``) live in a folder of their own next to it. ``FORGETLESS_TOY_SIZE`` (small|default) and
``FORGETLESS_TOY_SEED`` choose the toy world the names resolve to (default: default, 0).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pyarrow as pa

from recipes.cache import cached_dir, content_key
from recipes.data.schema import read_mcq
from recipes.storage import exists, is_remote
from recipes.data.toy_freeform import FREEFORM_VERSION, TOY_FREEFORM_NAMES, generate_toy_freeform
from recipes.data.toy_world import TOY_DATASET_NAMES, ToyWorldConfig, generate_toy_world

TOY_SIZE_ENV = "FORGETLESS_TOY_SIZE"
"""Environment variable choosing the toy world's size (small | default)."""
TOY_SEED_ENV = "FORGETLESS_TOY_SEED"
"""Environment variable choosing the toy world's seed (default 0)."""
TOY_WORLD_KIND = "toy-world"
"""Cache folder of the generated toy worlds."""
TOY_FREEFORM_KIND = "toy-freeform"
"""Cache folder of the toy world's free-form datasets (``recipes.data.toy_freeform``)."""

REGISTERED_DATASETS = TOY_DATASET_NAMES + TOY_FREEFORM_NAMES
"""Names ``resolve_dataset`` knows without a path."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset name that is neither registered nor an existing file."""


def toy_world_config() -> ToyWorldConfig:
    """The toy world registered names resolve to (from the environment, see the module docstring)."""
    size = os.environ.get(TOY_SIZE_ENV) or "default"
    seed_text = os.environ.get(TOY_SEED_ENV) or "0"
    try:
        seed = int(seed_text)
    except ValueError as error:
        raise ValueError(f"{TOY_SEED_ENV} must be an integer, got {seed_text!r}") from error
    try:
        return ToyWorldConfig(seed=seed, size=size)
    except ValueError as error:
        raise ValueError(f"{error} (from ${TOY_SIZE_ENV} / ${TOY_SEED_ENV})") from error


def toy_world_key(config: ToyWorldConfig | None = None) -> str:
    """Content hash of a toy world's generator version and parameters (its cache key)."""
    return content_key((config or toy_world_config()).describe())


def toy_world_dir(config: ToyWorldConfig | None = None) -> Path:
    """The folder of the toy world, generated into the cache on first use."""
    config = config or toy_world_config()
    return cached_dir(TOY_WORLD_KIND, toy_world_key(config), lambda tmp: generate_toy_world(tmp, config))


def toy_freeform_dir(config: ToyWorldConfig | None = None) -> Path:
    """The folder of the toy world's free-form datasets, generated into the cache on first use."""
    config = config or toy_world_config()
    key = content_key({"world": toy_world_key(config), "freeform_version": FREEFORM_VERSION})
    return cached_dir(TOY_FREEFORM_KIND, key, lambda tmp: generate_toy_freeform(tmp, config))


def resolve_dataset(name_or_path: str | os.PathLike) -> Path | str:
    """The file of a registered name (generated if needed), or an existing path; URLs are returned as given."""
    text = str(name_or_path)
    if text in TOY_FREEFORM_NAMES:
        return toy_freeform_dir() / f"{text}.parquet"
    if text in REGISTERED_DATASETS:
        return toy_world_dir() / f"{text}.parquet"
    if is_remote(text):
        if not exists(text):
            raise DatasetNotFoundError(f"dataset {text!r}: no such file")
        return text
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise DatasetNotFoundError(
        f"dataset {text!r} is neither a registered name nor an existing file; registered names: {', '.join(REGISTERED_DATASETS)}"
    )


def dataset_name(name_or_path: str | os.PathLike) -> str:
    """The display name of a dataset: its registered name, or its file's stem."""
    text = str(name_or_path)
    if text in REGISTERED_DATASETS:
        return text
    return posixpath.splitext(posixpath.basename(text.rstrip("/")))[0]


def load_dataset(name_or_path: str | os.PathLike, skip_bad: bool = False) -> pa.Table:
    """The validated table (MCQ and free-form records) of a registered name or file (``schema.read_mcq``)."""
    return read_mcq(resolve_dataset(name_or_path), skip_bad=skip_bad)
