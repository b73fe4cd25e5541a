"""A validated grid -> its trials: one ``TrialConfig`` per cell, each with a stable id.

    from orchestrator.grid import load_grid
    from orchestrator.expand import expand_trials
    for trial in expand_trials(load_grid("grids/demo.yaml")):
        print(trial.name, trial.trial_id)          # llm-full-lr0.001-f1.0-s0 3f2a9c0d1e7b

The trials are, in this order: the cartesian product of the grid's axes (parts, method, lr,
data_fraction, mix_ratio, seed; seeds innermost), where method lora cells take LoRA's own
``methods.lora.lr`` when given, minus the cells an ``exclude`` entry matches; then every
``include`` cell, whose missing axes take all the grid's values and whose ``lora`` and
``train`` settings override the grid's. Trials with the same id (the same resolved settings)
collapse into the first one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import product
from typing import Any

from jobs.finetune.config import TrialConfig
from orchestrator.grid_schema import (
    AXIS_KEYS,
    COMPUTE_SETTINGS,
    Axes,
    CellKeys,
    Grid,
    IncludeCell,
    MethodSettings,
    MixItem,
    TrainOverrides,
    default_micro_batch_size,
)
from recipes.data.stream import MixSource

FLOAT_AXES = frozenset({"lr", "data_fraction", "mix_ratio"})
"""Axes whose values are compared as numbers with a relative tolerance."""

TRAIN_NUMBERS = tuple(TrainOverrides.model_fields)
"""``train`` settings an include cell may override; each is the ``TrialConfig`` field of that name."""

Cell = dict[str, Any]
"""One combination of axis values: ``{parts, method, lr, data_fraction, mix_ratio, seed}``."""


def same_value(key: str, a: Any, b: Any) -> bool:
    """Whether two values of axis ``key`` are the same (1e-5 == 1.0e-05)."""
    if key in FLOAT_AXES and a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def matches(cell: Cell, partial: CellKeys) -> bool:
    """Whether ``cell`` has, for every key ``partial`` gives, one of its values."""
    return all(
        any(same_value(key, cell[key], option) for option in options) for key, options in partial.given().items()
    )


def _cells(choices: dict[str, list], lora_lrs: list[float] | None) -> Iterator[Cell]:
    """The product of ``choices`` in axis order; method lora cells take ``lora_lrs`` when given."""
    for parts, method in product(choices["parts"], choices["method"]):
        lrs = lora_lrs if method == "lora" and lora_lrs else choices["lr"]
        for lr, fraction, mix_ratio, seed in product(
            lrs, choices["data_fraction"], choices["mix_ratio"], choices["seed"]
        ):
            yield {
                "parts": parts,
                "method": method,
                "lr": lr,
                "data_fraction": fraction,
                "mix_ratio": mix_ratio,
                "seed": seed,
            }


def axis_choices(axes: Axes, given: dict[str, list]) -> dict[str, list]:
    """Values per axis: those ``given`` (an include entry's) or the grid's; no mix ratio is ``[None]``."""
    choices = {key: given.get(key, getattr(axes, key)) for key in AXIS_KEYS}
    choices["mix_ratio"] = choices["mix_ratio"] or [None]
    return choices


def grid_cells(axes: Axes, methods: MethodSettings) -> Iterator[Cell]:
    """The cartesian product of the grid's axes (before excludes)."""
    return _cells(axis_choices(axes, {}), methods.lora.lr)


def include_cells(cell: IncludeCell, axes: Axes, methods: MethodSettings) -> Iterator[Cell]:
    """The cells of one include entry: the axes it leaves out take every value of the grid's."""
    given = cell.given()
    return _cells(axis_choices(axes, given), None if "lr" in given else methods.lora.lr)


def mix_sources(mix: list[MixItem], mix_ratio: float | None) -> tuple[MixSource, ...]:
    """The mixed-in datasets of a cell: ``train.mix`` as written, or its datasets sharing ``mix_ratio`` equally."""
    if mix_ratio is None:
        return tuple(MixSource(item.dataset, item.ratio) for item in mix if item.ratio)
    return tuple(MixSource(item.dataset, mix_ratio / len(mix)) for item in mix) if mix_ratio > 0 else ()


def grid_axes(grid: Grid) -> Axes:
    """The grid's axes, with ``continual.method`` (inclora/seqfull) as the method axis when given."""
    methods = grid.continual.tuning_methods if grid.continual else None
    return grid.axes.model_copy(update={"method": methods}) if methods else grid.axes


def continual_settings(grid: Grid) -> dict[str, Any]:
    """The ``TrialConfig`` fields of the grid's continual section (none for a single-task grid)."""
    if grid.continual is None:
        return {}
    return {"continual_tasks": tuple(grid.continual.task_specs), "continual_epochs": tuple(grid.continual.epoch_counts)}


def trial_config(grid: Grid, cell: Cell, include: IncludeCell | None = None) -> TrialConfig:
    """The ``TrialConfig`` of one cell (with an include entry's own lora and train settings)."""
    overrides = include.train.model_dump(exclude_none=True) if include is not None and include.train else {}
    train = {name: overrides.get(name, getattr(grid.train, name)) for name in TRAIN_NUMBERS}
    workers = grid.resources.workers_per_trial
    train["micro_batch_size"] = train["micro_batch_size"] or default_micro_batch_size(train["batch_size"], workers)
    lora = {}
    if cell["method"] == "lora":
        own = include.lora.model_dump(exclude_none=True) if include is not None and include.lora else {}
        settings = grid.methods.lora
        lora = {f"lora_{key}": own.get(key, getattr(settings, key)) for key in ("r", "alpha", "dropout")}
    deepspeed = grid.train.deepspeed
    return TrialConfig(
        model=grid.model,
        parts=cell["parts"],
        method=cell["method"],
        lr=cell["lr"],
        data_fraction=cell["data_fraction"],
        seed=cell["seed"],
        mix=mix_sources(grid.train.mix, cell["mix_ratio"]),
        dataset=grid.train.dataset,
        **train,
        **lora,
        eval_suite=grid.eval.suite,
        eval_mode=grid.eval.mode,
        eval_batch_size=grid.eval.batch_size,
        max_new_tokens=grid.eval.max_new_tokens,
        interpolate=tuple(grid.eval.interpolate),
        zero_stage=deepspeed.zero_stage,
        deepspeed_config=deepspeed.config,
        max_ood_drop_pp=grid.max_ood_drop_pp,
        eval_signals=None if grid.eval.signals is None else tuple(grid.eval.signals),
        signal_every=grid.eval.signal_every,
        early_stop_signal=grid.early_stop.signal,
        early_stop_signal_max=grid.early_stop.max,
        early_stop_signal_min=grid.early_stop.min,
        workers=workers,
        gpus_per_worker=grid.resources.gpus_per_worker,
        cpus_per_worker=grid.resources.cpus_per_worker,
        max_failures=grid.resources.max_failures,
        keep_last=grid.train.keep_last,
        log_every=grid.train.log_every,
        **{name: getattr(grid.train, name) for name in COMPUTE_SETTINGS},
        storage=grid.storage_uri,
        tracking_uri=grid.tracking_uri,
        experiment=grid.name,
        sweep=grid.name,
        **continual_settings(grid),
    )


def expand_trials(grid: Grid) -> list[TrialConfig]:
    """Every trial of the grid, in grid order then include order (x continual replay), without duplicates."""
    axes = grid_axes(grid)
    trials = [
        trial_config(grid, cell)
        for cell in grid_cells(axes, grid.methods)
        if not any(matches(cell, partial) for partial in grid.exclude)
    ]
    trials += [
        trial_config(grid, cell, include)
        for include in grid.include
        for cell in include_cells(include, axes, grid.methods)
    ]
    if grid.continual is not None:
        replays = grid.continual.replay_per_task
        trials = [trial.changed(replay_per_task=replay) for trial in trials for replay in replays]
    unique: dict[str, TrialConfig] = {}
    for trial in trials:
        unique.setdefault(trial.trial_id, trial)
    return list(unique.values())
