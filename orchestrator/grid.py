"""Read and validate a grid file (``orchestrator/grid_schema.py``): every problem at once, before any compute.

    from orchestrator.grid import GridError, load_grid
    try:
        grid = load_grid("grids/demo.yaml")                           # a validated Grid
        grid = load_grid("grids/paper-table1.yaml", check_paths=False)  # for another machine
    except GridError as error:
        print(error)            # the file name, then one "<field path>: <problem>" per line
        error.problems          # the same problems as a list

Each problem names its field with list indices (``grid.lr[1]: must be > 0``,
``train.stpes: unknown key; did you mean 'steps'?``). The file is read safely and within
bounds (``recipes.common.yaml_loading``: no alias bombs, no deep nesting); YAML syntax errors give their
line and column, and a key written twice in one mapping is a
problem too (YAML would silently keep the last one).

``check_paths`` (default True) makes the files the grid names (model directories, Hub models in
the local cache, dataset and suite files, DeepSpeed JSONs) exist on this machine; the sweep
checks them where it runs. ``check_paths=False`` (the sweep's ``--no-check-paths``) checks
only what needs no files: schema, consistency, registered names and the form of paths, so a
grid meant for a GPU cluster can be validated and dry-run on a laptop.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from jobs.finetune.config import problem_message
from orchestrator.capacity import DEFAULT_MAX_TRIALS, trial_count_problem
from orchestrator.expand import grid_axes, grid_cells, matches
from orchestrator.grid_checks import GridSections, consistency_problems, reference_problems
from orchestrator.grid_schema import Grid, shown
from recipes.common.yaml_loading import YamlError, compose_yaml_text, load_yaml_text

__all__ = ["Grid", "GridError", "load_grid", "parse_grid"]

DICT_SOURCE = "<grid>"
"""The name problems carry when a grid is parsed from a mapping rather than a file."""


class GridError(ValueError):
    """A grid file with problems: ``problems`` lists them, the message is the file then one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join([f"{source}:", *(f"  {text}" for text in self.problems)]))


def load_grid(path: str | os.PathLike, *, check_paths: bool = True, max_trials: int = DEFAULT_MAX_TRIALS) -> Grid:
    """The validated grid in ``path``; raises GridError listing every problem."""
    source = str(path)
    data = read_grid_file(source)
    return parse_grid(data, source=source, check_paths=check_paths, max_trials=max_trials)


def parse_grid(
    data: Any, *, source: str = DICT_SOURCE, check_paths: bool = True, max_trials: int = DEFAULT_MAX_TRIALS
) -> Grid:
    """The validated grid of a mapping (what the YAML file holds); raises GridError.

    A grid that may expand to more than ``max_trials`` trials is a problem (and is never expanded).
    """
    if not isinstance(data, dict):
        raise GridError(
            source,
            [f"top level: expected a mapping of the grid's sections (name, model, grid, ...), got {_kind(data)}"],
        )
    grid, errors = _schema(data)
    problems = [schema_problem(error) for error in errors]
    cleaned, dropped = _without_bad_values(data, errors)
    sections = GridSections.of(grid) if grid is not None else _valid_sections(cleaned)
    too_many = trial_count_problem(sections.axes, sections.methods, sections.include, sections.continual, max_trials)
    if too_many:
        problems.append(too_many)
        sections = dataclasses.replace(sections, exclude=None)  # checking excludes walks every cell
    cross = consistency_problems(sections) + reference_problems(sections, check_paths)
    problems += [text for text in cross if not any(text.startswith(path) for path in dropped)]
    if grid is not None and not problems:
        problems += _empty_grid_problems(grid)
    if problems:
        raise GridError(source, list(dict.fromkeys(problems)))
    grid._source = source
    return grid


# -- reading -------------------------------------------------------------------------------------


def read_grid_file(source: str) -> Any:
    """The YAML content of a grid file; GridError for a missing, empty or malformed file."""
    path = Path(source).expanduser()
    if not path.exists():
        raise GridError(source, ["no such file"])
    if path.is_dir():
        raise GridError(source, ["is a directory, not a grid file"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GridError(source, [f"cannot be read as text: {error}"]) from None
    try:
        duplicates = duplicate_keys(compose_yaml_text(text))
        data = load_yaml_text(text)
    except YamlError as error:
        raise GridError(source, [str(error)]) from None
    if data is None:
        raise GridError(source, ["the file is empty"])
    if duplicates:
        raise GridError(source, duplicates)
    return data


def duplicate_keys(node: yaml.Node | None, path: str = "") -> list[str]:
    """``<path>: duplicate key (lines a and b)`` for every key repeated within one YAML mapping."""
    if isinstance(node, yaml.SequenceNode):
        return [
            problem for index, item in enumerate(node.value) for problem in duplicate_keys(item, f"{path}[{index}]")
        ]
    if not isinstance(node, yaml.MappingNode):
        return []
    problems, lines = [], {}
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
        child = f"{path}.{key}" if path else key
        line = key_node.start_mark.line + 1
        if key in lines:
            problems.append(f"{child}: duplicate key (lines {lines[key]} and {line}); YAML would keep only the last")
        lines[key] = line
        problems += duplicate_keys(value_node, child)
    return problems


def _kind(value: Any) -> str:
    kinds = {
        list: "a list",
        str: "a string",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return kinds.get(type(value), type(value).__name__)


# -- schema problems -----------------------------------------------------------------------------


def _schema(data: dict) -> tuple[Grid | None, list[dict]]:
    try:
        return Grid.model_validate(data), []
    except ValidationError as error:
        return None, error.errors(include_url=False)


def field_path(location: tuple) -> str:
    """``("grid", "lr", 1)`` -> ``grid.lr[1]``."""
    text = ""
    for key in location:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def schema_problem(error: dict) -> str:
    """One pydantic error as ``<field path>: <problem>``."""
    location, kind = error["loc"], error["type"]
    if kind == "extra_forbidden":
        message = _unknown_key(location)
    elif kind == "too_short":
        message = "must not be empty"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"expected a mapping, got {shown(error['input'])}"
    elif kind == "list_type":
        message = f"expected a list, got {shown(error['input'])}"
    else:
        message = problem_message(error)
    return f"{field_path(location)}: {message}" if location else message


def _unknown_key(location: tuple) -> str:
    keys = _valid_keys(location[:-1])
    close = difflib.get_close_matches(str(location[-1]), keys, n=1)
    return f"unknown key; did you mean {close[0]!r}?" if close else f"unknown key (valid keys: {', '.join(keys)})"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``list[X]``, ``X | None``, ``Annotated[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _valid_keys(location: tuple) -> list[str]:
    """The keys of the section at ``location`` (as written in the file)."""
    model: type[BaseModel] | None = Grid
    for key in location:
        if isinstance(key, int) or model is None:
            continue
        by_key = {info.alias or name: info for name, info in model.model_fields.items()}
        model = _model_in(by_key[key].annotation) if key in by_key else None
    return [info.alias or name for name, info in model.model_fields.items()] if model else []


def _without_bad_values(data: dict, errors: list[dict]) -> tuple[dict, set[str]]:
    """A copy of ``data`` without the fields the schema rejected, and their paths.

    Without them a section may pass on its own (taking defaults), so the checks across sections
    still run; problems those checks find in a dropped field are left out (the field's own
    problem is reported).
    """
    cleaned = copy.deepcopy(data)
    dropped = set()
    for error in errors:
        location = error["loc"]
        keys = list(location[: 2 if error["type"] != "extra_forbidden" else len(location)])
        if len(keys) < 2 or not all(isinstance(key, str) for key in keys[:2]):
            continue
        *parents, key = keys
        container: Any = cleaned
        try:
            for step in parents:
                container = container[step]
            container.pop(key, None)
        except (KeyError, IndexError, TypeError, AttributeError):
            continue  # a location this grid's data does not have as written; nothing to drop
        dropped.add(field_path(tuple(keys)))
    return cleaned, dropped


def _valid_sections(data: dict) -> GridSections:
    """The sections of ``data`` that pass the schema on their own (None for the others)."""
    values = {}
    for name, info in Grid.model_fields.items():
        if name not in GridSections.__dataclass_fields__:
            continue
        key = info.alias or name
        if key not in data:
            values[name] = None if info.is_required() else info.get_default(call_default_factory=True)
            continue
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        try:
            values[name] = TypeAdapter(annotation).validate_python(data[key])
        except ValidationError:
            values[name] = None
    return GridSections(**values)


def _empty_grid_problems(grid: Grid) -> list[str]:
    """A grid whose excludes remove every cell and that has no include cells has no trials."""
    cells = grid_cells(grid_axes(grid), grid.methods)
    if grid.include or any(not any(matches(cell, partial) for partial in grid.exclude) for cell in cells):
        return []
    return ["exclude: removes every trial of the grid and there are no include cells"]
