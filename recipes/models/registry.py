"""Model registry: turn a grid's ``model:`` value into a loaded model, processor and family.

A model is a registry name, a local directory in the Hugging Face layout, or a Hub id, read from
the local Hugging Face cache or first downloaded into it, once per node, unless ``HF_HUB_OFFLINE=1``
(the names and where their weights are: ``recipes.models.catalog``):

    from recipes.models import load_model
    loaded = load_model("toy-qwen2.5-vl")               # the toy base, built once and cached
    loaded = load_model("qwen2.5-vl-3b")                # Qwen/Qwen2.5-VL-3B-Instruct, cached or downloaded
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
from transformers import AutoConfig, AutoProcessor, AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from recipes.common.cache import content_key
from recipes.common.input_errors import reading
from recipes.models.catalog import TOY_BASE, TOY_INIT, resolve_model_dir
from recipes.models.families import ModelFamily, family_for_model_type
from recipes.models.processors import ImageQwen2_5_VLProcessor
from recipes.toyworld.model import load_toy_processor


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
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load ``name`` (registry name, shape model, local dir, or Hub id) with its processor and family.

    A Hub model that is not in the Hugging Face cache is downloaded there first, by one process per
    node (the others wait for it), unless ``HF_HUB_OFFLINE=1``.

    ``attn_implementation`` (``sdpa``, ``eager``, ``flash_attention_2``) is passed to
    ``from_pretrained``; None keeps transformers' choice (sdpa where the model supports it).
    """
    directory = resolve_model_dir(name, download=True)  # a Hub model missing here: one process per node downloads it
    with reading(f"model {directory}", OSError):  # transformers reports a malformed config or weights file as OSError
        config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    family = family_for_model_type(config.model_type)
    model_class = getattr(transformers, family.model_class)
    with reading(f"model {directory}", OSError):
        model = model_class.from_pretrained(
            directory,
            dtype=dtype or torch.float32,
            local_files_only=True,
            trust_remote_code=trust_remote_code,
            **({"attn_implementation": attn_implementation} if attn_implementation else {}),
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
