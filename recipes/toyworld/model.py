"""The toy model: a tiny Qwen2.5-VL (about a million parameters) that the project builds itself.

Everything comes from code, nothing from the network: a byte-level BPE tokenizer trained on the
toy world's texts, the real ``Qwen2VLImageProcessor`` (PIL backend) configured for small
images, a Qwen-style chat template, and a ``Qwen2_5_VLForConditionalGeneration`` built from a
config. ``recipes.models.registry`` turns it into the registry names ``toy-qwen2.5-vl-init``
(random weights) and ``toy-qwen2.5-vl`` (pre-trained on the toy world, see ``toy_base``):

    from recipes.toyworld.model import ToyModelConfig, build_toy_components
    model, processor = build_toy_components(ToyModelConfig(), texts=["What is this?"])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from recipes.models.processors import ImageQwen2_5_VLProcessor

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2.5-VL's special tokens, with the same strings as the real tokenizer."""

SYSTEM_PROMPT = "You are a helpful assistant."
"""The default system prompt of Qwen2.5-VL's chat template (LLaMA-Factory's qwen2_vl template)."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5-VL's chat layout (system, user with image placeholder, assistant), images only."""


@dataclass(frozen=True)
class ToyModelConfig:
    """Sizes of the toy Qwen2.5-VL. The defaults give about 1.3M parameters."""

    vocab_size: int = 1024
    """Target size of the BPE vocabulary trained on the toy world's texts (special tokens included)."""
    hidden_size: int = 128
    """Language model width."""
    num_layers: int = 4
    """Language model decoder layers."""
    num_heads: int = 4
    """Attention heads of the language model (head_dim = hidden_size / num_heads)."""
    num_kv_heads: int = 2
    """Key/value heads of the language model (grouped-query attention, as in Qwen2.5)."""
    intermediate_size: int = 384
    """Language model MLP width."""
    vision_hidden_size: int = 64
    """Vision encoder width."""
    vision_depth: int = 4
    """Vision encoder blocks."""
    vision_heads: int = 2
    """Vision encoder attention heads."""
    vision_intermediate_size: int = 128
    """Vision encoder MLP width."""
    patch_size: int = 14
    """Vision patch size in pixels (Qwen2.5-VL uses 14)."""
    image_size: int = 56
    """Images are resized to image_size x image_size (a multiple of 2 * patch_size)."""
    max_positions: int = 1024
    """Maximum sequence length."""
    seed: int = 0
    """Seed of the random initialisation."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("ToyModelConfig.hidden_size must be divisible by num_heads")
        if (self.hidden_size // self.num_heads) % 4:
            raise ValueError("ToyModelConfig: head_dim (hidden_size / num_heads) must be a multiple of 4 for mrope")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("ToyModelConfig.num_heads must be divisible by num_kv_heads")
        if self.image_size % (2 * self.patch_size):
            raise ValueError("ToyModelConfig.image_size must be a multiple of 2 * patch_size")
        if self.vocab_size < 300:
            raise ValueError("ToyModelConfig.vocab_size must be >= 300 (256 bytes + special tokens + merges)")

    def to_dict(self) -> dict:
        """Plain-dict view, used in content hashes."""
        return asdict(self)


def build_toy_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (any text encodes; frequent toy-world words are single tokens)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    scaffolding = [SYSTEM_PROMPT, "<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n"]
    tokenizer.train_from_iterator([*scaffolding, *texts], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="right",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_toy_image_processor(config: ToyModelConfig) -> Qwen2VLImageProcessorPil:
    """Qwen2.5-VL's image processor, fixed to image_size x image_size inputs."""
    pixels = config.image_size * config.image_size
    return Qwen2VLImageProcessorPil(
        patch_size=config.patch_size,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=pixels,
        max_pixels=pixels,
    )


def build_toy_processor(config: ToyModelConfig, tokenizer: PreTrainedTokenizerFast) -> ImageQwen2_5_VLProcessor:
    """The processor the toy model is used with."""
    return ImageQwen2_5_VLProcessor(build_toy_image_processor(config), tokenizer, chat_template=CHAT_TEMPLATE)


def build_toy_model(config: ToyModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLForConditionalGeneration:
    """A randomly initialised (seeded) tiny Qwen2.5-VL sized for ``tokenizer``."""
    head_dim = config.hidden_size // config.num_heads
    quarter = head_dim // 4  # mrope splits head_dim/2 rotary pairs into (temporal, height, width)
    mrope_section = [head_dim // 2 - 2 * quarter, quarter, quarter]
    token_id = tokenizer.convert_tokens_to_ids
    model_config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_kv_heads,
            max_position_embeddings=config.max_positions,
            rope_scaling={"type": "mrope", "mrope_section": mrope_section},
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=config.vision_depth,
            hidden_size=config.vision_hidden_size,
            intermediate_size=config.vision_intermediate_size,
            num_heads=config.vision_heads,
            out_hidden_size=config.hidden_size,
            patch_size=config.patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=config.image_size,
            fullatt_block_indexes=[config.vision_depth - 1],
        ),
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = Qwen2_5_VLForConditionalGeneration(model_config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def build_toy_components(config: ToyModelConfig, texts: Iterable[str]):
    """(model, processor) of a fresh toy model whose tokenizer is trained on ``texts``."""
    tokenizer = build_toy_tokenizer(texts, config.vocab_size)
    return build_toy_model(config, tokenizer), build_toy_processor(config, tokenizer)


def save_toy(model, processor: ImageQwen2_5_VLProcessor, directory: Path) -> None:
    """Write a toy model and its processor parts in the Hugging Face layout.

    transformers writes weights from rank 0 only when torch.distributed is initialised, so
    this must run in a process outside any trial's process group (the sweep driver builds the
    toy models before it starts trials); a write that was silently skipped is an error here.
    """
    directory = Path(directory)
    model.save_pretrained(directory)
    if not (directory / "config.json").is_file():
        raise RuntimeError(f"{directory}: model weights were not written (called from a non-zero rank?)")
    processor.tokenizer.save_pretrained(directory)
    processor.image_processor.save_pretrained(directory)


def load_toy_processor(directory: Path) -> ImageQwen2_5_VLProcessor:
    """The processor saved by ``save_toy``."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(directory)
    return ImageQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)
