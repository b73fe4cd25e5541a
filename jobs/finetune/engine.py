"""Build a trial's DeepSpeed engine: model from the recipe, AdamW, warm-up + decay schedule.

The global batch is fixed by the trial; DeepSpeed gets ``train_batch_size`` = batch_size,
``train_micro_batch_size_per_gpu`` = micro_batch_size and the gradient accumulation that makes
them agree for the number of workers. The optimizer and schedule are the paper's (AdamW, warm-up
ratio, cosine/linear decay) and are passed to DeepSpeed as client objects, so a user's DeepSpeed
JSON may tune ZeRO and precision but not replace them. AdamW runs torch's fused kernel (one pass
over each parameter instead of a chain of elementwise ops), which CPU and CUDA both have. CPU
workers run fp32 with gloo; GPU workers run bf16 with NCCL.

    engine, report = build_engine(trial, loaded, world_size=2, use_gpu=False)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import deepspeed
import torch

from jobs.finetune.config import TRIAL_OWNED_KEYS, TrialConfig
from recipes.methods import apply_method
from recipes.models import LoadedModel
from recipes.schedules import lr_multiplier


def deepspeed_config(trial: TrialConfig, world_size: int, use_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config of a trial: the user's JSON (if any) with the trial's batch sizes."""
    if trial.deepspeed_config:
        path = Path(trial.deepspeed_config)
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"deepspeed config {path}: {error}") from None
        owned = [key for key in TRIAL_OWNED_KEYS if key in config]
        if owned:
            raise ValueError(
                f"deepspeed config {path}: remove {', '.join(owned)}; the trial sets AdamW and the "
                "learning-rate schedule from the grid (lr, warmup_ratio, schedule)"
            )
    else:
        config = {"zero_optimization": {"stage": trial.zero_stage}}
        if use_gpu:
            config["bf16"] = {"enabled": True}
    config.update(
        train_batch_size=trial.batch_size,
        train_micro_batch_size_per_gpu=trial.micro_batch_size,
        gradient_accumulation_steps=trial.batch_size // (world_size * trial.micro_batch_size),
        gradient_clipping=trial.max_grad_norm,
        steps_per_print=10**9,
        wall_clock_breakdown=False,
    )
    return config


def build_engine(trial: TrialConfig, loaded: LoadedModel, world_size: int, use_gpu: bool):
    """(DeepSpeed engine, TrainableReport) for the trial's parts and method on ``loaded``."""
    torch.manual_seed(trial.seed)  # identical LoRA initialisation on every rank
    model, report = apply_method(loaded.model, loaded.family, trial.parts, trial.method_config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=trial.lr, weight_decay=trial.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, trial.steps, trial.warmup_ratio, trial.schedule)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(trial, world_size, use_gpu),
    )
    return engine, report


def current_lr(engine) -> float:
    """The learning rate the next optimizer step uses."""
    return engine.lr_scheduler.get_last_lr()[0]
