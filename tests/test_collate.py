"""Collation with each family's chat template: image placeholder, lettered options, answer-only labels."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlavaProcessor, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from recipes.data.collate import IGNORE_INDEX, PLACEHOLDER_ROW, MCQCollator
from recipes.data.prompts import mcq_instruction
from recipes.models import load_model
from tests.tiny_models import mcq_row, tiny_qwen

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %} {% else %}ASSISTANT: {% for part in message['content'] %}{{ part['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
"""llava-hf/llava-1.5's conversation layout ("USER: <image>\\n... ASSISTANT: ...</s>")."""


def llava_processor() -> LlavaProcessor:
    """A LLaVA-1.5 processor with a word-level tokenizer over the test's words (no download)."""
    words = sorted(set(" ".join([mcq_instruction(4), mcq_row()["question"], *mcq_row()["options"], "USER ASSISTANT"]).replace(".", " . ").replace("?", " ? ").replace(":", " : ").replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split()))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "<image>": 4, **{w: i + 5 for i, w in enumerate(words + list("ABCD"))}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    return LlavaProcessor(image_processor=image_processor, tokenizer=fast, patch_size=14,
                          vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE)


PROCESSORS = {"qwen2_5_vl": lambda: tiny_qwen()[1], "llava": llava_processor}


@pytest.mark.parametrize("family", sorted(PROCESSORS))
@pytest.mark.parametrize("with_image", [True, False])
def test_labels_cover_only_the_answer(family, with_image):
    processor = PROCESSORS[family]()
    rows = [mcq_row(0, with_image=with_image, answer="C"), mcq_row(1, with_image=with_image, answer="A")]
    batch = MCQCollator(processor, with_answers=True)(rows)
    for row, ids, labels, mask in zip(rows, batch["input_ids"], batch["labels"], batch["attention_mask"]):
        answer = processor.tokenizer.decode(ids[labels != IGNORE_INDEX]).replace(" ", "")
        assert answer in (f"{row['answer']}<|im_end|>", f"{row['answer']}</s>")
        assert (labels[mask == 0] == IGNORE_INDEX).all()
    if with_image:
        assert "pixel_values" in batch
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert ((batch["input_ids"] == image_token).any(dim=1) == with_image).all()


@pytest.mark.parametrize("family", sorted(PROCESSORS))
def test_prompt_has_lettered_options_and_the_instruction(family):
    collate = MCQCollator(PROCESSORS[family](), padding_side="left")
    prompt = collate.prompt_text(mcq_row(0))
    for letter, option in zip("ABCD", mcq_row(0)["options"]):
        assert f"{letter}. {option}" in prompt
    assert mcq_instruction(4) in prompt
    assert prompt.rstrip().endswith(("assistant", "ASSISTANT:"))
    ids = collate.option_token_ids(4)
    assert len(set(ids.tolist())) == 4


def test_placeholder_row_keeps_the_vision_encoder_in_text_only_batches():
    processor = tiny_qwen()[1]
    rows = [mcq_row(0, with_image=False), mcq_row(1, with_image=False)]
    batch = MCQCollator(processor, with_answers=True, always_image=True)(rows)
    assert batch["input_ids"].shape[0] == 3 and "pixel_values" in batch
    assert (batch["labels"][-1] == IGNORE_INDEX).all()
    assert PLACEHOLDER_ROW["image"] is not None


def test_left_padding_for_evaluation_and_right_for_training():
    processor = tiny_qwen()[1]
    rows = [mcq_row(0), mcq_row(1, with_image=False)]
    left = MCQCollator(processor, padding_side="left")(rows)
    right = MCQCollator(processor, with_answers=True)(rows)
    assert (left["attention_mask"][:, -1] == 1).all()
    assert (right["attention_mask"][:, 0] == 1).all()
    with pytest.raises(ValueError, match="padding_side='right'"):
        MCQCollator(processor, with_answers=True, padding_side="left")(rows)


def test_toy_model_forward_and_generate_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model("toy-qwen2.5-vl-init")
    total = sum(p.numel() for p in loaded.model.parameters())
    assert 3e5 <= total <= 5e6
    batch = MCQCollator(loaded.processor, padding_side="left")([mcq_row(0), mcq_row(1)])
    with torch.no_grad():
        logits = loaded.model(**batch).logits
        generated = loaded.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert logits.shape[:2] == batch["input_ids"].shape
    prompt_length = batch["input_ids"].shape[1]
    assert torch.equal(generated[:, :prompt_length], batch["input_ids"])
    assert prompt_length < generated.shape[1] <= prompt_length + 3
