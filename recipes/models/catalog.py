"""Model names a grid may use and where their weights are, without loading torch or transformers.

    from recipes.models.catalog import REGISTERED_MODELS, resolve_model_dir
    resolve_model_dir("qwen2.5-vl-3b")       # Path of Qwen/Qwen2.5-VL-3B-Instruct in the HF cache
    resolve_model_dir("qwen2.5-vl-3b", download=True)   # downloads it first when it is not cached
    resolve_model_dir("qwen2.5-vl-3b@layers=2")   # a shape model, built once into the forgetless cache

A model is a registry name, a shape model (a real model's configuration at a chosen depth with
random weights: ``recipes.models.shapes``), a local directory in the Hugging Face layout, or a Hub
id (``org/name``). A Hub model is read from the local Hugging Face cache; one that is not there is
downloaded into it, once per node, only by the processes that load it (``download=True``:
``recipes.models.registry.load_model``, ``recipes.models.hub_download``), never while a grid is
validated, and never with ``HF_HUB_OFFLINE=1``. Validating a grid reads this module.
"""

from __future__ import annotations

import json
from pathlib import Path

from recipes.common.input_errors import InputError, reading
from recipes.common.json_loading import load_json
from recipes.common.redaction import redact_uri
from recipes.models.families import ModelFamily, family_for_model_type
from recipes.models.hub_download import HubDownloadError, cached_snapshot, download_snapshot, hub_cache, hub_offline
from recipes.models.shapes import parse_shape_name, shape_config_dict, shape_model_dir

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


class ModelNotCachedError(ModelNotFoundError):
    """A Hub model that is not in this machine's HF cache yet: the processes that load it download it."""


def resolve_model_dir(name: str, *, download: bool = False) -> Path:
    """The local directory holding ``name``'s weights; builds the toy and shape models on first use.

    A Hub model that is not cached raises ``ModelNotCachedError``, or with ``download`` is downloaded
    into the Hugging Face cache once per node (``recipes.models.hub_download``); with
    ``HF_HUB_OFFLINE=1`` it raises ``ModelNotFoundError`` either way.
    """
    try:
        shape = parse_shape_name(name)
    except ValueError as error:
        raise ModelNotFoundError(f"model {error}") from None
    if shape is not None:
        return shape_model_dir(shape)
    if name in (TOY_BASE, TOY_INIT):
        # local: building the toy model needs torch and transformers; resolving other names does not
        from recipes.toyworld.base import toy_model_dir

        return toy_model_dir(pretrained=name == TOY_BASE)
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        config_file = candidate / "config.json"
        if not config_file.is_file():
            raise ModelNotFoundError(f"model directory {candidate} has no config.json")
        with reading(str(config_file), OSError):
            config = load_json(config_file.read_bytes(), str(config_file))
        if not isinstance(config, dict):
            raise InputError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
        return candidate
    repo_id = HUB_MODELS.get(name, name)
    if repo_id.count("/") == 1 and not candidate.exists():
        cached = cached_snapshot(repo_id)
        if cached is not None:
            return cached
        if hub_offline():
            raise ModelNotFoundError(
                f"model {name!r} ({repo_id}) is not in the local Hugging Face cache ({hub_cache()}) and HF_HUB_OFFLINE=1 "
                f"forbids downloading it: fetch it first (`hf download {repo_id}`), unset HF_HUB_OFFLINE, "
                "or pass a local directory"
            )
        if not download:
            raise ModelNotCachedError(
                f"model {name!r} ({repo_id}) is not in the Hugging Face cache here ({hub_cache()}): "
                "each node downloads it once, before its workers load it"
            )
        try:
            return download_snapshot(repo_id)
        except HubDownloadError as error:
            raise ModelNotFoundError(f"model {name!r}: {error}") from None
    registered = ", ".join(REGISTERED_MODELS)
    raise ModelNotFoundError(
        f"model {redact_uri(name)[:200]!r} is not a registered name ({registered}), a shape model "
        "(e.g. qwen2.5-vl-3b@layers=2), a local directory, or a Hub id (org/name)"
    )


def model_family(name: str) -> ModelFamily | None:
    """The ``ModelFamily`` of a model name without loading it (None when its files are not on this machine)."""
    if name in (TOY_BASE, TOY_INIT):
        return family_for_model_type("qwen2_5_vl")
    try:
        shape = parse_shape_name(name)
        if shape is not None:
            return family_for_model_type(shape_config_dict(shape)["model_type"])
        directory = resolve_model_dir(name)
        config = json.loads((directory / "config.json").read_text())
        return family_for_model_type(config.get("model_type", ""))
    except (ModelNotFoundError, OSError, ValueError):
        return None
