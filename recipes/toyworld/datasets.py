"""The toy world's datasets by name, made on first use into the cache: its dataset provider.

    from recipes.toyworld.datasets import toy_world_dir, toy_world_key
    toy_world_dir()                            # <cache>/toy-world/<key>/ (generated on first use)
    toy_world_key(ToyWorldConfig(size="small"))
    resolve_dataset("toy-imagenet-vqa")        # recipes.data.registry, through PROVIDER below

The world's registered names (MCQ and free-form), its eval suite (``toy``) and its
continual-learning domains (``toy-cl-*``) resolve here. ``PROVIDER`` is what the data registry
(``recipes.data.registry``) knows the toy world by; the registry imports this module the first
time it is asked about a name, so the data contract never imports the toy world.

The toy world is generated on first use into ``$FORGETLESS_CACHE/toy-world/<key>/`` (default
cache ``~/.cache/forgetless``). The key is a content hash of the generator version and its
parameters; generation goes to a temporary folder renamed into place under a lock, so processes
that race to build it all end up using the one result (``recipes.common.cache.cached_dir``). The
free-form toy datasets (``recipes.toyworld.freeform``) live in a folder of their own next to it.
``FORGETLESS_TOY_SIZE`` (small|default) and ``FORGETLESS_TOY_SEED`` choose the toy world the
names resolve to (default: default, 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from recipes.common.cache import cached_dir, content_key
from recipes.data.registry import DatasetProvider, load_dataset
from recipes.data.writers import write_records
from recipes.toyworld.freeform import FREEFORM_VERSION, TOY_FREEFORM_NAMES, generate_toy_freeform
from recipes.toyworld.world import TOY_DATASET_NAMES, ToyWorldConfig, generate_toy_world, suite_spec

TOY_SIZE_ENV = "FORGETLESS_TOY_SIZE"
"""Environment variable choosing the toy world's size (small | default)."""
TOY_SEED_ENV = "FORGETLESS_TOY_SEED"
"""Environment variable choosing the toy world's seed (default 0)."""
TOY_WORLD_KIND = "toy-world"
"""Cache folder of the generated toy worlds."""
TOY_FREEFORM_KIND = "toy-freeform"
"""Cache folder of the toy world's free-form datasets (``recipes.toyworld.freeform``)."""


def toy_world_config() -> ToyWorldConfig:
    """The toy world registered names resolve to (from the environment, see the module docstring)."""
    size = os.environ.get(TOY_SIZE_ENV) or "default"
    seed_text = os.environ.get(TOY_SEED_ENV) or "0"
    try:
        seed = int(seed_text)
    except ValueError:
        raise ValueError(f"{TOY_SEED_ENV} must be an integer, got {seed_text[:40]!r}") from None
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


def toy_dataset_file(name: str) -> Path:
    """The file of a registered toy dataset (its folder generated on first use)."""
    if name in TOY_FREEFORM_NAMES:
        return toy_freeform_dir() / f"{name}.parquet"
    return toy_world_dir() / f"{name}.parquet"


def toy_suite_quadrants() -> dict[str, list[str]]:
    """The toy eval suite's quadrants, by registered names (``suite.yaml`` names their files)."""
    return {q: [Path(f).stem for f in files] for q, files in suite_spec()["quadrants"].items()}


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


def _write_toy_domains(directory: Path) -> None:
    for name, domain in TOY_DOMAINS.items():
        table = load_dataset(domain.train_source)
        tasks = [json.loads(meta).get("task", "").split(":")[0] for meta in table.column("meta").to_pylist()]
        rows = [index for index, task in enumerate(tasks) if task == domain.task_prefix][:TOY_DOMAIN_TRAIN_ROWS]
        write_records(table.take(pa.array(rows, type=pa.int64())), directory / f"{name}-train.parquet")


def toy_domain_dir() -> Path:
    """Folder of the toy domains' training files (built once per toy world into the cache)."""
    key = content_key({"world": toy_world_key(), "rows": TOY_DOMAIN_TRAIN_ROWS, "domains": sorted(TOY_DOMAINS)})
    return cached_dir("toy-continual", key, _write_toy_domains)


def toy_domain_train_file(name: str) -> Path:
    """The training file of a toy domain (the domains' folder built on first use)."""
    return toy_domain_dir() / f"{name}-train.parquet"


PROVIDER = DatasetProvider(
    datasets=TOY_DATASET_NAMES + TOY_FREEFORM_NAMES,
    dataset_file=toy_dataset_file,
    suites={suite_spec()["name"]: toy_suite_quadrants},
    continual_tasks={name: domain.test for name, domain in TOY_DOMAINS.items()},
    continual_train_file=toy_domain_train_file,
)
"""The toy world as the data registry sees it: its datasets, the ``toy`` suite and the toy domains."""
