"""Tiny random models of the real architectures, built from configs (no downloads).

Used by the tests of parts, methods, collation and evaluation:

    model, processor = tiny_qwen()          # Qwen2_5_VLForConditionalGeneration + processor
    model, batch = tiny_llava(), llava_batch(model)
"""

from __future__ import annotations

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from recipes.toyworld.model import ToyModelConfig, build_toy_model, build_toy_processor, build_toy_tokenizer
from tests.data_fixtures import mcq_record, png_bytes

TINY_TEXTS = [
    "What is the class of this image?\nA. red striped circle\nB. blue dotted square\n"
    "Please answer with a single letter (A, B, C, or D).",
    "How many objects are there? one two three four",
]

TINY_QWEN = ToyModelConfig(
    vocab_size=400,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=64,
    vision_hidden_size=16,
    vision_depth=3,
    vision_heads=2,
    vision_intermediate_size=32,
)
"""A tiny Qwen2.5-VL: 2 decoder layers, 3 vision blocks."""


def tiny_qwen(config: ToyModelConfig = TINY_QWEN, tie_embeddings: bool = False):
    """(model, processor) of a tiny random Qwen2.5-VL; ``tie_embeddings`` mimics Qwen2.5-VL-3B."""
    tokenizer = build_toy_tokenizer(TINY_TEXTS, config.vocab_size)
    model = build_toy_model(config, tokenizer)
    if tie_embeddings:
        model.config.tie_word_embeddings = True
        model.config.get_text_config().tie_word_embeddings = True
        model.lm_head.weight = model.get_input_embeddings().weight
    return model, build_toy_processor(config, tokenizer)


def tiny_llava() -> LlavaForConditionalGeneration:
    """A tiny random LLaVA-1.5 (CLIP vision tower, 2-layer MLP projector, Llama decoder)."""
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            projection_dim=16,
        ),
        text_config=dict(
            model_type="llama",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=128,
        ),
        image_token_index=127,
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config)


def llava_batch(model: LlavaForConditionalGeneration, batch_size: int = 2) -> dict[str, torch.Tensor]:
    """A training batch for ``tiny_llava``: 4 image tokens (2x2 patches) then text, labels = inputs."""
    generator = torch.Generator().manual_seed(0)
    image_tokens = torch.full((batch_size, 4), model.config.image_token_index)
    text = torch.randint(0, 100, (batch_size, 8), generator=generator)
    input_ids = torch.cat([image_tokens, text], dim=1)
    labels = torch.cat([torch.full_like(image_tokens, -100), text], dim=1)
    pixel_values = torch.randn(batch_size, 3, 28, 28, generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values,
        "labels": labels,
    }


def mcq_row(index: int = 0, with_image: bool = True, answer: str = "B") -> dict:
    """One MCQ record of the data contract, with a 56x56 picture unless ``with_image`` is False."""
    image = png_bytes((40 * index % 256, 120, 200), size=56) if with_image else None
    return mcq_record(
        index,
        image=image,
        answer=answer,
        question="What is the class of this image?",
        options=["red striped circle", "blue dotted square", "green circle", "red square"],
    )
