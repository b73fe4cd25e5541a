"""Evaluation suites: the four quadrants of the 2 x 2 matrix, each a list of datasets.

    from recipes.data.suites import QUADRANTS, load_suite
    suite = load_suite("toy")                  # a named suite: the toy world's (registered names)
    suite = load_suite("suites/paper.yaml")    # a user suite
    for quadrant, dataset in suite.entries():
        table = suite.load(dataset)

A suite file is YAML::

    name: paper
    quadrants:
      id_id: [imagenet-vqa-val.parquet, imagenet-v2-vqa.parquet]
      id_ood: [flowers102.parquet, caltech101.parquet, stanfordcars.parquet]
      ood_id: [imagewikiqa.parquet]
      ood_ood: [mmmu-val.parquet, vmcbench-dev.parquet]

with exactly the four quadrant keys, each a non-empty list of registered names or existing data
files (relative paths are relative to the YAML file). Each dataset's rows name their scorer: MCQ
rows are scored by the evaluation mode (logits, or generate + Listing 1), free-form rows are
generated greedily and scored by the matcher in their ``matcher`` column. An optional
``max_new_tokens: {<dataset name>: N}`` gives a dataset its own generation budget (default:
the evaluation's ``max_new_tokens``). ``Suite.content_hash()`` hashes the datasets' file
contents (for object storage, the store's content tag), so cached zero-shot results are reused
only for identical data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from contract.layout import QUADRANTS
from recipes.common.input_errors import InputError, describe, reading
from recipes.common.redaction import redact
from recipes.common.storage import exists, filesystem, is_remote, open_binary, parent_dir, resolve
from recipes.common.uri_checks import data_uri_problem
from recipes.common.yaml_loading import YamlError, load_yaml_text
from recipes.data.registry import dataset_name, dataset_providers, load_dataset, registered_datasets, resolve_dataset

__all__ = ["QUADRANTS", "Suite", "SuiteError", "load_suite", "named_suite", "named_suites"]


class SuiteError(ValueError):
    """A suite file or definition that breaks the suite format; names the file and key."""


@dataclass(frozen=True)
class Suite:
    """Quadrant -> datasets (registered names, paths or URLs) of one evaluation suite."""

    name: str
    """Suite name (recorded with results)."""
    quadrants: dict[str, list[str]]
    """Exactly the keys of ``QUADRANTS``, each a non-empty list of datasets."""
    max_new_tokens: dict[str, int] = field(default_factory=dict)
    """Generation budget of a dataset (by display name) whose answers are generated; others use the eval's."""

    def __post_init__(self) -> None:
        problems = suite_problems(self.name, self.quadrants)
        names = {dataset_name(dataset) for _, dataset in self.entries()} if not problems else set()
        for key, value in self.max_new_tokens.items():
            if names and key not in names:
                problems.append(f"max_new_tokens.{key}: not a dataset of the suite ({', '.join(sorted(names))})")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"max_new_tokens.{key}: must be an integer >= 1, got {value!r}")
        if problems:
            raise SuiteError(f"suite {self.name!r}: " + "; ".join(problems))

    def entries(self) -> list[tuple[str, str]]:
        """(quadrant, dataset) pairs in quadrant order."""
        return [(quadrant, dataset) for quadrant in QUADRANTS for dataset in self.quadrants[quadrant]]

    def dataset_names(self) -> dict[str, str]:
        """Dataset -> display name (the name used in metrics, ``acc/<name>``)."""
        return {dataset: dataset_name(dataset) for _, dataset in self.entries()}

    def load(self, dataset: str) -> pa.Table:
        """The MCQ table of one of the suite's datasets."""
        return load_dataset(dataset)

    def content_hash(self) -> str:
        """SHA-256 over the quadrants, display names and contents of every dataset (``file_fingerprint``)."""
        digest = hashlib.sha256()
        for quadrant, dataset in self.entries():
            location = str(resolve_dataset(dataset))
            digest.update(f"{quadrant}\0{dataset_name(dataset)}\0{file_fingerprint(location)}\n".encode())
        return digest.hexdigest()


def file_fingerprint(location: str) -> str:
    """What identifies a dataset file's contents: the SHA-256 of a local file's bytes; for object
    storage the store's own content tag (S3's ETag) and size, so nothing is downloaded."""
    if is_remote(location):
        fs, inner = filesystem(location)
        info = fs.info(inner)
        tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("LastModified")
        return f"{str(tag).strip(chr(34))}:{info.get('size')}"
    stat = os.stat(location)
    return _file_sha256(location, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _file_sha256(location: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a local file's bytes (cached per path, size and modification time)."""
    digest = hashlib.sha256()
    with open_binary(location) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def suite_problems(name: object, quadrants: object, where: str = "") -> list[str]:
    """Every problem of a suite definition, each naming its key."""
    problems = []
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}name: must be a non-empty string, got {name!r}")
    if not isinstance(quadrants, dict):
        return problems + [f"{where}quadrants: must be a mapping of {', '.join(QUADRANTS)} to dataset lists"]
    for key in quadrants:
        if key not in QUADRANTS:
            problems.append(f"{where}quadrants.{key}: unknown quadrant; the quadrants are {', '.join(QUADRANTS)}")
    for key in QUADRANTS:
        value = quadrants.get(key)
        if key not in quadrants:
            problems.append(f"{where}quadrants.{key}: missing")
        elif not isinstance(value, list) or not value:
            problems.append(f"{where}quadrants.{key}: must be a non-empty list of datasets, got {value!r}")
        else:
            for index, item in enumerate(value):
                if not isinstance(item, str) or not item.strip():
                    problems.append(f"{where}quadrants.{key}[{index}]: must be a dataset name or path, got {item!r}")
    return problems


def named_suites() -> tuple[str, ...]:
    """Suite names ``load_suite`` knows without a file (the dataset providers' suites: ``toy``)."""
    return tuple(name for provider in dataset_providers() for name in provider.suites)


def named_suite(name: str) -> Suite:
    """A dataset provider's eval suite, by registered names."""
    for provider in dataset_providers():
        if name in provider.suites:
            return Suite(name, provider.suites[name]())
    raise SuiteError(f"{name!r} is not a named suite ({', '.join(named_suites())})")


def _resolve_entry(entry: str, base_dir: str) -> str:
    """Registered names stay names; relative paths become paths relative to the suite file."""
    if entry in registered_datasets() or is_remote(entry) or os.path.isabs(os.path.expanduser(entry)):
        return os.path.expanduser(entry) if not is_remote(entry) else entry
    return resolve(base_dir, entry)


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """A named suite ("toy") or a suite YAML file (validated; errors name the file and key)."""
    text = str(name_or_path)
    if text in named_suites():
        return named_suite(text)
    if is_remote(text):
        try:
            with reading(text), open_binary(text) as handle:
                content = handle.read().decode("utf-8")
        except InputError as error:
            raise SuiteError(str(error)) from None
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise SuiteError(
                f"suite {redact(text)!r} is neither a named suite ({', '.join(named_suites())}) nor an existing YAML file"
            )
        try:
            content = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise SuiteError(f"{text}: {describe(error)}") from None
    try:
        data = load_yaml_text(content)
    except YamlError as error:
        raise SuiteError(f"{redact(text)}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{text}: expected a mapping with keys name and quadrants, got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "quadrants", "max_new_tokens"})
    problems = [f"{key}: unknown key (a suite has name, quadrants and max_new_tokens)" for key in unknown]
    budgets = data.get("max_new_tokens") or {}
    if not isinstance(budgets, dict):
        problems.append(f"max_new_tokens: must be a mapping of dataset name to a token count, got {budgets!r}")
        budgets = {}
    problems += suite_problems(data.get("name"), data.get("quadrants"))
    if problems:
        raise SuiteError(f"{text}: " + "; ".join(problems))
    problems = [
        problem
        for q in QUADRANTS
        for i, entry in enumerate(data["quadrants"][q])
        if (problem := data_uri_problem(f"quadrants.{q}[{i}]", entry))
    ]
    if problems:
        raise SuiteError(f"{text}: " + "; ".join(problems))
    base_dir = parent_dir(text if is_remote(text) else str(Path(text).expanduser()))
    quadrants = {q: [_resolve_entry(entry, base_dir) for entry in data["quadrants"][q]] for q in QUADRANTS}
    missing = [
        f"quadrants.{q}[{i}]: no such dataset {data['quadrants'][q][i]!r} (not a registered name; looked for {entry})"
        for q in QUADRANTS
        for i, entry in enumerate(quadrants[q])
        if entry not in registered_datasets() and not exists(entry)
    ]
    if missing:
        raise SuiteError(f"{text}: " + "; ".join(missing))
    try:
        return Suite(data["name"], quadrants, {str(key): value for key, value in budgets.items()})
    except SuiteError as error:
        raise SuiteError(f"{text}: {error}") from None
