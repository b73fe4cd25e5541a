"""Model names a grid may use and where their weights are, without loading torch or transformers.

    from recipes.models.catalog import REGISTERED_MODELS, resolve_model_dir
    resolve_model_dir("qwen2.5-vl-3b")       # Path of Qwen/Qwen2.5-VL-3B-Instruct in the HF cache

A model is a registry name, a local directory in the Hugging Face layout, or a Hub id that is
already in the local Hugging Face cache (nothing is ever downloaded). Validating a grid reads
this module; loading a model is ``recipes.models.registry.load_model``.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from recipes.models.families import ModelFamily, family_for_model_type

TOY_INIT = "toy-qwen2.5-vl-init"
"""Registry name of the toy Qwen2.5-VL with random (seeded) weights."""
TOY_BASE = "toy-qwen2.5-vl"
"""Registry name of the toy Qwen2.5-VL pre-trained on the toy world."""

HUB_MODELS: dict[str, str] = {
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "llava-1.5-7b": "llava-hf/llava-1.5-7b-hf",
}
"""Short registry names of the paper's real models, resolved in the local Hugging Face cache."""

REGISTERED_MODELS = (TOY_BASE, TOY_INIT, *HUB_MODELS)


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither registered, a local directory, nor in the HF cache."""


def resolve_model_dir(name: str) -> Path:
    """The local directory holding ``name``'s weights; builds the toy models on first use."""
    if name in (TOY_BASE, TOY_INIT):
        # local: building the toy model needs torch and transformers; resolving other names does not
        from recipes.toyworld.base import toy_model_dir

        return toy_model_dir(pretrained=name == TOY_BASE)
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {candidate} has no config.json")
        return candidate
    repo_id = HUB_MODELS.get(name, name)
    if repo_id.count("/") == 1 and not candidate.exists():
        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            raise ModelNotFoundError(
                f"model {name!r} ({repo_id}) is not in the local Hugging Face cache; forgetless never downloads "
                f"at run time: fetch it first (`hf download {repo_id}`) or pass a local directory"
            ) from None
    registered = ", ".join(REGISTERED_MODELS)
    raise ModelNotFoundError(
        f"model {name!r} is not a registered name ({registered}), a local directory, or a Hub id (org/name)"
    )


def model_family(name: str) -> ModelFamily | None:
    """The ``ModelFamily`` of a model name without loading it (None when its files are not on this machine)."""
    if name in (TOY_BASE, TOY_INIT):
        return family_for_model_type("qwen2_5_vl")
    try:
        directory = resolve_model_dir(name)
        config = json.loads((directory / "config.json").read_text())
        return family_for_model_type(config.get("model_type", ""))
    except (ModelNotFoundError, OSError, ValueError):
        return None
