"""Model families, the model registry and the toy model.

    from recipes.models import load_model
    loaded = load_model("toy-qwen2.5-vl")

The names below are looked up on first use: ``recipes.models.families`` and
``recipes.models.catalog`` import neither torch nor transformers, so validating a grid (which
reads them) does not load them; ``recipes.models.registry`` (load_model) does.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "FAMILIES": "families",
    "LLAVA": "families",
    "QWEN2_5_VL": "families",
    "ModelFamily": "families",
    "family_for_model_type": "families",
    "REGISTERED_MODELS": "catalog",
    "TOY_BASE": "catalog",
    "TOY_INIT": "catalog",
    "ModelNotFoundError": "catalog",
    "ModelNotCachedError": "catalog",
    "resolve_model_dir": "catalog",
    "model_family": "catalog",
    "LoadedModel": "registry",
    "load_model": "registry",
}
"""Public name -> the submodule that defines it."""

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
