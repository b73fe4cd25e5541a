"""python -m orchestrator.plan GRID.yaml --gpu h100-80 [--mfu 0.4]

A grid's trials priced on a GPU kind (``orchestrator.pricing`` holds the formulas): one row per
trial kind (trials that differ only in learning rate, data or seed cost the same), the sweep's
GPU-hours and checkpoint storage, and the trial kinds that do not fit the GPU with what to change.

    from orchestrator.grid_pricing import price_grid, render_prices, fit_problems
    prices = price_grid(grid, expand_trials(grid), gpu_kind("h100-80"))
    print(render_prices(prices)); fit_problems(prices)   # [] when every trial fits
    step_costs(grid, expand_trials(grid))                # {"llm-full-lr1e-05-f1.0-s0": 4.1e9, ...}

A trial's LLM sequence length is its ``max_seq_len`` (default ``pricing.DEFAULT_SEQ_LEN``), its
vision patches per sample ``max_pixels`` / 14^2 (default ``pricing.DEFAULT_IMAGE_PATCHES``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from jobs.finetune.config import TrialConfig
from orchestrator.gpus import GpuKind
from orchestrator.grid_schema import Grid
from orchestrator.pricing import (
    DEFAULT_HEADROOM,
    DEFAULT_IMAGE_PATCHES,
    DEFAULT_MFU,
    DEFAULT_SEQ_LEN,
    TrialPrice,
    Workload,
    fits,
    gigabytes,
    model_shape,
    price_trial,
    remedies,
    step_seconds,
)
from recipes.common.text_table import text_table

PATCH_PIXELS = 14 * 14
"""Pixels of one vision patch (Qwen2.5-VL and LLaVA-1.5's CLIP both use 14 x 14)."""

PRICE_COLUMNS = (
    "parts",
    "method",
    "trials",
    "trainable",
    "state/worker",
    "activations",
    "with ckpt",
    "ckpt",
    "peak/worker",
    "fits",
    "s/step",
    "GPU-h/trial",
    "checkpoint",
)
"""Columns of the price table."""


@dataclass(frozen=True)
class KindPrice:
    """The price of one trial kind on one GPU kind."""

    trial: TrialConfig
    """The first trial of the kind (its settings stand for all of them)."""
    count: int
    """Trials of this kind in the sweep."""
    workload: Workload
    """How it runs."""
    price: TrialPrice
    """The estimate."""
    gpu: GpuKind
    """The GPU it is priced on."""
    mfu: float
    """Assumed model FLOPs utilisation."""
    headroom: float
    """Share of GPU memory kept free."""

    @property
    def fits(self) -> bool:
        """Whether a worker's peak fits the GPU with the headroom left."""
        return fits(self.price, self.gpu.memory_bytes, self.headroom)

    @property
    def seconds_per_step(self) -> float:
        """Estimated seconds per optimizer step."""
        return step_seconds(self.price, self.workload, self.gpu.bf16_flops, self.mfu)

    @property
    def gpus(self) -> float:
        """GPUs one trial holds (a CPU grid priced on GPUs: one per worker)."""
        return self.trial.workers * (self.trial.gpus_per_worker or 1.0)

    @property
    def gpu_hours(self) -> float | None:
        """GPU-hours of one trial (None for continual trials, whose steps depend on their data)."""
        if self.trial.continual:
            return None
        return self.trial.steps * self.seconds_per_step * self.gpus / 3600

    @property
    def storage_bytes(self) -> int:
        """Checkpoint bytes all trials of the kind hold at once (``keep_last`` each)."""
        return self.count * self.trial.keep_last * self.price.checkpoint_bytes


def trial_workload(trial: TrialConfig, on_gpu: bool) -> Workload:
    """How ``trial`` runs, on GPU workers (``on_gpu``) or on its own resources."""
    fp32 = trial.precision == "fp32" or (trial.precision == "auto" and not on_gpu)
    return Workload(
        micro_batch=trial.micro_batch_size,
        grad_accumulation=trial.grad_accumulation,
        workers=trial.workers,
        zero_stage=trial.zero_stage,
        checkpointing=trial.checkpointing,
        seq_len=trial.max_seq_len or DEFAULT_SEQ_LEN,
        image_patches=trial.max_pixels // PATCH_PIXELS if trial.max_pixels else DEFAULT_IMAGE_PATCHES,
        fp32=fp32,
    )


def _kind_key(trial: TrialConfig, workload: Workload) -> tuple:
    lora = (trial.lora_r,) if trial.method == "lora" else ()
    return (trial.model, trial.parts, trial.method, *lora, workload, trial.steps, trial.keep_last)


def price_grid(
    grid: Grid,
    trials: Sequence[TrialConfig],
    gpu: GpuKind,
    mfu: float = DEFAULT_MFU,
    headroom: float = DEFAULT_HEADROOM,
) -> list[KindPrice]:
    """One ``KindPrice`` per trial kind of ``trials``, priced on ``gpu``."""
    shape = model_shape(grid.model)
    kinds: dict[tuple, KindPrice] = {}
    for trial in trials:
        workload = trial_workload(trial, on_gpu=True)
        key = _kind_key(trial, workload)
        if key in kinds:
            kinds[key] = replace(kinds[key], count=kinds[key].count + 1)
            continue
        price = price_trial(shape, trial.parts, trial.method_config, workload)
        kinds[key] = KindPrice(trial, 1, workload, price, gpu, mfu, headroom)
    return list(kinds.values())


def step_costs(grid: Grid, trials: Sequence[TrialConfig]) -> dict[str, float]:
    """Trial name -> FLOPs of one optimizer step of one worker, recomputation included (the sweep's ETA
    weighs the seconds per step it sees by them); {} where the grid's model has no shape to price here
    (a Hub model not in this machine's cache, which the nodes download)."""
    try:
        shape = model_shape(grid.model)
    except Exception:  # an estimate only: a Hub model not cached here has no shape on this machine
        return {}
    on_gpu = grid.resources.gpus_per_worker > 0
    costs: dict[tuple, float] = {}
    named: dict[str, float] = {}
    for trial in trials:
        workload = trial_workload(trial, on_gpu)
        key = _kind_key(trial, workload)
        if key not in costs:
            price = price_trial(shape, trial.parts, trial.method_config, workload)
            samples = workload.micro_batch * workload.grad_accumulation
            costs[key] = (price.flops_per_sample + price.recompute_flops_per_sample) * samples
        named[trial.name] = costs[key]
    return named


def _count(number: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= size:
            return f"{number / size:.3g}{unit}"
    return str(number)


def price_row(kind: KindPrice) -> tuple[str, ...]:
    """One line of the price table."""
    price, trial = kind.price, kind.trial
    hours = kind.gpu_hours
    return (
        trial.parts,
        f"lora r{trial.lora_r}" if trial.method == "lora" else trial.method,
        str(kind.count),
        _count(price.trainable),
        gigabytes(price.state_bytes),
        gigabytes(price.activation_bytes_plain),
        gigabytes(price.activation_bytes_checkpointed),
        "on" if kind.workload.checkpointing else "off",
        gigabytes(price.memory_bytes),
        "yes" if kind.fits else "NO",
        f"{kind.seconds_per_step:.2f}",
        "-" if hours is None else f"{hours:,.1f}",
        gigabytes(price.checkpoint_bytes),
    )


def render_prices(kinds: Sequence[KindPrice]) -> str:
    """The price table and the sweep's totals."""
    first = kinds[0]
    workload = first.workload
    hours = sum((kind.gpu_hours or 0.0) * kind.count for kind in kinds)
    unpriced = sum(kind.count for kind in kinds if kind.gpu_hours is None)
    storage = sum(kind.storage_bytes for kind in kinds)
    gpu = first.gpu
    lines = [
        f"price on {gpu.name} ({gigabytes(gpu.memory_bytes)}, {gpu.bf16_flops / 1e12:g} TFLOP/s bf16 dense) at "
        f"{first.mfu:.0%} MFU, {first.headroom:.0%} memory headroom; sequence {workload.seq_len} tokens, "
        f"{workload.image_patches} vision patches per sample",
        text_table(PRICE_COLUMNS, [price_row(kind) for kind in kinds]),
        f"sweep: {hours:,.1f} GPU-hours"
        + (f" (+ {unpriced} continual trials, priced per step only)" if unpriced else "")
        + f"; checkpoints held: {gigabytes(storage)} (keep_last x trainable state per trial)",
    ]
    return "\n".join(lines)


def fit_problems(kinds: Sequence[KindPrice]) -> list[str]:
    """One line per trial kind that does not fit its GPU, naming what would make it fit."""
    problems = []
    for kind in kinds:
        if kind.fits:
            continue
        trial = kind.trial
        method = f"lora r{trial.lora_r}" if trial.method == "lora" else trial.method
        usable = kind.gpu.memory_bytes * (1 - kind.headroom)
        fixes = remedies(
            model_shape(trial.model),
            trial.parts,
            trial.method_config,
            kind.workload,
            kind.gpu.memory_bytes,
            kind.headroom,
        )
        advice = f"; try {', or '.join(fixes)}" if fixes else "; no single change fits: use a larger GPU"
        problems.append(
            f"parts {trial.parts} {method}: {gigabytes(kind.price.memory_bytes)} per worker > {gigabytes(usable)} "
            f"usable on {kind.gpu.name}{advice}"
        )
    return problems
