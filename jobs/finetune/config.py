"""The resolved settings of one trial: one grid cell, everything a fine-tune needs.

The sweep expands a grid file into ``TrialConfig`` objects; ``python -m jobs.finetune`` builds
one from its flags (generated from this model: types from the annotations, help from the field
docstrings). Construction validates every field, so a grid cell and a command line meet the same
rules. A trial's identity is a stable hash of the settings that change its
result (``trial_id``), so re-running a grid finds its trials again instead of duplicating them:

    trial = TrialConfig(model="toy-qwen2.5-vl", parts="llm", lr=1e-5, steps=200)
    trial.trial_id, trial.name        # "3f2a9c0d1e7b", "llm-full-lr1e-05-f1.0-s0"
    trial.mlflow_params()             # the params every trial run carries (see contract.layout)
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from contract import layout
from contract.defaults import DEFAULT_STORAGE, DEFAULT_TRACKING_URI
from contract.layout import continual_recipe_label, format_lr, format_share, recipe_label
from recipes.common.cache import content_key
from recipes.data.continual import ContinualTask, resolve_task
from recipes.data.stream import MixSource
from recipes.methods import METHODS, MethodConfig
from recipes.models.catalog import HUB_MODELS, model_family
from recipes.parts import split_parts
from recipes.schedules import SCHEDULES

EVAL_MODES = ("logits", "generate")
"""Evaluation modes (see jobs.evaluate)."""
EvalMode = Literal[EVAL_MODES]
PRECISIONS = ("auto", "bf16", "fp32")
"""Precision settings: bf16 on GPU and fp32 on CPU (auto), or either everywhere."""
Precision = Literal[PRECISIONS]
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
"""Attention kernels a trial may ask transformers for (``attn_implementation``)."""
AttnImplementation = Literal[ATTN_IMPLEMENTATIONS]
OVERLENGTH_POLICIES = ("error", "truncate")
"""What a training row longer than ``max_seq_len`` does."""
Overlength = Literal[OVERLENGTH_POLICIES]
Method = Literal[METHODS]
Schedule = Literal[SCHEDULES]
Signal = Literal[layout.SIGNALS]
SignalValue = Literal[tuple(value for values in layout.SIGNAL_VALUES.values() for value in values)]
DEFAULT_SIGNALS = ("output_drift",)
"""Signals a single-task trial measures when none are named: the cheap ones that stay under 10% of
the toy suite's evaluation in the demo (docs/evaluation.md, "Forgetting signals")."""

TRIAL_OWNED_KEYS = ("optimizer", "scheduler")
"""DeepSpeed JSON sections the trial sets itself (from the grid): a user's JSON must not hold them."""

BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
"""pydantic's bound errors -> the comparison a problem message names."""


def problem_message(error: dict) -> str:
    """A pydantic error of a settings field as the short message the grid and the CLI print."""
    kind, context = error["type"], error.get("ctx", {})
    if kind in BOUNDS:
        return f"must be {BOUNDS[kind]} {next(iter(context.values()))}"
    if kind == "missing":
        return "missing required key"
    if kind == "literal_error":
        return f"must be one of {context['expected'].replace(' or ', ', ')}; got {error['input']!r}"
    return error["msg"].removeprefix("Value error, ")


MAX_INTEGER = 2**31 - 1
"""Largest count a trial takes (steps, batch sizes, intervals, pixels): far past any real run, within int32."""

MAX_LR = 1.0
"""Largest peak learning rate (AdamW fine-tuning uses 1e-6 to 1e-3)."""

MAX_SEED = 2**32 - 1
"""Largest seed (numpy's generators take seeds below 2**32)."""

MAX_NAME_CHARS = 100
"""Longest experiment or sweep name: trial run names and storage folders add a suffix to it, and MLflow
takes names of up to 500 characters, file systems folder names of up to 255 bytes."""

NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
"""Characters an experiment or sweep name may use (it names an MLflow experiment and a storage folder)."""


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot name an experiment and its storage folder, or None."""
    if len(value) > MAX_NAME_CHARS:
        return f"must be at most {MAX_NAME_CHARS} characters, got {len(value)}"
    if set(value) - NAME_CHARACTERS or value in ("", ".", ".."):
        return (
            "must use only letters, digits, '.', '_' and '-' (it names the MLflow experiment and the "
            f"storage folder), got {value!r}"
        )
    return None


COMPUTE_RUN_FIELDS = ("attn_implementation", "activation_checkpointing")
"""How a trial computes that leaves its result unchanged (up to rounding): run fields, logged as params."""

RUN_FIELDS = frozenset(
    {
        "storage",
        "tracking_uri",
        "experiment",
        "sweep",
        "run_id",
        "keep_last",
        "cpus_per_worker",
        "max_failures",
        "log_every",
        "checkpoint_every",
        *COMPUTE_RUN_FIELDS,
    }
)
"""Fields that say where and how a trial runs, not what it computes: not part of its identity."""

DEFAULT_OMITTED = {
    "precision": "auto",
    "min_pixels": None,
    "max_pixels": None,
    "max_seq_len": None,
    "eval_signals": None,
    "signal_every": None,
    "early_stop_signal": None,
    "early_stop_signal_max": None,
    "early_stop_signal_min": None,
}
"""Settings left out of a trial's identity at these values (trials from before they existed keep their ids)."""


def real_model(name: str) -> bool:
    """Whether ``name`` is one of the paper's registered real models or a shape of one (``qwen2.5-vl-3b@layers=2``)."""
    base = name.partition("@")[0]
    return base in HUB_MODELS or base in HUB_MODELS.values()


def flash_attention_installed() -> bool:
    """Whether the flash-attn package (``attn_implementation: flash_attention_2``) is importable here."""
    return importlib.util.find_spec("flash_attn") is not None


class TrialConfig(BaseModel):
    """One fine-tuning trial: model parts x method x learning rate x data, plus how it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    model: str
    """Registry name, shape model (``qwen2.5-vl-3b@layers=2``, docs/real-models.md), local directory or cached Hub id
    of the base model."""
    parts: str
    """Trainable parts, '+'-combined (``llm``, ``vision``, ``projector``, ``llm.attn``, ...)."""
    lr: Annotated[float, Gt(0), Le(MAX_LR)]
    """Peak learning rate."""
    method: Method = "full"
    """``full`` or ``lora``."""
    lora_r: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 8
    """LoRA rank (lora only)."""
    lora_alpha: Annotated[float, Gt(0)] = 16.0
    """LoRA alpha: updates are scaled by alpha / r (lora only)."""
    lora_dropout: Annotated[float, Ge(0), Lt(1)] = 0.0
    """Dropout on the LoRA branch input, in [0, 1) (lora only)."""
    dataset: str = "toy-imagenet-vqa"
    """Target training dataset: registry name or MCQ parquet/jsonl path."""
    data_fraction: Annotated[float, Gt(0), Le(1)] = 1.0
    """Seeded random share of the target dataset used for training, in (0, 1]."""
    mix: tuple[MixSource, ...] = ()
    """Datasets mixed into the training stream, each with its share of samples."""
    seed: Annotated[int, Ge(0), Le(MAX_SEED)] = 0
    """Seed of initialisation-dependent randomness, data order and sampling."""
    steps: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 100
    """Optimizer steps."""
    batch_size: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 16
    """Global batch size (questions per optimizer step, over all workers)."""
    micro_batch_size: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 8
    """Questions per worker per forward pass; gradient accumulation makes up the rest."""
    warmup_ratio: Annotated[float, Ge(0), Lt(1)] = 0.1
    """Share of steps with linear warm-up."""
    schedule: Schedule = "cosine"
    """Learning-rate decay after warm-up: cosine, linear or constant."""
    weight_decay: Annotated[float, Ge(0)] = 0.0
    """AdamW weight decay."""
    max_grad_norm: Annotated[float, Ge(0)] = 1.0
    """Gradient clipping norm (0 disables)."""
    eval_every: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 50
    """Steps between checkpoint evaluations (step 0 and the last step are always evaluated)."""
    checkpoint_every: Annotated[int, Ge(1), Le(MAX_INTEGER)] | None = None
    """Steps between checkpoints, a multiple of ``eval_every`` (None: at every evaluation); the last
    step and an early stop always save one."""
    log_every: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 10
    """Steps between logged training metrics (loss, lr, throughput); evaluation steps always log them."""
    eval_suite: str = "toy"
    """Named suite (``toy``) or suite YAML path."""
    eval_mode: EvalMode = "logits"
    """``logits`` (one forward pass, option-letter scoring) or ``generate`` (+ answer matchers)."""
    eval_batch_size: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 32
    """Questions per evaluation batch."""
    max_new_tokens: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 8
    """Generation budget in generate mode."""
    zero_stage: Annotated[int, Ge(0), Le(3)] = 2
    """DeepSpeed ZeRO stage (0-3); ignored when ``deepspeed_config`` is given."""
    deepspeed_config: str | None = None
    """Path to a user DeepSpeed JSON (batch sizes and optimizer are still set by the trial)."""
    max_ood_drop_pp: Annotated[float, Gt(0)] | None = None
    """Stop early when an OOD quadrant falls more than this many points below zero-shot."""
    eval_signals: tuple[Signal, ...] | None = None
    """Forgetting signals measured at every evaluation (counting_bias, classname_rate, output_drift,
    vision_probe), logged as ``signal/<value>`` with their cost as ``signal_time/<signal>``; None:
    output_drift on a single-task trial that ZeRO-3 does not shard across workers."""
    signal_every: Annotated[int, Ge(1), Le(MAX_INTEGER)] | None = None
    """Steps between signal measurements between evaluations (None: at evaluations only)."""
    early_stop_signal: SignalValue | None = None
    """Stop early when this signal value (``output_kl``, ``top1_agreement``, ...) passes
    ``early_stop_signal_max`` or ``early_stop_signal_min``."""
    early_stop_signal_max: float | None = None
    """Upper bound of ``early_stop_signal``: the trial stops when the value is above it."""
    early_stop_signal_min: float | None = None
    """Lower bound of ``early_stop_signal``: the trial stops when the value is below it."""
    workers: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 1
    """Ray Train workers (data-parallel ranks) per trial."""
    gpus_per_worker: Annotated[float, Ge(0)] = 0.0
    """GPUs per worker; 0 = CPU (gloo)."""
    precision: Precision = "auto"
    """Training and evaluation precision: ``auto`` (bf16 mixed precision on GPU workers, fp32 on CPU),
    ``bf16`` (bf16 weights and activations, fp32 optimizer state; CPU too) or ``fp32``."""
    attn_implementation: AttnImplementation = "sdpa"
    """Attention kernel of the language model and the vision encoder: ``sdpa`` (torch's fused attention),
    ``eager`` or ``flash_attention_2`` (needs the flash-attn package, GPU workers and bf16)."""
    activation_checkpointing: bool | None = None
    """Recompute each layer's activations in the backward pass instead of keeping them (much less
    activation memory, about a third more compute); None: on for the registered real models and their
    shapes (``qwen2.5-vl-7b``, ``qwen2.5-vl-3b@layers=2``), off for the toy models and local directories."""
    min_pixels: Annotated[int, Ge(1), Le(MAX_INTEGER)] | None = None
    """Qwen2.5-VL: an image with fewer pixels is scaled up to about this many (its processor's
    ``size.shortest_edge``), for training and evaluation; None: the processor's own. LLaVA-1.5 refuses
    it (every image is resized and cropped to 336 x 336, always 576 image tokens)."""
    max_pixels: Annotated[int, Ge(1), Le(MAX_INTEGER)] | None = None
    """Qwen2.5-VL: an image with more pixels is scaled down to about this many (its processor's
    ``size.longest_edge``; 28 x 28 pixels make one image token), for training and evaluation; None: the
    processor's own. LLaVA-1.5 refuses it."""
    max_seq_len: Annotated[int, Ge(1), Le(MAX_INTEGER)] | None = None
    """Longest training row in tokens, image tokens included; None: no limit."""
    overlength: Overlength = "error"
    """What a training row longer than ``max_seq_len`` does: ``error`` (refused, naming the row) or
    ``truncate`` (its tokens after ``max_seq_len`` are cut, never inside an image; counted in the
    ``train/truncated_rows`` metric)."""
    cpus_per_worker: Annotated[float, Gt(0)] = 1.0
    """CPUs per worker."""
    storage: str = DEFAULT_STORAGE
    """Root of checkpoints: local directory or s3://bucket/prefix."""
    keep_last: Annotated[int, Ge(1), Le(MAX_INTEGER)] = 2
    """Checkpoints kept per trial (the newest ones)."""
    max_failures: Annotated[int, Ge(0), Le(MAX_INTEGER)] = 2
    """Worker-group restarts Ray Train may do from the last checkpoint before the trial fails."""
    tracking_uri: str = DEFAULT_TRACKING_URI
    """MLflow tracking URI."""
    experiment: str = "forgetless"
    """MLflow experiment name (the grid's ``name``)."""
    sweep: str | None = None
    """Name of the sweep the trial belongs to (None for a standalone run)."""
    run_id: str | None = None
    """MLflow run to log into (the sweep's child run); None creates one."""
    continual_tasks: tuple[ContinualTask, ...] = ()
    """Continual learning: the tasks trained one after another (empty: a single-task trial)."""
    continual_epochs: tuple[Annotated[float, Gt(0)], ...] = ()
    """Epochs over each continual task's training data (with replay); one per task."""
    replay_per_task: Annotated[int, Ge(0), Le(MAX_INTEGER)] = 0
    """Continual learning: samples of every earlier task replayed with each later task (0: none)."""
    interpolate: tuple[Annotated[float, Ge(0), Le(1)], ...] = ()
    """WiSE-FT blend weights evaluated at the last checkpoint (0 = zero-shot, 1 = fine-tuned weights)."""

    @field_validator("experiment", "sweep")
    @classmethod
    def _folder_name(cls, name: str | None) -> str | None:
        problem = None if name is None else name_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    @field_validator("parts")
    @classmethod
    def _known_parts(cls, parts: str) -> str:
        split_parts(parts)
        return parts

    @field_validator("continual_tasks", mode="before")
    @classmethod
    def _resolved_tasks(cls, tasks: Any) -> Any:
        return tuple(resolve_task(task) for task in tasks) if isinstance(tasks, (list, tuple)) else tasks

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        checks = [
            (sum(m.ratio for m in self.mix) < 1, "mix ratios must sum to < 1 (the target dataset gets the rest)"),
            (
                self.batch_size % (self.workers * self.micro_batch_size) == 0,
                f"batch_size {self.batch_size} must be a multiple of workers x micro_batch_size "
                f"({self.workers} x {self.micro_batch_size})",
            ),
            (
                self.checkpoint_every is None or self.checkpoint_every % self.eval_every == 0,
                f"checkpoint_every must be a multiple of eval_every ({self.eval_every}), got {self.checkpoint_every}",
            ),
            (
                not self.interpolate or (self.zero_stage < 3 and not self.continual),
                "interpolate needs a single-task trial on ZeRO stage 0-2 (it blends whole weights)",
            ),
            *self._continual_checks(),
            *self._signal_checks(),
            *self._compute_checks(),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("invalid trial: " + "; ".join(problems))
        return self

    def _compute_checks(self) -> list[tuple[bool, str]]:
        flash = self.attn_implementation == "flash_attention_2"
        pixels = self.min_pixels is not None or self.max_pixels is not None
        return [
            (
                not flash or flash_attention_installed(),
                "attn_implementation flash_attention_2 needs the flash-attn package, which is not installed "
                "(use sdpa or eager)",
            ),
            (
                not flash or (self.gpus_per_worker > 0 and self.bf16),
                "attn_implementation flash_attention_2 runs on GPU workers in bf16 only",
            ),
            (
                self.min_pixels is None or self.max_pixels is None or self.min_pixels <= self.max_pixels,
                f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})",
            ),
            (
                not pixels or not self._llava(),
                "min_pixels/max_pixels apply to Qwen2.5-VL only: LLaVA-1.5 resizes and crops every image to "
                "336 x 336 (576 image tokens)",
            ),
        ]

    def _llava(self) -> bool:
        if self.model.partition("@")[0].startswith("llava"):
            return True
        family = model_family(self.model)
        return family is not None and family.name == "llava"

    @property
    def signals(self) -> tuple[str, ...]:
        """The signals the trial measures (``eval_signals``, or its default)."""
        if self.eval_signals is not None:
            return self.eval_signals
        return () if self.continual or self.signals_sharded else DEFAULT_SIGNALS

    @property
    def signals_sharded(self) -> bool:
        """Whether ZeRO-3 shards the weights across workers (rank 0 alone cannot run the signals)."""
        return self.zero_stage == 3 and self.workers > 1

    def _signal_checks(self) -> list[tuple[bool, str]]:
        stop = self.early_stop_signal
        bounded = self.early_stop_signal_max is not None or self.early_stop_signal_min is not None
        group = next((name for name, values in layout.SIGNAL_VALUES.items() if stop in values), None)
        return [
            (
                not self.eval_signals or not (self.continual or self.signals_sharded),
                "eval_signals need a single-task trial whose weights ZeRO-3 does not shard across workers",
            ),
            (
                self.signal_every is None or bool(self.signals),
                "signal_every needs eval_signals",
            ),
            (
                (stop is None) == (not bounded),
                "early_stop_signal needs early_stop_signal_max or early_stop_signal_min, and they need it",
            ),
            (
                stop is None or group in self.signals,
                f"early_stop_signal {stop} needs the signal {group} in eval_signals {list(self.signals)}",
            ),
        ]

    def _continual_checks(self) -> list[tuple[bool, str]]:
        if not self.continual_tasks:
            return [
                (
                    not self.continual_epochs and self.replay_per_task == 0,
                    "continual_epochs and replay_per_task need continual_tasks",
                )
            ]
        return [
            (
                len(self.continual_epochs) == len(self.continual_tasks),
                f"continual_epochs needs one value per task ({len(self.continual_tasks)}), got {len(self.continual_epochs)}",
            ),
            (
                len({t.name for t in self.continual_tasks}) == len(self.continual_tasks),
                "continual task names must be unique",
            ),
            (
                self.zero_stage < 3 and not self.deepspeed_config,
                "continual trials run ZeRO stage 0-2 without a DeepSpeed JSON (IncLoRA merges whole weights)",
            ),
            (
                not self.mix and self.data_fraction == 1.0,
                "continual trials take their data from the tasks (no mix, data_fraction 1)",
            ),
        ]

    @property
    def continual(self) -> bool:
        """Whether this is a continual-learning trial (tasks one after another)."""
        return bool(self.continual_tasks)

    @property
    def continual_method(self) -> str | None:
        """``inclora`` (LoRA merged after each task) or ``seqfull`` (full tuning across tasks)."""
        if not self.continual:
            return None
        return "inclora" if self.method == "lora" else "seqfull"

    @property
    def bf16(self) -> bool:
        """Whether the trial trains and evaluates in bf16 (``precision``; auto: on GPU workers)."""
        return self.precision == "bf16" or (self.precision == "auto" and self.gpus_per_worker > 0)

    @property
    def checkpointing(self) -> bool:
        """Whether activation checkpointing is on (``activation_checkpointing``; None: for real models)."""
        if self.activation_checkpointing is not None:
            return self.activation_checkpointing
        return real_model(self.model)

    @property
    def method_config(self) -> MethodConfig:
        return MethodConfig(self.method, self.lora_r, self.lora_alpha, self.lora_dropout)

    @property
    def mix_ratio(self) -> float:
        """Share of training samples that come from mixed-in datasets."""
        return sum(m.ratio for m in self.mix)

    @property
    def grad_accumulation(self) -> int:
        """Micro-batches per worker per optimizer step (keeps the global batch fixed)."""
        return self.batch_size // (self.workers * self.micro_batch_size)

    def identity(self) -> dict[str, Any]:
        """The settings that determine the trial's result (hashed into ``trial_id``)."""
        settings = {name: getattr(self, name) for name in type(self).model_fields if name not in RUN_FIELDS}
        settings["mix"] = [asdict(m) for m in self.mix]
        if self.continual:
            settings["continual_tasks"] = [task.to_dict() for task in self.continual_tasks]
            settings["continual_epochs"] = list(self.continual_epochs)
            for name in ("steps", "eval_every", "data_fraction"):
                settings.pop(name)
        else:
            for name in ("continual_tasks", "continual_epochs", "replay_per_task"):
                settings.pop(name)
        if self.method != "lora":
            for name in ("lora_r", "lora_alpha", "lora_dropout"):
                settings.pop(name)
        if self.interpolate:
            settings["interpolate"] = list(self.interpolate)
        else:
            settings.pop("interpolate")
        for name, default in DEFAULT_OMITTED.items():
            if settings[name] == default:
                settings.pop(name)
        if self.max_seq_len is None:
            settings.pop("overlength")
        return settings

    @property
    def trial_id(self) -> str:
        """Stable 12-hex id of the trial's resolved settings."""
        return content_key(self.identity(), length=12)

    @property
    def name(self) -> str:
        """Readable name: ``llm-full-lr1e-05-f1.0-s0`` (``-mix0.3`` when mixing, ``-r8`` for LoRA rank)."""
        method = f"lora-r{self.lora_r}" if self.method == "lora" else self.method
        name = f"{self.parts}-{method}-lr{format_lr(self.lr)}-f{format_share(self.data_fraction)}-s{self.seed}"
        if self.mix:
            name += f"-mix{format_share(self.mix_ratio)}"
        if self.continual:
            rank = f"-r{self.lora_r}" if self.method == "lora" else ""
            name = f"{self.continual_method}{rank}-{self.parts}-lr{format_lr(self.lr)}-s{self.seed}"
            name += f"-replay{self.replay_per_task}" if self.replay_per_task else ""
        return name

    @property
    def recipe(self) -> str:
        """Readable recipe label: ``llm · full · lr 1e-05`` (``seqfull · llm · lr 1e-06 · replay 20``)."""
        if self.continual:
            return continual_recipe_label(self.continual_method, self.parts, format_lr(self.lr), self.replay_per_task)
        return recipe_label(self.parts, self.method, format_lr(self.lr))

    @property
    def run_name(self) -> str:
        """Directory name of the trial's Ray Train run under the sweep's storage."""
        return f"{self.name}-{self.trial_id}"

    def mlflow_params(self) -> dict[str, str]:
        """Params of the trial's MLflow run (strings): its settings under their own names, plus the
        derived params of ``contract.layout`` (``PARAM_*``)."""
        params = {
            key: value
            for key, value in self.identity().items()
            if key not in ("mix", "deepspeed_config", "continual_tasks", "continual_epochs") and value is not None
        }
        params.update(
            {
                layout.PARAM_LR: format_lr(self.lr),
                layout.PARAM_MIX: json.dumps([asdict(m) for m in self.mix]),
                layout.PARAM_MIX_RATIO: format_share(self.mix_ratio),
                layout.PARAM_DATA_FRACTION: format_share(self.data_fraction),
                layout.PARAM_DEEPSPEED: self.deepspeed_config or f"zero_stage={self.zero_stage}",
                layout.PARAM_SUITE: self.eval_suite,
                layout.PARAM_RECIPE: self.recipe,
                layout.PARAM_TRIAL_ID: self.trial_id,
                layout.PARAM_TRIAL_NAME: self.name,
                "attn_implementation": self.attn_implementation,
                "activation_checkpointing": self.checkpointing,
            }
        )
        if self.continual:
            params.update(
                {
                    layout.PARAM_CONTINUAL_METHOD: self.continual_method,
                    layout.PARAM_CONTINUAL_TASKS: json.dumps([task.name for task in self.continual_tasks]),
                    layout.PARAM_CONTINUAL_EPOCHS: json.dumps(list(self.continual_epochs)),
                }
            )
        return {key: str(value) for key, value in params.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) for Ray configs; ``TrialConfig.from_dict`` reverses it."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        return cls.model_validate(data)

    def changed(self, **changes: Any) -> TrialConfig:
        """A validated copy with ``changes``."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def with_run(self, **changes: Any) -> TrialConfig:
        """A copy with run fields changed (storage, tracking, run id ...); identity unchanged."""
        unknown = set(changes) - RUN_FIELDS
        if unknown:
            raise ValueError(f"with_run changes only run fields, not {sorted(unknown)}")
        return self.changed(**changes)
