"""Image features of a frozen vision tower and projector, kept from one evaluation to the next.

    memo = FrozenImageFeatures.for_model(loaded.model, loaded.family)   # None if the image path trains
    result = evaluator.evaluate(model, rank, world, image_features=memo)

A trial evaluates the same suite, batch for batch, at every checkpoint. When no parameter of the
vision encoder or the projector is trained (``llm``, ``llm.attn``, LoRA on the LLM, ...), the
image features those modules produce for a batch are the same at every evaluation, so they are
computed at the first one, kept in host memory, and handed to the model at the next ones through
the ``mm_encoder_outputs`` argument that Qwen2.5-VL and LLaVA take in place of ``pixel_values``
(``generate`` passes it through). The evaluator keys them by its fixed batch index, so no pixel is
hashed. Keeping stops at ``max_bytes`` (the first batches stay; later ones are encoded at every
evaluation): at Qwen2.5-VL-7B's 448-pixel images a feature set is about 1.8 MB per image.

Not used with ZeRO-3 across ranks: a rank that skips the vision forward would leave the others
waiting in its parameter gathers.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from recipes.models.families import ModelFamily

DEFAULT_FEATURE_BYTES = 2**30
"""Host memory one worker keeps image features in (1 GiB: the toy suite's take about 4 MB)."""

IMAGE_INPUTS = ("image_grid_thw", "image_sizes")
"""Batch tensors besides ``pixel_values`` that the vision forward reads (those a family emits)."""


def image_path_frozen(model: torch.nn.Module, family: ModelFamily) -> bool:
    """Whether no parameter of the vision encoder or projector (adapters included) is trained."""
    return not any(
        param.requires_grad
        for name, param in model.named_parameters()
        if name.startswith((family.vision, family.projector))
    )


class FrozenImageFeatures:
    """Per-batch image features of a model whose image path does not change, up to ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_FEATURE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._features: dict[Hashable, tuple[torch.Tensor, ...]] = {}

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, family: ModelFamily, max_bytes: int = DEFAULT_FEATURE_BYTES
    ) -> FrozenImageFeatures | None:
        """A memo for ``model`` (parameter names as loaded) when its image path is frozen, else None."""
        return cls(max_bytes) if image_path_frozen(model, family) else None

    def inputs(self, key: Hashable, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``batch`` (on the model's device) with ``pixel_values`` replaced by the features of batch ``key``."""
        if "pixel_values" not in batch:
            return batch
        device = batch["pixel_values"].device
        features = self._features.get(key)
        if features is None:
            self.misses += 1
            features = self.encode(model, batch)
            self.keep(key, features)
        else:
            self.hits += 1
            features = tuple(feature.to(device) for feature in features)
        inputs = {name: value for name, value in batch.items() if name != "pixel_values"}
        inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features)}
        return inputs

    @staticmethod
    @torch.no_grad()
    def encode(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The model's per-image features of ``batch`` (what its forward computes from ``pixel_values``)."""
        image_inputs = {name: batch[name] for name in IMAGE_INPUTS if name in batch}
        output = model.get_image_features(pixel_values=batch["pixel_values"], return_dict=True, **image_inputs)
        return tuple(output.pooler_output)

    def keep(self, key: Hashable, features: tuple[torch.Tensor, ...]) -> None:
        size = sum(feature.numel() * feature.element_size() for feature in features)
        if self.bytes + size <= self.max_bytes:
            self._features[key] = tuple(feature.detach().cpu() for feature in features)
            self.bytes += size

    def __len__(self) -> int:
        return len(self._features)
