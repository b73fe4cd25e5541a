"""Checks of the names and files a trial is given: models, datasets, suites, DeepSpeed JSONs.

The grid's checks (``orchestrator.grid_checks``) and ``python -m jobs.finetune`` both use
these, so a name or a file is refused the same way from either; each returns problems as
``<where>: <problem>`` texts:

    model_problems("no-such-model", check_paths=True)                     # ["model: unknown model ..."]
    dataset_problems("train.dataset", "data/x.jsonl", check_paths=True)  # ["train.dataset: no such file ..."]

Names are checked without building anything: a registered name is accepted as it is (toy
models are never built here). With ``check_paths`` the files must exist on this machine: local
model directories (with a config.json), dataset files, suite files (and the dataset files they
list) and DeepSpeed JSONs; a Hub model not in the local Hugging Face cache is accepted (each node
downloads it before its workers load it) unless ``HF_HUB_OFFLINE=1``. Without it, only their form
is checked. Relative paths are relative to the working directory, where trials run.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from jobs.finetune.config import TRIAL_OWNED_KEYS
from recipes.common.json_loading import parse_json
from recipes.common.redaction import redact
from recipes.common.storage import file_suffix, is_remote
from recipes.common.uri_checks import data_uri_problem
from recipes.data.readers import read_records_sample
from recipes.data.registry import registered_datasets
from recipes.data.schema import RecordFormatError
from recipes.data.suites import SuiteError, load_suite, named_suites
from recipes.models.catalog import (
    HUB_MODELS,
    REGISTERED_MODELS,
    TOY_BASE,
    TOY_INIT,
    ModelNotCachedError,
    ModelNotFoundError,
    resolve_model_dir,
)
from recipes.models.shapes import parse_shape_name

MCQ_SUFFIXES = (".parquet", ".pq", ".jsonl", ".ndjson")
"""File suffixes of MCQ datasets (``recipes.data.readers.read_records``)."""

SUITE_SUFFIXES = (".yaml", ".yml")
"""File suffixes of suite files."""

SUITE_PROBLEM_SEPARATOR = re.compile(r"; (?=quadrants\.|name:)")
"""Where ``load_suite`` joins the problems of a suite file into one message."""

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""The form of a Hugging Face Hub id (org/name)."""


def suggestion(value: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, value: str, registered: Iterable[str], alternative: str) -> str:
    """``unknown <kind> 'x'; did you mean 'y'? (registered: a, b; or <alternative>)``."""
    registered = list(registered)
    listed = ", ".join(registered)
    return f"unknown {kind} {value!r}{suggestion(value, registered)} (registered: {listed}; or {alternative})"


def looks_like_path(value: str) -> bool:
    """Whether a name is written as a path (absolute, ./, ../, ~, file://, or several folders)."""
    return value.startswith(("/", "./", "../", "~", "file://")) or value.count("/") > 1


def _local_path(value: str) -> Path:
    return Path(value.removeprefix("file://")).expanduser()


def _missing_file(where: str, value: str) -> str:
    place = "" if _local_path(value).is_absolute() else f" (relative to {os.getcwd()})"
    return f"{where}: no such file {value!r}{place}"


def model_problems(model: str, check_paths: bool, where: str = "model") -> list[str]:
    """A registered model name, a shape model (``qwen2.5-vl-3b@layers=2``), a local model directory, or a Hub id."""
    try:
        if parse_shape_name(model) is not None:
            return []  # a shape model: built on first use, never here
    except ValueError as error:
        return [f"{where}: {error}"]
    if model in REGISTERED_MODELS and model not in HUB_MODELS:
        return []  # a toy model: built on first use, never here
    if model not in REGISTERED_MODELS and not looks_like_path(model) and not HUB_ID.fullmatch(model):
        return [
            f"{where}: "
            + unknown_name("model", model, REGISTERED_MODELS, "a local model directory or a Hub id org/name")
        ]
    if not check_paths or model in (TOY_BASE, TOY_INIT):
        return []
    try:
        resolve_model_dir(model)
    except ModelNotCachedError:
        return []  # a Hub model not cached here: downloaded on each node that loads it, never while validating
    except ModelNotFoundError as error:
        return [f"{where}: {error}"]
    return []


def dataset_problems(where: str, value: str, check_paths: bool) -> list[str]:
    """A registered dataset name or an MCQ file (local or URL, without credentials)."""
    if value in registered_datasets():
        return []
    uri = data_uri_problem(where, value)
    if uri:
        return [uri]
    if not (file_suffix(value) in MCQ_SUFFIXES or looks_like_path(value) or "/" in value or is_remote(value)):
        alternative = f"the path of an MCQ file: {', '.join(MCQ_SUFFIXES)}"
        return [f"{where}: " + unknown_name("dataset", value, registered_datasets(), alternative)]
    if file_suffix(value) not in MCQ_SUFFIXES:
        return [f"{where}: {value!r} is not an MCQ file; expected {', '.join(MCQ_SUFFIXES)}"]
    if check_paths and not is_remote(value) and not _local_path(value).is_file():
        return [_missing_file(where, value)]
    if check_paths and not is_remote(value):
        return rows_problems(where, value)
    return []


def rows_problems(where: str, value: str) -> list[str]:
    """A local MCQ file's schema and a sample of its rows, read as a sweep reads them before it starts.

    A plan or dry-run that passes a grid is then a sweep that starts: a file that is not parquet,
    not UTF-8, nested too deep, or with bad rows is refused here, with the file and row named.
    """
    try:
        read_records_sample(str(_local_path(value)))
    except (RecordFormatError, OSError, ValueError) as error:  # InputError is a ValueError
        return [f"{where}: {redact(str(error))}"]
    return []


def suite_problems(value: str, check_paths: bool, where: str = "eval.suite") -> list[str]:
    """A named suite, or a suite YAML that loads, with its datasets on this machine (with ``check_paths``)."""
    if value in named_suites():
        return []
    uri = data_uri_problem(where, value)
    if uri:
        return [uri]
    if file_suffix(value) not in SUITE_SUFFIXES:
        return [f"{where}: " + unknown_name("suite", value, named_suites(), "the path of a suite YAML file")]
    if not check_paths or is_remote(value):
        return []
    if not _local_path(value).is_file():
        return [_missing_file(where, value)]
    try:
        load_suite(value)
    except SuiteError as error:
        message = str(error).removeprefix(f"{value}: ")
        return [f"{where}: {value}: {item}" for item in SUITE_PROBLEM_SEPARATOR.split(message)]
    return []


def deepspeed_file_problems(path: str, where: str = "train.deepspeed") -> list[str]:
    """A DeepSpeed JSON that exists, holds an object, and leaves the optimizer and schedule to the trial."""
    if not _local_path(path).is_file():
        return [_missing_file(where, path)]
    try:
        config = parse_json(_local_path(path).read_bytes())
    except (OSError, ValueError) as error:  # not UTF-8, not JSON, nested too deep
        return [f"{where}: {path}: not valid JSON ({error})"]
    if not isinstance(config, dict):
        return [f"{where}: {path}: expected a JSON object, got {type(config).__name__}"]
    owned = [key for key in TRIAL_OWNED_KEYS if key in config]
    if owned:
        return [
            f"{where}: {path}: remove {', '.join(owned)}; the trial sets AdamW and the "
            "learning-rate schedule from the grid (lr, warmup_ratio, schedule)"
        ]
    return []


LAST_BLOCKS = re.compile(r"vision\.last(\d+)")
"""The ``vision.last<N>`` part: the last N blocks of the vision encoder."""


def vision_depth(model: str) -> int | None:
    """Blocks of ``model``'s vision encoder, read from its config (None when the config is not on this machine)."""
    if model in (TOY_BASE, TOY_INIT):
        from recipes.toyworld.model import (
            ToyModelConfig,  # local: loads torch, which validating a grid otherwise does not
        )

        return ToyModelConfig().vision_depth
    try:
        shape = parse_shape_name(model)
        if shape is not None:
            return shape.vision_layers
        directory = resolve_model_dir(model)
        config = parse_json((directory / "config.json").read_bytes())
    except (ModelNotFoundError, OSError, ValueError):
        return None
    vision = (config.get("vision_config") if isinstance(config, dict) else None) or {}
    depth = vision.get("depth", vision.get("num_hidden_layers")) if isinstance(vision, dict) else None
    return depth if isinstance(depth, int) else None


def parts_problems(where: str, parts: str, model: str, check_paths: bool) -> list[str]:
    """``vision.last<N>`` deeper than the model's vision encoder (when its config can be read here)."""
    counts = [int(match.group(1)) for match in LAST_BLOCKS.finditer(parts)]
    if not counts:
        return []
    known_here = model in (TOY_BASE, TOY_INIT) or "@" in model  # toy and shape models need no files
    depth = vision_depth(model) if check_paths or known_here else None
    if depth is None:
        return []
    return [
        f"{where}: vision.last{count}: {model}'s vision encoder has {depth} blocks, use vision.last1..{depth}"
        for count in counts
        if not 1 <= count <= depth
    ]
