"""Learning-rate schedules: linear warm-up, then cosine, linear or no decay (the paper's setups).

from recipes.schedules import lr_multiplier
scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer, lambda step: lr_multiplier(step, total_steps=400, warmup_ratio=0.1, schedule="cosine"))
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant")
"""Decay shapes after warm-up."""


def lr_multiplier(step: int, total_steps: int, warmup_ratio: float, schedule: str = "cosine") -> float:
    """Share of the peak learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    warmup = int(total_steps * warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))
