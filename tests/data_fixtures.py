"""Small data fixtures the data tests build themselves: PNGs, MCQ records, class folders, a tiny CLIP.

Nothing here downloads: the CLIP model is random weights from a tiny config and its tokenizer
is a word-level ``tokenizers`` model over the fixture class names.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

CLASS_NAMES = ("red circle", "red square", "blue circle", "blue square", "green circle", "green square", "yellow star")
"""Classes of the fixture class folder (directory names use underscores)."""


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    """A tiny solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def mcq_record(index: int, *, image: bytes | None = None, answer: str = "B", **changes) -> dict:
    """A valid MCQ record (with ``changes`` applied)."""
    record = {
        "id": f"q{index}",
        "image": image,
        "question": f"What is shown in picture {index}?",
        "options": ["cat", "dog", "bird", "fish"],
        "answer": answer,
        "source": "fixture",
        "meta": "{}",
    }
    record.update(changes)
    return record


def write_class_folder(root: Path, images_per_class: int = 3, class_names=CLASS_NAMES) -> Path:
    """root/<class_dir>/<n>.png for every fixture class; returns root."""
    for class_index, name in enumerate(class_names):
        folder = root / name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for image_index in range(images_per_class):
            (folder / f"{image_index}.png").write_bytes(png_bytes((30 * class_index % 256, 20 * image_index, 90)))
    return root


def build_tiny_clip(directory: Path, words=None) -> Path:
    """Save a random tiny CLIPModel and a word-level tokenizer for ``words`` to ``directory``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    words = sorted(set(words or " ".join(("a photo of", *CLASS_NAMES)).split()))
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14),
        projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
