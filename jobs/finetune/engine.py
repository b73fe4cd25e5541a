"""Build a trial's DeepSpeed engine: model from the recipe, AdamW, warm-up + decay schedule.

The global batch is fixed by the trial; DeepSpeed gets ``train_batch_size`` = batch_size,
``train_micro_batch_size_per_gpu`` = micro_batch_size and the gradient accumulation that makes
them agree for the number of workers. The optimizer and schedule are the paper's (AdamW, warm-up
ratio, cosine/linear decay) and are passed to DeepSpeed as client objects, so a user's DeepSpeed
JSON may tune ZeRO but not replace them. AdamW runs torch's fused kernel (one pass over each
parameter instead of a chain of elementwise ops), which CPU and CUDA both have. CPU workers run
gloo, GPU workers NCCL. Precision follows the trial's ``precision`` (auto: bf16 on GPU, fp32 on
CPU): the DeepSpeed ``bf16`` section is set from it (a user JSON that says otherwise is refused),
so DeepSpeed casts the model to bf16 and keeps fp32 master weights. Activation checkpointing
(``TrialConfig.checkpointing``) is transformers' non-reentrant gradient checkpointing, as
LLaMA-Factory enables it.

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


def build_cpu_comm_op() -> bool:
    """Compile DeepSpeed's shared-memory collective op for CPU workers in this process; True if built.

    DeepSpeed's torch backend compiles it (``deepspeed.comm.torch.build_shm_op``) at the start of every
    CPU engine and caches it under ``~/.cache/torch_extensions``: the first trials on a machine would
    each wait for the compiler (about 30 s on 2 cores). The sweep builds it once, before any trial.
    Where DeepSpeed's accelerator is not the CPU there is nothing to build (False).
    """
    from deepspeed.comm.torch import build_shm_op

    return build_shm_op() is not None


def precision_problem(config: dict[str, Any], bf16: bool) -> str | None:
    """Why a user's DeepSpeed JSON contradicts the trial's precision, or None."""
    if config.get("fp16", {}).get("enabled"):
        return "fp16 is not supported; set the trial's precision (bf16 or fp32) instead"
    enabled = config.get("bf16", {}).get("enabled")
    if enabled is not None and bool(enabled) != bf16:
        return f"bf16.enabled is {enabled} but the trial's precision is {'bf16' if bf16 else 'fp32'}; set precision instead"
    return None


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each layer's activations in backward: transformers' non-reentrant checkpointing.

    ``activation_checkpointing_enable`` is transformers 5's name for the ``gradient_checkpointing_enable``
    that LLaMA-Factory calls, with the same ``use_reentrant=False``. It also hooks the input embeddings
    so that their output requires grad (``enable_input_require_grads``), which frozen embeddings (LoRA,
    a recipe that does not train them) need for gradients to reach the checkpointed layers' trainable
    weights. Only training forwards recompute (``model.training``): evaluation, generation with its
    KV cache included, runs as before.
    """
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


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
        if precision_problem(config, trial.bf16):
            raise ValueError(f"deepspeed config {path}: {precision_problem(config, trial.bf16)}")
    else:
        config = {"zero_optimization": {"stage": trial.zero_stage}}
    config["bf16"] = {**config.get("bf16", {}), "enabled": trial.bf16}
    config.update(
        train_batch_size=trial.batch_size,
        train_micro_batch_size_per_gpu=trial.micro_batch_size,
        gradient_accumulation_steps=trial.batch_size // (world_size * trial.micro_batch_size),
        gradient_clipping=trial.max_grad_norm,
        steps_per_print=10**9,
        wall_clock_breakdown=False,
    )
    return config


def trial_module(trial: TrialConfig, loaded: LoadedModel):
    """(module to train, TrainableReport): the trial's method on its parts, with activation checkpointing if on."""
    torch.manual_seed(trial.seed)  # identical LoRA initialisation on every rank
    model, report = apply_method(loaded.model, loaded.family, trial.parts, trial.method_config)
    if trial.checkpointing:
        enable_activation_checkpointing(loaded.model)  # the transformers model, under PEFT's wrapper if any
    model.train()  # from_pretrained returns eval mode; checkpointing and dropout act in training mode only
    return model, report


def build_engine(trial: TrialConfig, loaded: LoadedModel, world_size: int, use_gpu: bool):
    """(DeepSpeed engine, TrainableReport) for the trial's parts and method on ``loaded``."""
    model, report = trial_module(trial, loaded)
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
