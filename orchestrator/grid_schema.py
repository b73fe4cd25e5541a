"""The grid file's schema (examples in ``grids/``): typed sections with a docstring on every field.

``orchestrator.grid.load_grid`` reads a YAML file into a ``Grid`` and reports every problem at
once; this module only says what each section may hold. The field types convert what YAML
gives (``1e-5`` is a string to YAML; it is accepted as the number it spells) and reject the
rest with short messages that ``orchestrator.grid`` prefixes with the field's path:

    grid = Grid.model_validate({"name": "demo", "model": "toy-qwen2.5-vl", "grid": {"lr": [1e-4]}})
    grid.axes.lr, grid.train.steps, grid.resources.workers_per_trial

Defaults are the toy world's on a laptop CPU, taken from ``TrialConfig`` where it has one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contract.layout import SIGNAL_VALUES, SIGNALS
from jobs.finetune.config import (
    ATTN_IMPLEMENTATIONS,
    EVAL_MODES,
    MAX_INTEGER,
    MAX_LR,
    MAX_SEED,
    OVERLENGTH_POLICIES,
    PRECISIONS,
    TrialConfig,
    flash_attention_installed,
    name_problem,
)
from orchestrator.gpus import GPUS
from recipes.common.storage import S3_PREFIX
from recipes.data.continual import named_tasks
from recipes.methods import METHODS
from recipes.parts import UnknownPartError, split_parts
from recipes.schedules import SCHEDULES

TRIAL_DEFAULTS: dict[str, Any] = {
    name: info.default for name, info in TrialConfig.model_fields.items() if not info.is_required()
}
"""``TrialConfig``'s defaults: the grid's defaults wherever the two share a setting."""


def trial_field(setting: str, default: Any = ..., note: str = "") -> Any:
    """A grid field that sets the trial setting ``setting``: its default (unless given) and its
    documentation are the setting's own in ``TrialConfig``, written there once; ``note`` adds what
    only the grid does."""
    description = TrialConfig.model_fields[setting].description or ""
    return Field(TRIAL_DEFAULTS[setting] if default is ... else default, description=f"{description} {note}".strip())


AXIS_KEYS = ("parts", "method", "lr", "data_fraction", "mix_ratio", "seed")
"""The axes of a grid, in the order trials are listed (seeds, the repeats, innermost)."""

MICRO_BATCH_CAP = 8
"""Largest default micro-batch: questions per worker per forward pass when none is given."""


def problem(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``message`` (the path is added by the loader)."""
    return PydanticCustomError("forgetless", "{message}", {"message": message})


def shown(value: Any) -> str:
    """A value as a problem message quotes it (YAML's ``null`` for None)."""
    return "null" if value is None else repr(value)


# -- value types ---------------------------------------------------------------------------------


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise problem(f"expected a number, got {shown(value)}")
    try:
        number = float(value)
    except ValueError:
        raise problem(f"expected a number, got {shown(value)}") from None
    if not math.isfinite(number):
        raise problem(f"expected a finite number, got {shown(value)}")
    return number


def _integer(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise problem(f"expected an integer, got {shown(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise problem(f"expected true or false, got {shown(value)}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise problem(f"expected a string, got {shown(value)}")
    if not value.strip():
        raise problem("must not be empty")
    return value.strip()


def one_of(*choices: str) -> AfterValidator:
    """A check that a string is one of ``choices``."""

    def check(value: str) -> str:
        if value not in choices:
            raise problem(f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    return AfterValidator(check)


def _part(value: str) -> str:
    try:
        return "+".join(split_parts(value))
    except UnknownPartError as error:
        raise problem(str(error)) from None


def _as_list(value: Any) -> Any:
    """A single value where a list is expected becomes a one-item list."""
    return value if isinstance(value, (list, dict)) or value is None else [value]


def _experiment_name(value: str) -> str:
    message = name_problem(value)
    if message:
        raise problem(message)
    return value


def _storage(value: str) -> str:
    if "://" in value and not value.startswith(S3_PREFIX):
        raise problem(f"expected a local path or s3://bucket/prefix, got {value!r}")
    if value.startswith(S3_PREFIX) and not value[len(S3_PREFIX) :].strip("/"):
        raise problem(f"s3 storage needs a bucket: s3://bucket/prefix, got {value!r}")
    return value


Number = Annotated[float, BeforeValidator(_number)]
Integer = Annotated[int, BeforeValidator(_integer)]
Boolean = Annotated[bool, BeforeValidator(_boolean)]
Text = Annotated[str, BeforeValidator(_text)]
PositiveNumber = Annotated[Number, Gt(0)]
NonNegativeNumber = Annotated[Number, Ge(0)]
PositiveInteger = Annotated[Integer, Ge(1), Le(MAX_INTEGER)]
NonNegativeInteger = Annotated[Integer, Ge(0), Le(MAX_INTEGER)]
Seed = Annotated[Integer, Ge(0), Le(MAX_SEED)]
Share = Annotated[Number, Ge(0), Lt(1)]
"""A share in [0, 1): warm-up ratio, mix ratio, dropout."""
Fraction = Annotated[Number, Gt(0), Le(1)]
"""A data fraction in (0, 1]."""
Part = Annotated[Text, AfterValidator(_part)]
Method = Annotated[Text, one_of(*METHODS)]
Schedule = Annotated[Text, one_of(*SCHEDULES)]
EvalMode = Annotated[Text, one_of(*EVAL_MODES)]
Precision = Annotated[Text, one_of(*PRECISIONS)]
Overlength = Annotated[Text, one_of(*OVERLENGTH_POLICIES)]


def _installed_kernel(value: str) -> str:
    if value == "flash_attention_2" and not flash_attention_installed():
        raise problem("flash_attention_2 needs the flash-attn package, which is not installed (use sdpa or eager)")
    return value


AttnImplementation = Annotated[Text, one_of(*ATTN_IMPLEMENTATIONS), AfterValidator(_installed_kernel)]
ZeroStage = Annotated[Integer, Ge(0), Le(3)]
ExperimentName = Annotated[Text, AfterValidator(_experiment_name)]
StorageUri = Annotated[Text, AfterValidator(_storage)]


def axis(item: Any) -> Any:
    """A grid axis: a non-empty list of ``item`` values (a single value is a one-item list)."""
    return Annotated[list[item], BeforeValidator(_as_list), MinLen(1)]


PartsAxis = axis(Part)
MethodAxis = axis(Method)
LearningRate = Annotated[Number, Gt(0), Le(MAX_LR)]
LrAxis = axis(LearningRate)
FractionAxis = axis(Fraction)
MixRatioAxis = axis(Share)
SeedAxis = axis(Seed)


def default_micro_batch_size(batch_size: int, workers: int) -> int | None:
    """The largest divisor of the per-worker batch that is at most ``MICRO_BATCH_CAP``.

    None when ``batch_size`` does not split evenly over ``workers``.
    """
    per_worker, remainder = divmod(batch_size, workers)
    if remainder or per_worker < 1:
        return None
    return max(size for size in range(1, min(MICRO_BATCH_CAP, per_worker) + 1) if per_worker % size == 0)


# -- sections ------------------------------------------------------------------------------------


class Section(BaseModel):
    """A mapping of the grid file: unknown keys are errors, every field has a docstring."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True, allow_inf_nan=False)


class DeepSpeedSettings(Section):
    """``{zero_stage: N}``, or a path to a DeepSpeed JSON (also written ``{config: PATH}``)."""

    zero_stage: ZeroStage = TRIAL_DEFAULTS["zero_stage"]
    """ZeRO stage 0-3 (CPU workers run gloo with any stage, GPU workers NCCL; precision: ``train.precision``)."""
    config: Text | None = None
    """Path to a DeepSpeed JSON (must exist; the trial still sets batch sizes, AdamW and the schedule)."""

    @model_validator(mode="before")
    @classmethod
    def _path_form(cls, value: Any) -> Any:
        return {"config": value} if isinstance(value, str) else value


class MixItem(Section):
    """A dataset mixed into the training data."""

    dataset: Text
    """Registered name or MCQ file path of the mixed-in dataset."""
    ratio: Share | None = None
    """Share of training samples from it, in [0, 1); optional when ``grid.mix_ratio`` sets it."""


class TrainSettings(Section):
    """How every trial trains (include cells may override the per-trial numbers, ``TRAIN_NUMBERS``)."""

    dataset: Text = trial_field("dataset", note="Relative paths are relative to the working directory.")
    steps: PositiveInteger = trial_field("steps")
    batch_size: PositiveInteger = trial_field("batch_size")
    micro_batch_size: PositiveInteger | None = trial_field(
        "micro_batch_size",
        default=None,
        note=f"Default: the per-worker batch, capped at {MICRO_BATCH_CAP} and dividing it.",
    )
    warmup_ratio: Share = trial_field("warmup_ratio")
    schedule: Schedule = trial_field("schedule")
    weight_decay: NonNegativeNumber = trial_field("weight_decay")
    max_grad_norm: NonNegativeNumber = trial_field("max_grad_norm")
    eval_every: PositiveInteger = trial_field("eval_every")
    deepspeed: DeepSpeedSettings = DeepSpeedSettings()
    """``{zero_stage: N}`` or the path of a DeepSpeed JSON."""
    mix: list[MixItem] = []
    """Datasets mixed into the training data: ``[{dataset, ratio}]``; the target gets 1 - sum of ratios."""
    keep_last: PositiveInteger = trial_field("keep_last")
    log_every: PositiveInteger = trial_field("log_every")
    precision: Precision = trial_field("precision")
    attn_implementation: AttnImplementation = trial_field("attn_implementation")
    activation_checkpointing: Boolean | None = trial_field("activation_checkpointing")
    max_seq_len: PositiveInteger | None = trial_field("max_seq_len")
    overlength: Overlength = trial_field("overlength")
    min_pixels: PositiveInteger | None = trial_field("min_pixels")
    max_pixels: PositiveInteger | None = trial_field("max_pixels")

    @model_validator(mode="after")
    def _pixel_bounds_ordered(self) -> TrainSettings:
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise problem(f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})")
        return self


COMPUTE_SETTINGS = (
    "precision",
    "attn_implementation",
    "activation_checkpointing",
    "max_seq_len",
    "overlength",
    "min_pixels",
    "max_pixels",
)
"""``train`` settings passed to every trial under the same names (how it computes, what rows and images it takes)."""


TRAIN_NUMBERS = (
    "steps",
    "batch_size",
    "micro_batch_size",
    "warmup_ratio",
    "schedule",
    "weight_decay",
    "max_grad_norm",
    "eval_every",
)
"""The training numbers one include cell may set for itself (``TrainOverrides``)."""

TrainOverrides = create_model(
    "TrainOverrides",
    __base__=Section,
    __doc__="Training numbers one include cell sets for itself (the rest come from ``train``).",
    **{
        name: (
            TrainSettings.model_fields[name].rebuild_annotation() | None,
            Field(None, description=f"Overrides ``train.{name}``: {TrainSettings.model_fields[name].description}"),
        )
        for name in TRAIN_NUMBERS
    },
)


class EvalSettings(Section):
    """How checkpoints are evaluated on the 2x2 suite."""

    mode: EvalMode = trial_field("eval_mode")
    suite: Text = trial_field("eval_suite")
    batch_size: PositiveInteger = trial_field("eval_batch_size")
    max_new_tokens: PositiveInteger = trial_field("max_new_tokens")
    interpolate: list[Annotated[Number, Ge(0), Le(1)]] = []
    """WiSE-FT: blends of zero-shot and final weights of the tuned parts evaluated at the last checkpoint
    (0 = zero-shot, 1 = fine-tuned), logged as ``wiseft/<alpha>/...`` metrics of the trial."""
    signals: Annotated[list[Annotated[Text, one_of(*SIGNALS)]], BeforeValidator(_as_list)] | None = trial_field(
        "eval_signals", note="``[]`` measures none."
    )
    signal_every: PositiveInteger | None = trial_field("signal_every")


class Axes(Section):
    """The grid's axes: every combination of their values is a trial."""

    parts: PartsAxis = ["llm"]
    """Trainable parts, '+'-combined: llm, vision, projector, llm.attn, llm.mlp_gate_up, lm_head, vision.last<N>."""
    method: MethodAxis = ["full"]
    """Tuning methods: full, lora."""
    lr: LrAxis
    """Peak learning rates (> 0); method lora cells use ``methods.lora.lr`` instead when it is given."""
    data_fraction: FractionAxis = [TRIAL_DEFAULTS["data_fraction"]]
    """Seeded random shares of the target dataset, in (0, 1]."""
    mix_ratio: MixRatioAxis | None = None
    """Shares of mixed-in samples, in [0, 1), split equally among the ``train.mix`` datasets (0 = no mixing)."""
    seed: SeedAxis = [TRIAL_DEFAULTS["seed"]]
    """Seeds (repeats of each recipe)."""


class LoraSettings(Section):
    """LoRA's settings for every method lora cell."""

    r: PositiveInteger = trial_field("lora_r")
    alpha: PositiveNumber = trial_field("lora_alpha")
    dropout: Share = trial_field("lora_dropout")
    lr: LrAxis | None = None
    """LoRA's own learning-rate axis, used instead of ``grid.lr`` for method lora cells."""


class LoraOverrides(Section):
    """LoRA settings one include cell sets for itself."""

    r: PositiveInteger | None = None
    """Overrides ``methods.lora.r``."""
    alpha: PositiveNumber | None = None
    """Overrides ``methods.lora.alpha``."""
    dropout: Share | None = None
    """Overrides ``methods.lora.dropout``."""


class MethodSettings(Section):
    """Settings of the tuning methods."""

    lora: LoraSettings = LoraSettings()
    """LoRA rank, alpha, dropout and (optionally) its own learning rates."""


class CellKeys(Section):
    """Axis values of a partial cell (a single value or a list of values per key)."""

    parts: PartsAxis | None = None
    """Trainable parts."""
    method: MethodAxis | None = None
    """Tuning method."""
    lr: LrAxis | None = None
    """Peak learning rate."""
    data_fraction: FractionAxis | None = None
    """Share of the target dataset."""
    mix_ratio: MixRatioAxis | None = None
    """Share of mixed-in samples."""
    seed: SeedAxis | None = None
    """Seed."""

    def given(self) -> dict[str, list]:
        """The axis keys this cell sets, with their values, in axis order."""
        return {key: getattr(self, key) for key in AXIS_KEYS if getattr(self, key) is not None}


class IncludeCell(CellKeys):
    """An extra cell: axes it leaves out take every value of the grid's axis."""

    lora: LoraOverrides | None = None
    """LoRA settings of this cell (method lora only)."""
    train: TrainOverrides | None = None
    """Training numbers of this cell (steps, batch_size, warmup_ratio, schedule, ...)."""


class ExcludeCell(CellKeys):
    """A partial cell: grid trials matching every key given are removed (include cells are kept)."""


CONTINUAL_METHODS = {"inclora": "lora", "seqfull": "full"}
"""Continual-learning strategies (the paper's §5) -> the tuning method each trains a task with."""


class ContinualTaskFiles(Section):
    """A continual-learning task given by its files."""

    name: Text
    """Task name (a column of the accuracy matrix), e.g. RS."""
    train: Text
    """Training set: registered name or MCQ file path."""
    test: Text
    """Test set: registered name or MCQ file path."""


def _continual_task(value: Any) -> str | ContinualTaskFiles:
    """A toy domain name, or a ``{name, train, test}`` mapping of strings."""
    if isinstance(value, str):
        named = named_tasks()
        if value.strip() not in named:
            raise problem(
                f"unknown toy domain {value!r}; toy domains are {', '.join(named)} "
                "(other tasks are written {name, train, test})"
            )
        return value.strip()
    if not isinstance(value, dict) or set(value) != {"name", "train", "test"}:
        raise problem(f"expected a toy domain name or {{name, train, test}}, got {shown(value)}")
    for key in ("name", "train", "test"):
        if not isinstance(value[key], str) or not value[key].strip():
            raise problem(f"{key}: expected a non-empty string, got {shown(value[key])}")
    if "/" in value["name"]:
        raise problem(f"name: must not contain '/', got {value['name']!r}")
    return ContinualTaskFiles.model_validate(value)


ContinualTask = Annotated[Any, BeforeValidator(_continual_task)]
ContinualMethod = Annotated[Text, one_of(*CONTINUAL_METHODS)]


class ContinualSettings(Section):
    """Continual learning (the paper's §5): every trial trains on the tasks one after another."""

    tasks: Annotated[list[ContinualTask], MinLen(2)]
    """The task sequence: toy domain names (toy-cl-shapes, ...) or ``{name, train, test}`` files."""
    epochs: list[PositiveNumber] | None = None
    """Epochs over each task's training data (with replay), one per task; default 1 each."""
    replay_per_task: axis(NonNegativeInteger) = [0]
    """Samples of every earlier task replayed with each later task; a list sweeps it (0 = no replay)."""
    method: axis(ContinualMethod) | None = None
    """inclora (a LoRA per task, merged after it) and/or seqfull (full tuning across tasks); sets ``grid.method``."""

    @model_validator(mode="after")
    def _one_epoch_count_per_task(self) -> ContinualSettings:
        if self.epochs is not None and len(self.epochs) != len(self.tasks):
            raise problem(f"epochs needs one value per task ({len(self.tasks)}), got {len(self.epochs)}")
        return self

    @property
    def task_specs(self) -> list[str | dict[str, str]]:
        """The tasks as ``TrialConfig.continual_tasks`` takes them."""
        return [task if isinstance(task, str) else task.model_dump() for task in self.tasks]

    @property
    def epoch_counts(self) -> list[float]:
        return list(self.epochs) if self.epochs is not None else [1.0] * len(self.tasks)

    @property
    def tuning_methods(self) -> list[str] | None:
        """``method`` as tuning methods (inclora -> lora, seqfull -> full), or None."""
        return [CONTINUAL_METHODS[name] for name in self.method] if self.method else None


class Resources(Section):
    """What one trial runs on."""

    workers_per_trial: PositiveInteger = trial_field("workers")
    gpus_per_worker: NonNegativeNumber = trial_field("gpus_per_worker")
    cpus_per_worker: PositiveNumber = trial_field("cpus_per_worker")
    gpu: Annotated[Text, one_of(*GPUS)] | None = None
    """GPU kind of the workers (a10g, a100-40, a100-80, h100-80, h200): the sweep refuses a grid whose trials
    do not fit its memory, and the plan prices the trials on it (``python -m orchestrator.plan --gpu``)."""
    max_concurrent_trials: PositiveInteger | None = None
    """Upper bound on trials running at once (default: as many as the cluster's resources fit)."""
    max_failures: NonNegativeInteger = trial_field("max_failures")


class Tracking(Section):
    """Where trials log."""

    uri: Text = trial_field("tracking_uri", note="A relative sqlite path is relative to the working directory.")


class EarlyStop(Section):
    """Forgetting-aware early stopping."""

    max_ood_drop_pp: PositiveNumber | None = None
    """Stop a trial when an OOD quadrant falls this many points below zero-shot (default: never)."""
    signal: Annotated[Text, one_of(*(value for values in SIGNAL_VALUES.values() for value in values))] | None = None
    """Stop a trial when this forgetting signal's value (``output_kl``, ``top1_agreement``, ``counting_bias``,
    ``classname_rate``, ``vision_probe_acc``) passes ``max`` or ``min``; its signal must be measured (``eval.signals``)."""
    max: Number | None = None
    """Upper bound of ``signal``: the trial stops at the first measurement above it."""
    min: Number | None = None
    """Lower bound of ``signal``: the trial stops at the first measurement below it."""

    @model_validator(mode="after")
    def _bounded_signal(self) -> EarlyStop:
        if (self.signal is None) != (self.max is None and self.min is None):
            raise problem("signal needs max or min, and max/min need signal")
        return self


class ReportSettings(Section):
    """The analysis report at the end of the sweep."""

    enabled: Boolean = True
    """Run ``analysis.report`` on the sweep's experiment when the sweep ends."""


SEARCH_METHODS = ("grid", "asha", "optuna")
"""How a sweep picks its trials: every cell, ASHA over the cells, or Optuna's multi-objective sampler."""


class Range(Section):
    """A continuous interval an Optuna search samples from."""

    low: PositiveNumber
    """Lower end (included)."""
    high: PositiveNumber
    """Upper end (included); greater than ``low``."""

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high <= self.low:
            raise problem(f"high ({self.high:g}) must be greater than low ({self.low:g})")
        return self


def choices_or_range(choices: Any) -> Any:
    """Either an axis of ``choices`` or a ``{low, high}`` Range (problems read ``key.range.low``)."""
    return Annotated[
        Annotated[choices, Tag("choices")] | Annotated[Range, Tag("range")],
        Discriminator(lambda value: "range" if isinstance(value, (dict, Range)) else "choices"),
    ]


ShareRange = choices_or_range(MixRatioAxis)
FractionRange = choices_or_range(FractionAxis)


class OptunaSpace(Section):
    """What an Optuna search samples; an axis left out takes the grid's values as categories."""

    lr: Range | None = None
    """Peak learning rate, sampled log-uniformly from ``{low, high}`` (default: the grid's smallest to largest lr)."""
    parts: PartsAxis | None = None
    """Trainable parts to choose from (default: ``grid.parts``)."""
    method: MethodAxis | None = None
    """Tuning methods to choose from (default: ``grid.method``)."""
    lora_r: axis(PositiveInteger) | None = None
    """LoRA ranks to choose from for method lora (default: ``methods.lora.r``)."""
    data_fraction: FractionRange | None = None
    """Data fractions: a list of choices or a ``{low, high}`` range (default: ``grid.data_fraction``)."""
    mix_ratio: ShareRange | None = None
    """Mix ratios: a list of choices or a ``{low, high}`` range (default: ``grid.mix_ratio``, if any)."""


class SearchSettings(Section):
    """How the sweep explores its recipes: every cell once (``grid``), ASHA or Optuna (docs/grid-reference.md, "Search")."""

    method: Annotated[Text, one_of(*SEARCH_METHODS)] = "grid"
    """``grid`` (every cell), ``asha`` (every cell, unpromising ones stopped at rungs) or ``optuna``."""
    max_ood_drop_pp: PositiveNumber | None = None
    """ASHA: a trial whose worst OOD quadrant is this many points below zero-shot at a rung stops there
    (default: ``early_stop.max_ood_drop_pp``; none: the rung score is the ID gain alone)."""
    grace_steps: PositiveInteger | None = None
    """ASHA: training steps before the first rung (default: ``train.eval_every``)."""
    reduction_factor: Annotated[Number, Gt(1)] = 3.0
    """ASHA: at each rung only the best 1/reduction_factor of the trials (by ID gain) go on."""
    num_samples: PositiveInteger = 8
    """Optuna: trials in the whole search (a resumed search counts the ones already done)."""
    seed: Seed = 0
    """Optuna: seed of the TPE sampler."""
    space: OptunaSpace = OptunaSpace()
    """Optuna: the axes it samples (the grid's own axes by default)."""


class Grid(Section):
    """A sweep: the model, how trials train and are evaluated, the axes and the resources."""

    name: ExperimentName
    """Sweep name: the MLflow experiment and the storage folder ([A-Za-z0-9._-])."""
    model: Text
    """Registered model name, local model directory, or Hugging Face Hub id (org/name) in the local cache."""
    train: TrainSettings = TrainSettings()
    """How every trial trains."""
    eval: EvalSettings = EvalSettings()
    """How checkpoints are evaluated."""
    axes: Axes = Field(alias="grid")
    """The grid's axes (written ``grid:`` in the file)."""
    include: list[IncludeCell] = []
    """Extra cells with their own settings, added after the grid's cells."""
    exclude: list[ExcludeCell] = []
    """Partial cells removing the grid trials they match."""
    methods: MethodSettings = MethodSettings()
    """Settings of the tuning methods (LoRA)."""
    resources: Resources = Resources()
    """What one trial runs on."""
    storage: StorageUri = TRIAL_DEFAULTS["storage"]
    """Root of checkpoints: local path or s3://bucket/prefix (the sweep's folder is ``<storage>/<name>``)."""
    tracking: Tracking = Tracking()
    """Where trials log (MLflow)."""
    early_stop: EarlyStop = EarlyStop()
    """Forgetting-aware early stopping."""
    report: ReportSettings = ReportSettings()
    """The analysis report at the end of the sweep."""
    continual: ContinualSettings | None = None
    """Continual learning: train every trial on a task sequence instead of ``train.dataset``."""
    search: SearchSettings = SearchSettings()
    """How trials are picked: the full grid (default), ASHA over its cells, or an Optuna search."""

    _source: str = PrivateAttr("<grid>")

    @property
    def source(self) -> str:
        """The file the grid was read from (``<grid>`` when built from a mapping)."""
        return self._source

    @property
    def experiment(self) -> str:
        """MLflow experiment of the sweep (its ``name``)."""
        return self.name

    @property
    def storage_uri(self) -> str:
        """``storage`` with a local path made absolute (trials run in other working directories)."""
        if self.storage.startswith(S3_PREFIX):
            return self.storage.rstrip("/")
        return str(Path(self.storage).expanduser().resolve())

    @property
    def sweep_storage(self) -> str:
        """The sweep's folder: ``<storage>/<name>``."""
        return f"{self.storage_uri}/{self.name}"

    @property
    def tracking_uri(self) -> str:
        """``tracking.uri`` with a relative sqlite path made absolute (same database from every process)."""
        uri = self.tracking.uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
            return prefix + os.path.abspath(os.path.expanduser(uri[len(prefix) :]))
        return uri

    @property
    def max_ood_drop_pp(self) -> float | None:
        """Early-stop threshold in percentage points (None: no early stop)."""
        return self.early_stop.max_ood_drop_pp

    @property
    def report_enabled(self) -> bool:
        """Whether the sweep runs the analysis report when it ends."""
        return self.report.enabled

    @property
    def max_concurrent_trials(self) -> int | None:
        """The grid's own cap on concurrent trials (None: the cluster decides)."""
        return self.resources.max_concurrent_trials
