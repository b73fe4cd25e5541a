"""Model families: where each architecture keeps its vision encoder, projector and language model.

A family names the real module paths of one transformers architecture, so that the named
parts of a recipe (``vision``, ``projector``, ``llm``, ``llm.attn``, ...) resolve to parameter
names of the real class (see ``recipes.parts``). Adding an architecture means adding one
``ModelFamily`` entry here:

    from recipes.models.families import family_for_model_type
    family = family_for_model_type("qwen2_5_vl")
    family.vision_blocks      # "model.visual.blocks"
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFamily:
    """The module layout of one multimodal architecture (transformers 5.x parameter names)."""

    name: str
    """Family name used in messages and the registry (``qwen2_5_vl``, ``llava``)."""
    model_type: str
    """``config.model_type`` of checkpoints of this family."""
    model_class: str
    """Name of the transformers class that loads it (``Qwen2_5_VLForConditionalGeneration``)."""
    vision: str
    """Prefix of the vision encoder's parameters (the projector may live inside it)."""
    projector: str
    """Prefix of the vision-to-language projector's parameters."""
    language_model: str
    """Prefix of the language model's parameters (embeddings, decoder layers, final norm)."""
    lm_head: str
    """Prefix of the output head's parameters."""
    vision_blocks: str
    """Module path of the ``ModuleList`` of vision encoder blocks (for ``vision.last<N>``)."""
    llm_layers: str
    """Module path of the ``ModuleList`` of language-model decoder layers."""
    attn_projections: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    """Module names, relative to a decoder layer, of the attention projections (``llm.attn``)."""
    mlp_gate_up: tuple[str, ...] = ("mlp.gate_proj", "mlp.up_proj")
    """Module names, relative to a decoder layer, of the MLP gate and up projections."""
    processor_class: str = ""
    """Name of the transformers processor class of this family (subclasses count as the family's too)."""
    max_images_per_row: int | None = None
    """Images one training or evaluation row may have (None: any number, as Qwen2.5-VL takes)."""

    def __post_init__(self) -> None:
        for field_name in ("vision", "projector", "language_model", "lm_head"):
            if not getattr(self, field_name).endswith("."):
                raise ValueError(f"ModelFamily {self.name}: {field_name} prefix must end with '.'")


QWEN2_5_VL = ModelFamily(
    name="qwen2_5_vl",
    model_type="qwen2_5_vl",
    model_class="Qwen2_5_VLForConditionalGeneration",
    vision="model.visual.",
    projector="model.visual.merger.",
    language_model="model.language_model.",
    lm_head="lm_head.",
    vision_blocks="model.visual.blocks",
    llm_layers="model.language_model.layers",
    processor_class="Qwen2_5_VLProcessor",
)

LLAVA = ModelFamily(
    name="llava",
    model_type="llava",
    model_class="LlavaForConditionalGeneration",
    vision="model.vision_tower.",
    projector="model.multi_modal_projector.",
    language_model="model.language_model.",
    lm_head="lm_head.",
    vision_blocks="model.vision_tower.encoder.layers",
    llm_layers="model.language_model.layers",
    processor_class="LlavaProcessor",
    max_images_per_row=1,
)

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (QWEN2_5_VL, LLAVA)}


def family_for_model_type(model_type: str) -> ModelFamily:
    """The family of a checkpoint from its ``config.model_type``; a clear error when unsupported."""
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    supported = ", ".join(sorted(f.model_type for f in FAMILIES.values()))
    raise ValueError(f"unsupported model_type {model_type!r}: forgetless supports {supported}")


def family_for_processor(processor: object) -> ModelFamily | None:
    """The family whose processor class ``processor`` is an instance of (None when none is)."""
    names = {cls.__name__ for cls in type(processor).__mro__}
    return next((family for family in FAMILIES.values() if family.processor_class in names), None)
