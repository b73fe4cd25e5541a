"""Checks of a grid file that span fields, and of the names it gives (models, datasets, suites).

``orchestrator.grid`` runs these after the schema (``orchestrator.grid_schema``) has checked
every field on its own; each check returns problems as ``<field path>: <problem>`` texts and
runs on whatever sections are valid, so a file's problems are all reported at once:

    problems = consistency_problems(sections) + reference_problems(sections, check_paths=True)

Names and files are checked by ``jobs.input_checks`` (shared with ``python -m jobs.finetune``);
without ``check_paths`` only their form is checked, so a grid meant for a GPU cluster
validates anywhere. Every URI the grid gives is checked for its scheme and for credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contract.layout import SIGNAL_VALUES, format_lr, format_share
from jobs.finetune.config import DEFAULT_SIGNALS
from jobs.input_checks import (
    dataset_problems,
    deepspeed_file_problems,
    model_problems,
    parts_problems,
    suite_problems,
)
from orchestrator.expand import FLOAT_AXES, grid_cells, matches, same_value
from orchestrator.grid_schema import (
    AXIS_KEYS,
    Axes,
    ContinualSettings,
    DeepSpeedSettings,
    EarlyStop,
    EvalSettings,
    ExcludeCell,
    Grid,
    IncludeCell,
    MethodSettings,
    Resources,
    SearchSettings,
    Tracking,
    TrainSettings,
    default_micro_batch_size,
)
from recipes.common.reachability import tracking_scheme_problem
from recipes.common.redaction import credential_problem
from recipes.common.storage import is_remote
from recipes.models.catalog import model_family
from recipes.toyworld.datasets import toy_world_config


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
    search: SearchSettings | None
    early_stop: EarlyStop | None = None

    @classmethod
    def of(cls, grid: Grid) -> GridSections:
        return cls(**{name: getattr(grid, name) for name in cls.__dataclass_fields__})


# -- consistency -------------------------------------------------------------------------------


def consistency_problems(s: GridSections) -> list[str]:
    """Problems that involve more than one field."""
    return [
        *_batch_problems(s),
        *_mix_problems(s),
        *_include_problems(s),
        *_exclude_problems(s),
        *_deepspeed_problems(s),
        *_compute_problems(s),
        *_continual_problems(s),
        *search_problems(s),
        *_signal_problems(s),
        *_environment_problems(),
    ]


def _signal_problems(s: GridSections) -> list[str]:
    """Forgetting signals run on rank 0 of a single-task trial; a signal early stop needs its signal measured."""
    if s.eval is None:
        return []
    problems = []
    sharded = (
        s.train is not None
        and s.train.deepspeed.zero_stage == 3
        and s.resources is not None
        and s.resources.workers_per_trial > 1
    )
    if s.eval.signals:
        if s.continual is not None:
            problems.append("eval.signals: applies to single-task grids only (remove it or continual)")
        if sharded:
            problems.append(
                "eval.signals: needs ZeRO stage 0-2 with several workers per trial (rank 0 runs them alone)"
            )
    measured = s.eval.signals if s.eval.signals is not None else ([] if s.continual or sharded else DEFAULT_SIGNALS)
    if s.eval.signal_every is not None and not measured:
        problems.append("eval.signal_every: needs eval.signals")
    stop = s.early_stop.signal if s.early_stop is not None else None
    if stop is not None:
        group = next(name for name, values in SIGNAL_VALUES.items() if stop in values)
        if group not in measured:
            problems.append(f"early_stop.signal: {stop} needs {group} in eval.signals (measured: {list(measured)})")
    return problems


def _environment_problems() -> list[str]:
    """The toy world the environment chooses (``FORGETLESS_TOY_SEED``/``_SIZE``), which toy names resolve to."""
    try:
        toy_world_config()
    except ValueError as error:
        return [str(error)]
    return []


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
        if not mix:
            problems.append(f"{where}: needs at least one dataset in train.mix to set the ratio of, found 0")
        for index, item in enumerate(mix):
            if item.ratio is not None:
                problems.append(f"train.mix[{index}].ratio: {where} sets the mixed-in share; leave the ratio out")
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


def search_problems(s: GridSections) -> list[str]:
    """An adaptive search or weight interpolation needs single-task trials; ranges and rungs must fit."""
    problems = []
    method = s.search.method if s.search is not None else "grid"
    if s.continual is not None and method != "grid":
        problems.append(f"search.method: {method} needs a single-task grid; continual sweeps run method grid")
    if s.eval is not None and s.eval.interpolate:
        if s.continual is not None:
            problems.append("eval.interpolate: applies to single-task grids only (remove it or continual)")
        if s.train is not None and s.train.deepspeed.zero_stage == 3:
            problems.append("eval.interpolate: needs ZeRO stage 0-2 (it blends whole weights)")
    if s.search is None or method == "grid":
        return problems
    if method == "asha" and s.train is not None and (s.search.grace_steps or 0) > s.train.steps:
        problems.append(f"search.grace_steps: {s.search.grace_steps} is beyond train.steps ({s.train.steps})")
    space = s.search.space
    if method == "optuna" and space.mix_ratio is not None and s.train is not None and len(s.train.mix) != 1:
        problems.append(f"search.space.mix_ratio: needs exactly one dataset in train.mix, found {len(s.train.mix)}")
    if (
        method == "optuna"
        and space.lora_r is not None
        and "lora" not in (space.method or (s.axes.method if s.axes else []))
    ):
        problems.append("search.space.lora_r: applies to method lora only; the search's methods do not include lora")
    return problems


def _continual_problems(s: GridSections) -> list[str]:
    """A continual grid takes its data from its tasks and merges whole weights (IncLoRA)."""
    if s.continual is None:
        return []
    problems = []
    if s.continual.method and s.axes is not None and "method" in s.axes.model_fields_set:
        problems.append("continual.method: sets the method axis; remove grid.method (inclora = lora, seqfull = full)")
    if s.axes is not None and (s.axes.mix_ratio is not None or s.axes.data_fraction != [1.0]):
        problems.append(
            "continual: trials take their data from the tasks; remove grid.data_fraction and grid.mix_ratio"
        )
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


def _compute_problems(s: GridSections) -> list[str]:
    """flash_attention_2 needs bf16 GPU workers; pixel bounds need a Qwen2.5-VL model."""
    if s.train is None:
        return []
    problems = []
    if s.train.attn_implementation == "flash_attention_2" and s.resources is not None:
        gpus = s.resources.gpus_per_worker > 0
        if not gpus or s.train.precision == "fp32":
            problems.append(
                "train.attn_implementation: flash_attention_2 runs on GPU workers (resources.gpus_per_worker > 0) "
                "in bf16 (train.precision auto or bf16) only"
            )
    pixels = [name for name in ("min_pixels", "max_pixels") if getattr(s.train, name) is not None]
    if pixels and s.model is not None:
        family = model_family(s.model)
        if s.model.partition("@")[0].startswith("llava") or (family is not None and family.name == "llava"):
            problems.append(
                f"train.{pixels[0]}: applies to Qwen2.5-VL only; LLaVA-1.5 resizes and crops every image to "
                "336 x 336 (576 image tokens)"
            )
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
        problems += _parts_problems(s, check_paths)
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
    return problems + uri_problems(s)


def _parts_problems(s: GridSections, check_paths: bool) -> list[str]:
    """Parts the model does not have (``vision.last<N>`` past its vision encoder)."""
    places = [("grid.parts", s.axes.parts if s.axes else [])]
    places += [(f"include[{i}].parts", cell.parts or []) for i, cell in enumerate(s.include or [])]
    return [
        problem
        for where, values in places
        for index, parts in enumerate(values)
        for problem in parts_problems(f"{where}[{index}]", parts, s.model, check_paths)
    ]


def uri_problems(s: GridSections) -> list[str]:
    """Credentials in any URI the grid gives, and schemes nothing here can read."""
    problems = [credential_problem("storage", s.storage)]
    if s.tracking is not None:
        scheme = tracking_scheme_problem(s.tracking.uri)
        problems += [f"tracking.uri: {scheme}" if scheme else credential_problem("tracking.uri", s.tracking.uri)]
    return [text for text in problems if text]
