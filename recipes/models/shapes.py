"""python -m recipes.parts qwen2.5-vl-7b@layers=2

Shape models: the paper's real models (Qwen2.5-VL-3B/7B-Instruct, LLaVA-1.5-7B) built from their
real, shipped configurations with random, seeded weights, at full or reduced depth, with no
weights downloaded. They have the real widths, vocabularies, special-token ids and processors,
so memory, throughput, checkpoint sizes and the training code paths can be measured and tested
on any machine; they know nothing (their answers are chance).

A shape model is spelled ``<model>@<key>=<int>[,<key>=<int>...]`` with ``<model>`` one of
``SHAPE_MODELS`` and the keys:

- ``layers``: language-model decoder layers (default: the real depth);
- ``vision_layers``: vision-encoder blocks (default: ``layers`` when it is given, at most the
  real depth; otherwise the real depth);
- ``seed``: seed of the random weights (default 0).

    from recipes.models.shapes import parse_shape_name, shape_config, build_shape_model
    spec = parse_shape_name("qwen2.5-vl-3b@layers=2")      # ShapeSpec(base="qwen2.5-vl-3b", layers=2, ...)
    config = shape_config("qwen2.5-vl-7b")                  # the real configuration, full depth
    model = build_shape_model(spec, device="meta")          # shapes only, no memory
    path = shape_model_dir(spec)                             # built once into the forgetless cache

The plain names (``qwen2.5-vl-3b``) keep meaning the real weights in the Hugging Face cache
(``recipes.models.catalog``); only the ``@`` spelling builds a shape model. Parsing a name and
reading its configuration as JSON (``shape_config_dict``) load neither torch nor transformers,
so validating a grid stays light; building does. The configurations are shipped in
``SHAPE_CONFIG_DIR/<model>/`` (transformers 5.x layout, with the processor files), next to this
module. The tokenizer is the toy world's byte-level BPE, padded with unused filler tokens so that
every special token sits at the real model's id (``build_shape_tokenizer``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.common.cache import cached_dir, content_key

if TYPE_CHECKING:  # annotations only: parsing names must not load torch or transformers
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

SHAPE_CONFIG_DIR = Path(__file__).with_name("shape_configs")
"""The shipped configurations: ``<model>/config.json`` plus the processor's files (no weights)."""

SHAPE_MODELS = ("qwen2.5-vl-3b", "qwen2.5-vl-7b", "llava-1.5-7b")
"""Registry names with a shipped configuration: the real models of ``recipes.models.catalog.HUB_MODELS``
(Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct, llava-hf/llava-1.5-7b-hf)."""

SHAPE_KEYS = ("layers", "vision_layers", "seed")
"""The keys a shape spelling may set after ``@``."""

SHAPE_FORMAT_VERSION = 2
"""Bump when what a built shape directory holds changes (its cache key includes it)."""

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
"""Qwen2.5's added tokens, in id order from ``QWEN_FIRST_SPECIAL_ID`` (as in the real tokenizer)."""
QWEN_FIRST_SPECIAL_ID = 151643
"""Id of ``<|endoftext|>`` in the real Qwen2.5 tokenizer; the byte-level vocabulary fills the ids below it."""

LLAVA_LEADING_TOKENS = ("<unk>", "<s>", "</s>")
"""Llama's first three ids (0, 1, 2)."""
LLAVA_ADDED_TOKENS = ("<image>", "<pad>")
"""llava-1.5-7b-hf's added tokens, at ids 32000 and 32001."""
LLAVA_FIRST_ADDED_ID = 32000
"""Id of ``<image>`` in llava-1.5-7b-hf's tokenizer."""

PAD_TOKEN_IDS = {"qwen2_5_vl": 151643, "llava": 32001}
"""Padding token id of the shape tokenizers per model type (the real tokenizers': ``<|endoftext|>``, ``<pad>``)."""

FILLER_TOKEN = "<|unused_{}|>"
"""Spelling of the filler tokens that pad the vocabulary; no merge produces them, so text never encodes to them."""


@dataclass(frozen=True)
class ShapeSpec:
    """One shape model: a shipped configuration at a chosen depth, with seeded random weights."""

    base: str
    """The registry name whose configuration it uses (``qwen2.5-vl-3b``, ``qwen2.5-vl-7b``, ``llava-1.5-7b``)."""
    layers: int
    """Language-model decoder layers."""
    vision_layers: int
    """Vision-encoder blocks."""
    seed: int = 0
    """Seed of the random weights."""

    @property
    def name(self) -> str:
        """The canonical spelling (every key written out): ``qwen2.5-vl-3b@layers=2,vision_layers=2,seed=0``."""
        return f"{self.base}@layers={self.layers},vision_layers={self.vision_layers},seed={self.seed}"


def _base_config_dict(base: str) -> dict[str, Any]:
    return json.loads((SHAPE_CONFIG_DIR / base / "config.json").read_text())


def _depths(config: dict[str, Any]) -> tuple[int, int]:
    """(decoder layers, vision blocks) of a configuration dict."""
    vision = config["vision_config"]
    return config["text_config"]["num_hidden_layers"], vision.get("depth", vision.get("num_hidden_layers"))


def full_spec(base: str, seed: int = 0) -> ShapeSpec:
    """The shape of ``base`` at its real depth."""
    if base not in SHAPE_MODELS:
        raise ValueError(f"no shipped configuration for model {base!r}; shape models: {', '.join(SHAPE_MODELS)}")
    layers, vision_layers = _depths(_base_config_dict(base))
    return ShapeSpec(base, layers, vision_layers, seed)


def parse_shape_name(name: str) -> ShapeSpec | None:
    """The ``ShapeSpec`` a name spells, None when it is not a shape spelling (no ``@`` after a plain name).

    A path or Hub id (with a ``/`` before the ``@``) is never a shape spelling.

    Raises ValueError naming the bad part: an unknown model before ``@``, an unknown or repeated
    key, a value that is not a whole number, or a depth outside 1..the real depth.
    """
    base, at, settings = name.partition("@")
    if not at or "/" in base:
        return None
    if base not in SHAPE_MODELS:
        raise ValueError(
            f"{name!r}: {base!r} has no shipped configuration; shape models are "
            f"{', '.join(f'{known}@layers=N' for known in SHAPE_MODELS)}"
        )
    values: dict[str, int] = {}
    for piece in settings.split(","):
        key, equals, value = (part.strip() for part in piece.partition("="))
        if key not in SHAPE_KEYS or not equals:
            raise ValueError(f"{name!r}: {piece.strip()!r} is not one of {', '.join(f'{k}=N' for k in SHAPE_KEYS)}")
        if key in values:
            raise ValueError(f"{name!r}: {key} is given twice")
        if not value.isdigit():
            raise ValueError(f"{name!r}: {key}={value!r} is not a whole number")
        values[key] = int(value)
    full = full_spec(base)
    layers = values.get("layers", full.layers)
    vision_layers = values.get("vision_layers", min(layers, full.vision_layers) if "layers" in values else None)
    vision_layers = full.vision_layers if vision_layers is None else vision_layers
    for key, value, limit in (("layers", layers, full.layers), ("vision_layers", vision_layers, full.vision_layers)):
        if not 1 <= value <= limit:
            raise ValueError(f"{name!r}: {key}={value} is outside 1..{limit} (the depth of {base})")
    return ShapeSpec(base, layers, vision_layers, values.get("seed", 0))


def as_spec(name_or_spec: str | ShapeSpec) -> ShapeSpec:
    """A ``ShapeSpec`` from a spec, a shape spelling, or a plain shape model name (full depth)."""
    if isinstance(name_or_spec, ShapeSpec):
        return name_or_spec
    spec = parse_shape_name(name_or_spec)
    return spec if spec is not None else full_spec(name_or_spec)


def reduced_vision_indexes(indexes: list[int], depth: int) -> list[int]:
    """Qwen2.5-VL's full-attention blocks kept valid at ``depth`` blocks: those below it, and the last block.

    The real encoder alternates windowed blocks with a full-attention block every 8 and ends
    on one (7, 15, 23, 31); a reduced encoder keeps both kinds and still ends on full attention.
    """
    return sorted({index for index in indexes if index < depth} | {depth - 1})


def shape_config_dict(name_or_spec: str | ShapeSpec) -> dict[str, Any]:
    """The configuration of a shape model as a JSON dict (transformers 5.x layout), without loading transformers."""
    spec = as_spec(name_or_spec)
    config = _base_config_dict(spec.base)
    text, vision = config["text_config"], config["vision_config"]
    text["num_hidden_layers"] = spec.layers
    text.pop("layer_types", None)  # one entry per layer; transformers derives it from num_hidden_layers
    if "depth" in vision:  # Qwen2.5-VL
        vision["fullatt_block_indexes"] = reduced_vision_indexes(vision["fullatt_block_indexes"], spec.vision_layers)
        vision["depth"] = spec.vision_layers
    else:  # LLaVA's CLIP vision tower
        vision["num_hidden_layers"] = spec.vision_layers
    return config


def shape_config(name_or_spec: str | ShapeSpec) -> PretrainedConfig:
    """The transformers configuration of a shape model (real depth for a plain name, reduced for a spec)."""
    from transformers import CONFIG_MAPPING  # local: parsing shape names must not load transformers

    config = shape_config_dict(name_or_spec)
    return CONFIG_MAPPING[config["model_type"]].from_dict(config)


def build_shape_model(name_or_spec: str | ShapeSpec, device: str = "cpu"):
    """The shape model with seeded random weights (fp32) on ``device``; ``"meta"`` gives shapes without memory."""
    import torch  # local: parsing shape names must not load torch
    import transformers

    from recipes.models.families import family_for_model_type

    spec = as_spec(name_or_spec)
    config = shape_config(spec)
    model_class = getattr(transformers, family_for_model_type(config.model_type).model_class)
    with torch.random.fork_rng(), torch.device(device):
        torch.manual_seed(spec.seed)
        model = model_class(config)
    text = config.get_text_config()
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = PAD_TOKEN_IDS[config.model_type]
    return model


def _toy_vocabulary() -> tuple[list[str], list[tuple[str, str]]]:
    """The toy world's byte-level BPE vocabulary (tokens in id order, special tokens left out) and merges."""
    from recipes.toyworld.base import SHIPPED_BASE_DIR  # local: the toy world loads torch
    from recipes.toyworld.model import SPECIAL_TOKENS

    model = json.loads((SHIPPED_BASE_DIR / "tokenizer.json").read_text())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return [token for token in tokens if token not in SPECIAL_TOKENS], merges


def build_shape_tokenizer(base: str) -> PreTrainedTokenizerFast:
    """A tokenizer whose ids fit ``base``'s vocabulary, with every special token at the real model's id.

    The toy world's byte-level BPE (any text encodes; toy-world words are single tokens) fills
    the low ids, unused filler tokens pad it up to the first special id, and the real special
    tokens follow in the real order: Qwen2.5's ``<|endoftext|>`` .. ``<|file_sep|>`` at
    151643..151664, or Llama's ``<unk> <s> </s>`` at 0..2 and LLaVA's ``<image> <pad>`` at 32000..32001.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    config = shape_config_dict(base)
    vocab_size = config["text_config"]["vocab_size"]
    toy_tokens, merges = _toy_vocabulary()
    llava = config["model_type"] == "llava"
    leading = list(LLAVA_LEADING_TOKENS) if llava else []
    first_added, added = (
        (LLAVA_FIRST_ADDED_ID, LLAVA_ADDED_TOKENS) if llava else (QWEN_FIRST_SPECIAL_ID, QWEN_SPECIAL_TOKENS)
    )
    tokens = leading + toy_tokens
    tokens += [FILLER_TOKEN.format(index) for index in range(len(tokens), first_added)]
    tokenizer = Tokenizer(models.BPE(vocab={token: index for index, token in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in (*leading, *added)])
    if llava:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
        )
        special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
        special["extra_special_tokens"] = {"image_token": "<image>"}
    else:
        special = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
        special["extra_special_tokens"] = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, padding_side="right", **special)
    expected = {token: index for index, token in enumerate(leading)}
    expected |= {token: first_added + index for index, token in enumerate(added)}
    expected[fast.pad_token] = PAD_TOKEN_IDS[config["model_type"]]
    wrong = {
        token: fast.convert_tokens_to_ids(token)
        for token, index in expected.items()
        if fast.convert_tokens_to_ids(token) != index
    }
    if wrong or len(fast) > vocab_size:
        raise RuntimeError(
            f"{base} shape tokenizer: special tokens at wrong ids {wrong} or {len(fast)} > {vocab_size} ids"
        )
    fast.chat_template = json.loads((SHAPE_CONFIG_DIR / base / "chat_template.json").read_text())["chat_template"]
    return fast


def _save_shape(spec: ShapeSpec, directory: Path) -> None:
    """Write a shape model in the Hugging Face layout: config, bf16 safetensors, tokenizer, processor files."""
    import torch  # local: parsing shape names must not load torch

    started = time.perf_counter()
    model = build_shape_model(spec)
    built = time.perf_counter()
    model.to(torch.bfloat16).save_pretrained(directory)
    if not (directory / "config.json").is_file():
        raise RuntimeError(f"{directory}: shape model weights were not written (called from a non-zero rank?)")
    del model
    for path in sorted((SHAPE_CONFIG_DIR / spec.base).iterdir()):
        if path.name != "config.json":
            shutil.copy2(path, directory / path.name)
    build_shape_tokenizer(spec.base).save_pretrained(directory)
    saved = time.perf_counter()
    report = {"spec": spec.name, "build_s": round(built - started, 2), "save_s": round(saved - built, 2)}
    (directory / "shape_model.json").write_text(json.dumps(report, indent=2) + "\n")


def shape_model_dir(name_or_spec: str | ShapeSpec) -> Path:
    """The cached directory of a shape model, built on first use (``$FORGETLESS_CACHE/models/``).

    Weights are stored in bf16 to halve the disk; ``load_model`` loads them in the dtype it is
    asked for (fp32 by default). Concurrent callers wait for the first build (``cached_dir``).
    """
    spec = as_spec(name_or_spec)
    identity = {
        "spec": spec.name,
        "config": shape_config_dict(spec),
        "files": {path.name: path.read_text() for path in sorted((SHAPE_CONFIG_DIR / spec.base).iterdir())},
        "tokenizer": _toy_vocabulary(),
        "version": SHAPE_FORMAT_VERSION,
    }
    slug = spec.name.replace("@", "-").replace(",", "-").replace("=", "")
    return cached_dir("models", f"shape-{slug}-{content_key(identity)}", lambda directory: _save_shape(spec, directory))
