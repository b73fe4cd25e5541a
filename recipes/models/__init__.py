"""Model families, the model registry and the toy model.

    from recipes.models import load_model
    loaded = load_model("toy-qwen2.5-vl")
"""

from recipes.models.families import FAMILIES, LLAVA, QWEN2_5_VL, ModelFamily, family_for_model_type
from recipes.models.registry import (
    REGISTERED_MODELS,
    TOY_BASE,
    TOY_INIT,
    LoadedModel,
    ModelNotFoundError,
    load_model,
    resolve_model_dir,
)

__all__ = [
    "FAMILIES",
    "LLAVA",
    "QWEN2_5_VL",
    "REGISTERED_MODELS",
    "TOY_BASE",
    "TOY_INIT",
    "LoadedModel",
    "ModelFamily",
    "ModelNotFoundError",
    "family_for_model_type",
    "load_model",
    "resolve_model_dir",
]
