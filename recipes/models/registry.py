"""Model registry: turn a grid's ``model:`` value into a loaded model, processor and family.

A model is a registry name, a local directory in the Hugging Face layout, or a Hub id that is
already in the local Hugging Face cache (nothing is ever downloaded):

    from recipes.models import load_model
    loaded = load_model("toy-qwen2.5-vl")               # the toy base, built once and cached
    loaded = load_model("qwen2.5-vl-3b")                # Qwen/Qwen2.5-VL-3B-Instruct from the HF cache
    loaded = load_model("/models/llava-1.5-7b-hf")      # any local qwen2_5_vl or llava checkpoint
    loaded.model, loaded.processor, loaded.family, loaded.fingerprint
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import AutoConfig, AutoProcessor, AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from recipes.cache import content_key
from recipes.models.families import ModelFamily, family_for_model_type
from recipes.models.processors import ImageQwen2_5_VLProcessor
from recipes.models.toy import load_toy_processor
from recipes.models.toy_base import toy_model_dir

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


@dataclass
class LoadedModel:
    """A model ready to train or evaluate, with what is needed to feed it."""

    model: Any
    """The transformers model (``...ForConditionalGeneration``)."""
    processor: Any
    """Its processor (image processor + tokenizer + chat template)."""
    family: ModelFamily
    """Where its parts live."""
    name: str
    """The name it was loaded by (registry name, path or Hub id)."""
    path: Path
    """The directory its weights came from."""
    fingerprint: str
    """Content identity of the weights, used as a cache key (e.g. for zero-shot results)."""


def resolve_model_dir(name: str) -> Path:
    """The local directory holding ``name``'s weights; builds the toy models on first use."""
    if name in (TOY_BASE, TOY_INIT):
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
    """The family of a model name without loading it (None when its files are not on this machine)."""
    if name in (TOY_BASE, TOY_INIT):
        return family_for_model_type("qwen2_5_vl")
    try:
        directory = resolve_model_dir(name)
        config = json.loads((directory / "config.json").read_text())
        return family_for_model_type(config.get("model_type", ""))
    except (ModelNotFoundError, OSError, ValueError):
        return None


def weights_fingerprint(directory: Path) -> str:
    """Identity of a checkpoint directory: its config plus the names and sizes of its weight files."""
    files = sorted(
        (p.name, p.stat().st_size) for p in directory.iterdir() if p.suffix in (".safetensors", ".bin", ".json")
    )
    return content_key({"config": (directory / "config.json").read_text(), "files": files})


def load_processor(directory: Path, family: ModelFamily, trust_remote_code: bool = False):
    """The checkpoint's processor; for Qwen2.5-VL without torchvision, the image-only variant."""
    try:
        return AutoProcessor.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    except (AttributeError, ImportError, ValueError, TypeError) as error:
        if family.name != "qwen2_5_vl":
            raise
        # transformers requires torchvision for Qwen2.5-VL's video processor; images need none of it.
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(directory, local_files_only=True)
        template = tokenizer.chat_template
        template_file = directory / "chat_template.json"
        if template_file.is_file():
            template = json.loads(template_file.read_text()).get("chat_template", template)
        if template is None:
            raise ValueError(f"{directory}: no chat template found ({error})") from error
        return ImageQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=template)


def load_model(
    name: str,
    *,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load ``name`` (registry name, local dir, or cached Hub id) with its processor and family."""
    directory = resolve_model_dir(name)
    config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    family = family_for_model_type(config.model_type)
    model_class = getattr(transformers, family.model_class)
    model = model_class.from_pretrained(
        directory,
        dtype=dtype or torch.float32,
        local_files_only=True,
        trust_remote_code=trust_remote_code,
    )
    if name in (TOY_BASE, TOY_INIT):
        processor = load_toy_processor(directory)
    else:
        processor = load_processor(directory, family, trust_remote_code)
    return LoadedModel(
        model=model,
        processor=processor,
        family=family,
        name=name,
        path=directory,
        fingerprint=weights_fingerprint(directory),
    )
