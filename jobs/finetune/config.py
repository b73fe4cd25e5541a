"""The resolved settings of one trial: one grid cell, everything a fine-tune needs.

The sweep expands a grid file into ``TrialConfig`` objects; ``python -m jobs.finetune`` builds
one from its flags. A trial's identity is a stable hash of the settings that change its
result (``trial_id``), so re-running a grid finds its trials again instead of duplicating them:

    trial = TrialConfig(model="toy-qwen2.5-vl", parts="llm", lr=1e-5, steps=200)
    trial.trial_id, trial.name        # "3f2a9c0d1e7b", "llm-full-lr1e-05-f1.0-s0"
    trial.mlflow_params()             # the params every trial run carries (contract of DESIGN §5)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from contract.layout import continual_recipe_label, format_lr, format_share, recipe_label
from recipes.cache import content_key
from recipes.data.continual import ContinualTask, resolve_task
from recipes.data.stream import MixSource
from recipes.methods import MethodConfig
from recipes.parts import split_parts
from recipes.schedules import SCHEDULES

EVAL_MODES = ("logits", "generate")
"""Evaluation modes (see jobs.evaluate)."""

TRIAL_OWNED_KEYS = ("optimizer", "scheduler")
"""DeepSpeed JSON sections the trial sets itself (from the grid): a user's JSON must not hold them."""

RUN_FIELDS = frozenset(
    {"storage", "tracking_uri", "experiment", "sweep", "run_id", "keep_last", "cpus_per_worker", "max_failures"}
)
"""Fields that say where and how a trial runs, not what it computes: not part of its identity."""


@dataclass(frozen=True)
class TrialConfig:
    """One fine-tuning trial: model parts x method x learning rate x data, plus how it runs."""

    model: str
    """Registry name, local directory or cached Hub id of the base model."""
    parts: str
    """Trainable parts, '+'-combined (``llm``, ``vision``, ``projector``, ``llm.attn``, ...)."""
    lr: float
    """Peak learning rate."""
    method: str = "full"
    """``full`` or ``lora``."""
    lora_r: int = 8
    """LoRA rank (lora only)."""
    lora_alpha: float = 16.0
    """LoRA alpha (lora only)."""
    lora_dropout: float = 0.0
    """LoRA dropout (lora only)."""
    dataset: str = "toy-imagenet-vqa"
    """Target training dataset: registry name or MCQ parquet/jsonl path."""
    data_fraction: float = 1.0
    """Seeded random share of the target dataset used for training, in (0, 1]."""
    mix: tuple[MixSource, ...] = ()
    """Datasets mixed into the training stream, each with its share of samples."""
    seed: int = 0
    """Seed of initialisation-dependent randomness, data order and sampling."""
    steps: int = 100
    """Optimizer steps."""
    batch_size: int = 16
    """Global batch size (questions per optimizer step, over all workers)."""
    micro_batch_size: int = 8
    """Questions per worker per forward pass; gradient accumulation makes up the rest."""
    warmup_ratio: float = 0.1
    """Share of steps with linear warm-up."""
    schedule: str = "cosine"
    """Learning-rate decay after warm-up: cosine, linear or constant."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    eval_every: int = 50
    """Steps between checkpoint evaluations (step 0 and the last step are always evaluated)."""
    eval_suite: str = "toy"
    """Named suite or suite YAML path."""
    eval_mode: str = "logits"
    """``logits`` or ``generate``."""
    eval_batch_size: int = 32
    """Questions per evaluation batch."""
    max_new_tokens: int = 8
    """Generation budget in generate mode."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (0-3); ignored when ``deepspeed_config`` is given."""
    deepspeed_config: str | None = None
    """Path to a user DeepSpeed JSON (batch sizes and optimizer are still set by the trial)."""
    max_ood_drop_pp: float | None = None
    """Stop early when an OOD quadrant falls more than this many points below zero-shot."""
    workers: int = 1
    """Ray Train workers (data-parallel ranks)."""
    gpus_per_worker: float = 0.0
    """GPUs per worker; 0 = CPU (gloo)."""
    cpus_per_worker: float = 1.0
    """CPUs per worker."""
    storage: str = "./sweeps"
    """Root of checkpoints: local directory or s3://bucket/prefix."""
    keep_last: int = 2
    """Checkpoints kept per trial (the newest ones)."""
    max_failures: int = 2
    """Worker-group restarts Ray Train may do from the last checkpoint before the trial fails."""
    tracking_uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI."""
    experiment: str = "forgetless"
    """MLflow experiment name (the grid's ``name``)."""
    sweep: str | None = None
    """Name of the sweep the trial belongs to (None for a standalone run)."""
    run_id: str | None = None
    """MLflow run to log into (the sweep's child run); None creates one."""
    continual_tasks: tuple[ContinualTask, ...] = ()
    """Continual learning: the tasks trained one after another (empty: a single-task trial)."""
    continual_epochs: tuple[float, ...] = ()
    """Epochs over each continual task's training data (with replay); one per task."""
    replay_per_task: int = 0
    """Continual learning: samples of every earlier task replayed with each later task (0: none)."""

    def __post_init__(self) -> None:
        split_parts(self.parts)
        MethodConfig(self.method, self.lora_r, self.lora_alpha, self.lora_dropout)
        object.__setattr__(self, "mix", tuple(m if isinstance(m, MixSource) else MixSource(**m) for m in self.mix))
        object.__setattr__(self, "continual_tasks", tuple(resolve_task(t) for t in self.continual_tasks))
        object.__setattr__(self, "continual_epochs", tuple(float(e) for e in self.continual_epochs))
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 < self.data_fraction <= 1, f"data_fraction must be in (0, 1], got {self.data_fraction}"),
            (sum(m.ratio for m in self.mix) < 1, "mix ratios must sum to < 1 (the target dataset gets the rest)"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.workers >= 1, f"workers must be >= 1, got {self.workers}"),
            (self.micro_batch_size >= 1, f"micro_batch_size must be >= 1, got {self.micro_batch_size}"),
            (
                self.batch_size % (self.workers * self.micro_batch_size) == 0,
                f"batch_size {self.batch_size} must be a multiple of workers x micro_batch_size "
                f"({self.workers} x {self.micro_batch_size})",
            ),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (self.eval_mode in EVAL_MODES, f"eval_mode must be one of {', '.join(EVAL_MODES)}, got {self.eval_mode!r}"),
            (self.zero_stage in (0, 1, 2, 3), f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}"),
            (self.gpus_per_worker >= 0, f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}"),
            (self.keep_last >= 1, f"keep_last must be >= 1, got {self.keep_last}"),
            (
                self.max_ood_drop_pp is None or self.max_ood_drop_pp > 0,
                f"max_ood_drop_pp must be > 0, got {self.max_ood_drop_pp}",
            ),
            *self._continual_checks(),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("invalid trial: " + "; ".join(problems))

    def _continual_checks(self) -> list[tuple[bool, str]]:
        if not self.continual_tasks:
            return [(not self.continual_epochs and self.replay_per_task == 0,
                     "continual_epochs and replay_per_task need continual_tasks")]
        return [
            (len(self.continual_epochs) == len(self.continual_tasks),
             f"continual_epochs needs one value per task ({len(self.continual_tasks)}), got {len(self.continual_epochs)}"),
            (all(e > 0 for e in self.continual_epochs), f"continual_epochs must be > 0, got {list(self.continual_epochs)}"),
            (self.replay_per_task >= 0, f"replay_per_task must be >= 0, got {self.replay_per_task}"),
            (len({t.name for t in self.continual_tasks}) == len(self.continual_tasks), "continual task names must be unique"),
            (self.zero_stage < 3 and not self.deepspeed_config,
             "continual trials run ZeRO stage 0-2 without a DeepSpeed JSON (IncLoRA merges whole weights)"),
            (not self.mix and self.data_fraction == 1.0, "continual trials take their data from the tasks (no mix, data_fraction 1)"),
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
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUN_FIELDS}
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
        """Params of the trial's MLflow run (strings, per the DESIGN §5 contract)."""
        params = {
            key: value
            for key, value in self.identity().items()
            if key not in ("mix", "deepspeed_config", "continual_tasks", "continual_epochs") and value is not None
        }
        params.update(
            lr=format_lr(self.lr),
            mix=json.dumps([asdict(m) for m in self.mix]),
            mix_ratio=format_share(self.mix_ratio),
            data_fraction=format_share(self.data_fraction),
            deepspeed=self.deepspeed_config or f"zero_stage={self.zero_stage}",
            suite=self.eval_suite,
            recipe=self.recipe,
            trial_id=self.trial_id,
            trial_name=self.name,
        )
        if self.continual:
            params.update(
                continual_method=self.continual_method,
                continual_tasks=json.dumps([task.name for task in self.continual_tasks]),
                continual_epochs=json.dumps(list(self.continual_epochs)),
            )
        return {key: str(value) for key, value in params.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) for Ray configs; ``TrialConfig.from_dict`` reverses it."""
        data = asdict(self)
        data["mix"] = [asdict(m) for m in self.mix]
        data["continual_tasks"] = [task.to_dict() for task in self.continual_tasks]
        data["continual_epochs"] = list(self.continual_epochs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialConfig":
        return cls(**data)

    def with_run(self, **changes: Any) -> "TrialConfig":
        """A copy with run fields changed (storage, tracking, run id ...); identity unchanged."""
        unknown = set(changes) - RUN_FIELDS
        if unknown:
            raise ValueError(f"with_run changes only run fields, not {sorted(unknown)}")
        return replace(self, **changes)
