"""Tuning methods: which tensors an optimizer may change, given the parts a recipe selects.

``full`` trains the selected parameters and freezes everything else. ``lora`` wraps the linear
layers inside the selected parts with PEFT LoRA adapters (r, alpha, dropout) and trains the
adapters only; ``merge_lora`` folds them back for export. Both report trainable / total:

    from recipes.methods import MethodConfig, apply_method
    model, report = apply_method(model, family, "llm", MethodConfig(name="lora", lora_r=8))
    print(report)            # trainable 24,576 / 1,251,648 parameters (1.96%)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from recipes.models.families import ModelFamily
from recipes.parts import resolve_parts, split_parts

if TYPE_CHECKING:  # annotations only: grid validation reads METHODS and MethodConfig and must not load torch
    from torch import nn

METHODS = ("full", "lora")
"""The tuning methods a grid can name."""


@dataclass(frozen=True)
class MethodConfig:
    """How to tune the selected parts."""

    name: str = "full"
    """``full`` (train the selected parameters) or ``lora`` (adapters on their linear layers)."""
    lora_r: int = 8
    """LoRA rank (lora only)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: updates are scaled by alpha / r (lora only)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch input (lora only)."""

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"method {self.name!r} is not one of {', '.join(METHODS)}")
        if self.lora_r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass(frozen=True)
class TrainableReport:
    """Trainable and total parameter counts after a method is applied."""

    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / {self.total:,} parameters ({100 * self.share:.2f}%)"


def count_parameters(model: nn.Module) -> TrainableReport:
    """Trainable and total parameter counts of ``model`` as it is now."""
    params = list(model.parameters())
    return TrainableReport(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def lora_target_modules(model: nn.Module, family: ModelFamily, parts: str) -> list[str]:
    """Names of the ``nn.Linear`` modules inside the selected parts.

    The output head is only a target when ``lm_head`` is named explicitly: ``llm`` LoRA adapts
    the decoder's linear layers, as LLaMA-Factory's ``lora_target: all`` does.
    """
    from torch.nn import Linear  # local: the module is imported by grid validation, which must not load torch

    selected = set(resolve_parts(model, family, parts))
    head_named = "lm_head" in split_parts(parts)
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, Linear)
        and f"{name}.weight" in selected
        and (head_named or not f"{name}.".startswith(family.lm_head))
    ]
    if not targets:
        raise ValueError(f"parts {parts!r} contain no linear layers for LoRA")
    return targets


def apply_method(model: nn.Module, family: ModelFamily, parts: str, method: MethodConfig):
    """Freeze/wrap ``model`` for ``method`` on ``parts``; returns (model, TrainableReport)."""
    if method.name == "full":
        selected = set(resolve_parts(model, family, parts))
        for name, param in model.named_parameters():
            param.requires_grad_(name in selected)
        return model, count_parameters(model)

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=method.lora_r,
        lora_alpha=method.lora_alpha,
        lora_dropout=method.lora_dropout,
        target_modules=lora_target_modules(model, family, parts),
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    return peft_model, count_parameters(peft_model)


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain transformers model with LoRA adapters folded into its weights (for export)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
