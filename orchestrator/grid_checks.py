"""Checks of a grid file that span fields, and of the names it gives (models, datasets, suites).

``orchestrator.grid`` runs these after the schema (``orchestrator.grid_schema``) has checked
every field on its own; each check returns problems as ``<field path>: <problem>`` texts and
runs on whatever sections are valid, so a file's problems are all reported at once:

    problems = consistency_problems(sections) + reference_problems(sections, check_paths=True)

Names are checked without building anything: a registered name is accepted as it is (toy
models are never built here). With ``check_paths`` the files the grid names must exist on this
machine: local model directories (with a config.json), Hub models in the local Hugging Face
cache, dataset files, suite files (and the dataset files they list) and DeepSpeed JSONs.
Without it, only their form is checked, so a grid meant for a GPU cluster validates anywhere.
Relative paths are relative to the working directory, where trials run.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from contract.layout import format_lr, format_share
from jobs.finetune.config import TRIAL_OWNED_KEYS
from orchestrator.expand import FLOAT_AXES, grid_cells, matches, same_value
from orchestrator.grid_schema import (
    AXIS_KEYS,
    Axes,
    DeepSpeedSettings,
    ContinualSettings,
    EvalSettings,
    ExcludeCell,
    Grid,
    IncludeCell,
    MethodSettings,
    Resources,
    Tracking,
    TrainSettings,
    default_micro_batch_size,
)
from recipes.data.registry import REGISTERED_DATASETS
from recipes.data.suites import NAMED_SUITES, SuiteError, load_suite
from recipes.models.registry import (
    HUB_MODELS,
    REGISTERED_MODELS,
    TOY_BASE,
    TOY_INIT,
    ModelNotFoundError,
    resolve_model_dir,
)
from recipes.storage import file_suffix, is_remote

MCQ_SUFFIXES = (".parquet", ".pq", ".jsonl", ".ndjson")
"""File suffixes of MCQ datasets (``recipes.data.schema.read_mcq``)."""

SUITE_SUFFIXES = (".yaml", ".yml")
"""File suffixes of suite files."""

SUITE_PROBLEM_SEPARATOR = re.compile(r"; (?=quadrants\.|name:)")
"""Where ``load_suite`` joins the problems of a suite file into one message."""

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""The form of a Hugging Face Hub id (org/name)."""


@dataclass(frozen=True)
class GridSections:
    """The sections of a grid that passed the schema; None for a section that did not."""

    name: str | None
    model: str | None
    train: TrainSettings | None
    eval: EvalSettings | None
    axes: Axes | None
    include: list[IncludeCell] | None
    exclude: list[ExcludeCell] | None
    methods: MethodSettings | None
    resources: Resources | None
    storage: str | None
    tracking: Tracking | None
    continual: ContinualSettings | None

    @classmethod
    def of(cls, grid: Grid) -> GridSections:
        return cls(**{name: getattr(grid, name) for name in cls.__dataclass_fields__})


def suggestion(value: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, value: str, registered: Iterable[str], alternative: str) -> str:
    """``unknown <kind> 'x'; did you mean 'y'? (registered: a, b; or <alternative>)``."""
    registered = list(registered)
    listed = ", ".join(registered)
    return f"unknown {kind} {value!r}{suggestion(value, registered)} (registered: {listed}; or {alternative})"


# -- consistency -------------------------------------------------------------------------------


def consistency_problems(s: GridSections) -> list[str]:
    """Problems that involve more than one field."""
    return [
        *_batch_problems(s),
        *_mix_problems(s),
        *_include_problems(s),
        *_exclude_problems(s),
        *_deepspeed_problems(s),
        *_continual_problems(s),
    ]


def batch_problem(
    batch_size: int, micro_batch_size: int | None, workers: int, batch_path: str, micro_path: str
) -> str | None:
    """Why ``batch_size`` cannot be split over ``workers`` (x micro-batches), or None."""
    if micro_batch_size is None:
        if default_micro_batch_size(batch_size, workers) is None:
            return f"{batch_path}: {batch_size} is not a multiple of resources.workers_per_trial ({workers})"
        return None
    if batch_size % (workers * micro_batch_size):
        return (
            f"{batch_path}: {batch_size} is not a multiple of resources.workers_per_trial x {micro_path} "
            f"({workers} x {micro_batch_size})"
        )
    return None


def _batch_problems(s: GridSections) -> list[str]:
    if s.train is None or s.resources is None:
        return []
    workers = s.resources.workers_per_trial
    found = [
        batch_problem(
            s.train.batch_size, s.train.micro_batch_size, workers, "train.batch_size", "train.micro_batch_size"
        )
    ]
    for index, cell in enumerate(s.include or []):
        overrides = cell.train
        if overrides is None or (overrides.batch_size is None and overrides.micro_batch_size is None):
            continue
        where = f"include[{index}].train"
        batch_given, micro_given = overrides.batch_size is not None, overrides.micro_batch_size is not None
        found.append(
            batch_problem(
                overrides.batch_size if batch_given else s.train.batch_size,
                overrides.micro_batch_size if micro_given else s.train.micro_batch_size,
                workers,
                f"{where}.batch_size" if batch_given else "train.batch_size",
                f"{where}.micro_batch_size" if micro_given else "train.micro_batch_size",
            )
        )
    return [text for text in found if text]


def _mix_problems(s: GridSections) -> list[str]:
    if s.train is None:
        return []
    mix = s.train.mix
    problems = []
    seen = [s.train.dataset]
    for index, item in enumerate(mix):
        if item.dataset in seen:
            problems.append(f"train.mix[{index}].dataset: {item.dataset!r} is already in the training data")
        seen.append(item.dataset)
    ratio_axes = []
    if s.axes is not None and s.axes.mix_ratio is not None:
        ratio_axes.append("grid.mix_ratio")
    ratio_axes += [f"include[{i}].mix_ratio" for i, cell in enumerate(s.include or []) if cell.mix_ratio is not None]
    for where in ratio_axes:
        if len(mix) != 1:
            problems.append(f"{where}: needs exactly one dataset in train.mix to set the ratio of, found {len(mix)}")
    if s.axes is None or s.axes.mix_ratio is not None:
        return problems
    for index, item in enumerate(mix):
        if item.ratio is None:
            problems.append(f"train.mix[{index}].ratio: missing required key (or give the grid.mix_ratio axis)")
    total = sum(item.ratio or 0.0 for item in mix)
    if total >= 1:
        problems.append(f"train.mix: ratios sum to {total:g}; they must sum to < 1 (the target dataset gets the rest)")
    return problems


def _include_problems(s: GridSections) -> list[str]:
    problems = []
    for index, cell in enumerate(s.include or []):
        if not cell.model_fields_set:
            problems.append(f"include[{index}]: empty cell; give at least one of {', '.join(AXIS_KEYS)}, lora, train")
        methods = cell.method if cell.method is not None else (s.axes.method if s.axes is not None else None)
        if cell.lora is not None and methods is not None and "lora" not in methods:
            problems.append(
                f"include[{index}].lora: applies to method lora only; this cell's method is {', '.join(methods)}"
            )
    return problems


def axis_values(key: str, axes: Axes, methods: MethodSettings | None) -> list:
    """Every value axis ``key`` takes in the grid (lr: grid.lr and LoRA's own lr axis)."""
    values = list(getattr(axes, key) or [])
    if key == "lr" and methods is not None and methods.lora.lr is not None and "lora" in axes.method:
        values += methods.lora.lr
    return values


def axis_text(key: str, value: object) -> str:
    """An axis value as trial names write it (``1e-05``, ``0.25``)."""
    if key == "lr":
        return format_lr(value)
    return format_share(value) if key in FLOAT_AXES else str(value)


def _exclude_problems(s: GridSections) -> list[str]:
    if s.exclude is None or s.axes is None or s.methods is None:
        return []
    cells = list(grid_cells(s.axes, s.methods))
    problems = []
    for index, cell in enumerate(s.exclude):
        given = cell.given()
        if not given:
            problems.append(f"exclude[{index}]: empty cell; it would remove every trial of the grid")
            continue
        unknown = _values_outside_axes(f"exclude[{index}]", given, s.axes, s.methods)
        problems += unknown
        if not unknown and not any(matches(values, cell) for values in cells):
            problems.append(f"exclude[{index}]: matches no trial of the grid")
    return problems


def _values_outside_axes(where: str, given: dict[str, list], axes: Axes, methods: MethodSettings | None) -> list[str]:
    problems = []
    for key, values in given.items():
        known = axis_values(key, axes, methods)
        if not known:
            problems.append(f"{where}.{key}: the grid has no {key} axis")
            continue
        for position, value in enumerate(values):
            if not any(same_value(key, value, other) for other in known):
                listed = ", ".join(axis_text(key, other) for other in known)
                shown_value = axis_text(key, value)
                problems.append(
                    f"{where}.{key}[{position}]: {shown_value} is not a value of the grid's {key} axis ({listed})"
                )
    return problems


def _continual_problems(s: GridSections) -> list[str]:
    """A continual grid takes its data from its tasks and merges whole weights (IncLoRA)."""
    if s.continual is None:
        return []
    problems = []
    if s.continual.method and s.axes is not None and "method" in s.axes.model_fields_set:
        problems.append("continual.method: sets the method axis; remove grid.method (inclora = lora, seqfull = full)")
    if s.axes is not None and (s.axes.mix_ratio is not None or s.axes.data_fraction != [1.0]):
        problems.append("continual: trials take their data from the tasks; remove grid.data_fraction and grid.mix_ratio")
    if s.train is not None and s.train.mix:
        problems.append("continual: trials take their data from the tasks; remove train.mix")
    if s.train is not None and (s.train.deepspeed.config is not None or s.train.deepspeed.zero_stage == 3):
        problems.append(
            "continual: needs train.deepspeed {zero_stage: 0, 1 or 2} (IncLoRA merges whole weights after each task)"
        )
    names = [task if isinstance(task, str) else task.name for task in s.continual.tasks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        problems.append(f"continual.tasks: task names must be unique; repeated: {', '.join(repeated)}")
    return problems


def _deepspeed_problems(s: GridSections) -> list[str]:
    if s.train is None:
        return []
    settings: DeepSpeedSettings = s.train.deepspeed
    if settings.config is not None and "zero_stage" in settings.model_fields_set:
        return ["train.deepspeed: give zero_stage or the path of a DeepSpeed JSON (config), not both"]
    return []


# -- names and paths ---------------------------------------------------------------------------


def reference_problems(s: GridSections, check_paths: bool) -> list[str]:
    """Problems with the models, datasets, suites and files the grid names."""
    problems = []
    if s.model is not None:
        problems += model_problems(s.model, check_paths)
    if s.train is not None:
        problems += dataset_problems("train.dataset", s.train.dataset, check_paths)
        for index, item in enumerate(s.train.mix):
            problems += dataset_problems(f"train.mix[{index}].dataset", item.dataset, check_paths)
        if check_paths and s.train.deepspeed.config is not None:
            problems += deepspeed_file_problems(s.train.deepspeed.config)
    if s.eval is not None:
        problems += suite_problems(s.eval.suite, check_paths)
    if s.continual is not None:
        for index, task in enumerate(s.continual.tasks):
            if not isinstance(task, str):
                for key in ("train", "test"):
                    where = f"continual.tasks[{index}].{key}"
                    problems += dataset_problems(where, getattr(task, key), check_paths)
    if check_paths and s.storage is not None and not is_remote(s.storage) and Path(s.storage).expanduser().is_file():
        problems.append(f"storage: {s.storage!r} is a file, not a folder")
    problems += credential_problems("storage", s.storage)
    problems += credential_problems("tracking.uri", s.tracking.uri if s.tracking else None)
    return problems


SECRET_QUERY_KEYS = ("token", "key", "secret", "password", "signature", "sig", "credential")
"""Query parameters that carry credentials in URIs (access tokens, signed-URL signatures)."""


def credential_problems(where: str, uri: str | None) -> list[str]:
    """A URI with credentials in it would reach logs and MLflow; they belong in the environment."""
    if not uri or "://" not in uri:
        return []
    parts = urlsplit(uri)
    query_keys = [key.lower() for key, _ in parse_qsl(parts.query)]
    if parts.password or parts.username or any(secret in key for key in query_keys for secret in SECRET_QUERY_KEYS):
        return [
            f"{where}: contains credentials; remove them and use the environment instead "
            "(MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN; AWS keys, a profile or an "
            "instance role for s3://)"
        ]
    return []


def looks_like_path(value: str) -> bool:
    """Whether a name is written as a path (absolute, ./, ../, ~, file://, or several folders)."""
    return value.startswith(("/", "./", "../", "~", "file://")) or value.count("/") > 1


def _local_path(value: str) -> Path:
    return Path(value.removeprefix("file://")).expanduser()


def _missing_file(where: str, value: str) -> str:
    place = "" if _local_path(value).is_absolute() else f" (relative to {os.getcwd()})"
    return f"{where}: no such file {value!r}{place}"


def model_problems(model: str, check_paths: bool) -> list[str]:
    """A registered model name, a local model directory, or a Hub id (org/name)."""
    if model in REGISTERED_MODELS and model not in HUB_MODELS:
        return []  # a toy model: built on first use, never here
    if model not in REGISTERED_MODELS and not looks_like_path(model) and not HUB_ID.fullmatch(model):
        return [
            "model: " + unknown_name("model", model, REGISTERED_MODELS, "a local model directory or a Hub id org/name")
        ]
    if not check_paths or model in (TOY_BASE, TOY_INIT):
        return []
    try:
        resolve_model_dir(model)
    except ModelNotFoundError as error:
        return [f"model: {error}"]
    return []


def dataset_problems(where: str, value: str, check_paths: bool) -> list[str]:
    """A registered dataset name or an MCQ file (local or URL)."""
    if value in REGISTERED_DATASETS:
        return []
    if not (file_suffix(value) in MCQ_SUFFIXES or looks_like_path(value) or "/" in value or is_remote(value)):
        alternative = f"the path of an MCQ file: {', '.join(MCQ_SUFFIXES)}"
        return [f"{where}: " + unknown_name("dataset", value, REGISTERED_DATASETS, alternative)]
    if file_suffix(value) not in MCQ_SUFFIXES:
        return [f"{where}: {value!r} is not an MCQ file; expected {', '.join(MCQ_SUFFIXES)}"]
    if check_paths and not is_remote(value) and not _local_path(value).is_file():
        return [_missing_file(where, value)]
    return []


def suite_problems(value: str, check_paths: bool) -> list[str]:
    """A named suite, or a suite YAML that loads, with its datasets on this machine (with ``check_paths``)."""
    if value in NAMED_SUITES:
        return []
    if file_suffix(value) not in SUITE_SUFFIXES:
        return ["eval.suite: " + unknown_name("suite", value, NAMED_SUITES, "the path of a suite YAML file")]
    if not check_paths or is_remote(value):
        return []
    if not _local_path(value).is_file():
        return [_missing_file("eval.suite", value)]
    try:
        load_suite(value)
    except SuiteError as error:
        message = str(error).removeprefix(f"{value}: ")
        return [f"eval.suite: {value}: {item}" for item in SUITE_PROBLEM_SEPARATOR.split(message)]
    return []


def deepspeed_file_problems(path: str) -> list[str]:
    """A DeepSpeed JSON that exists, holds an object, and leaves the optimizer and schedule to the trial."""
    if not _local_path(path).is_file():
        return [_missing_file("train.deepspeed", path)]
    try:
        config = json.loads(_local_path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return [f"train.deepspeed: {path}: not valid JSON ({error})"]
    if not isinstance(config, dict):
        return [f"train.deepspeed: {path}: expected a JSON object, got {type(config).__name__}"]
    owned = [key for key in TRIAL_OWNED_KEYS if key in config]
    if owned:
        return [
            f"train.deepspeed: {path}: remove {', '.join(owned)}; the trial sets AdamW and the "
            "learning-rate schedule from the grid (lr, warmup_ratio, schedule)"
        ]
    return []
