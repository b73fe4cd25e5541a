"""Collation with each family's chat template: image placeholder, lettered options, answer-only labels."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlavaProcessor, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from recipes.data.collate import IGNORE_INDEX, PLACEHOLDER_ROW, RecordCollator
from recipes.data.prompts import mcq_instruction
from recipes.models import load_model
from tests.data_fixtures import png_bytes
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
    words = sorted(
        set(
            " ".join([mcq_instruction(4), mcq_row()["question"], *mcq_row()["options"], "USER ASSISTANT"])
            .replace(".", " . ")
            .replace("?", " ? ")
            .replace(":", " : ")
            .replace("(", " ( ")
            .replace(")", " ) ")
            .replace(",", " , ")
            .split()
        )
    )
    vocab = {
        "<unk>": 0,
        "<s>": 1,
        "</s>": 2,
        "<pad>": 3,
        "<image>": 4,
        **{w: i + 5 for i, w in enumerate(words + list("ABCD"))},
    }
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=fast,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_TEMPLATE,
    )


PROCESSORS = {"qwen2_5_vl": lambda: tiny_qwen()[1], "llava": llava_processor}


@pytest.mark.parametrize("family", sorted(PROCESSORS))
@pytest.mark.parametrize("with_image", [True, False])
def test_labels_cover_only_the_answer(family, with_image):
    processor = PROCESSORS[family]()
    rows = [mcq_row(0, with_image=with_image, answer="C"), mcq_row(1, with_image=with_image, answer="A")]
    batch = RecordCollator(processor, with_answers=True)(rows)
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
    collate = RecordCollator(PROCESSORS[family](), padding_side="left")
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
    batch = RecordCollator(processor, with_answers=True, always_image=True)(rows)
    assert batch["input_ids"].shape[0] == 3 and "pixel_values" in batch
    assert (batch["labels"][-1] == IGNORE_INDEX).all()
    assert PLACEHOLDER_ROW["image"] is not None


def test_left_padding_for_evaluation_and_right_for_training():
    processor = tiny_qwen()[1]
    rows = [mcq_row(0), mcq_row(1, with_image=False)]
    left = RecordCollator(processor, padding_side="left")(rows)
    right = RecordCollator(processor, with_answers=True)(rows)
    assert (left["attention_mask"][:, -1] == 1).all()
    assert (right["attention_mask"][:, 0] == 1).all()
    with pytest.raises(ValueError, match="padding_side='right'"):
        RecordCollator(processor, with_answers=True, padding_side="left")(rows)


def test_toy_model_forward_and_generate_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model("toy-qwen2.5-vl-init")
    total = sum(p.numel() for p in loaded.model.parameters())
    assert 3e5 <= total <= 5e6
    batch = RecordCollator(loaded.processor, padding_side="left")([mcq_row(0), mcq_row(1)])
    with torch.no_grad():
        logits = loaded.model(**batch).logits
        generated = loaded.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert logits.shape[:2] == batch["input_ids"].shape
    prompt_length = batch["input_ids"].shape[1]
    assert torch.equal(generated[:, :prompt_length], batch["input_ids"])
    assert prompt_length < generated.shape[1] <= prompt_length + 3


def varied_rows(family: str) -> list[dict]:
    """Rows of different lengths: with and without an image, a conversation, and (Qwen2.5-VL) two images of two sizes."""
    rows = [
        mcq_row(0),
        mcq_row(1, with_image=False, answer="A"),
        {**mcq_row(2, answer="D"), "options": ["red", "blue striped square", "green", "red dotted circle", "blue"]},
        {
            **mcq_row(3),
            "kind": "freeform",
            "options": [],
            "answer": "a red striped circle",
            "history": [{"role": "user", "text": "Look at <image>."}, {"role": "assistant", "text": "A circle."}],
        },
    ]
    if family == "qwen2_5_vl":
        rows.append({**mcq_row(4), "extra_images": [png_bytes((10, 200, 10), size=84)]})
    return rows


def batched_reference(collate: RecordCollator, rows: list[dict]) -> dict[str, torch.Tensor]:
    """The rows processed together by the processor (``padding=True``), as collation did before rows were encoded alone."""
    from recipes.data.collate import conversation, decode_image

    if collate.with_answers:
        texts = [collate.answer_spans(row)[0] for row in rows]
    else:
        texts = [collate.prompt_text(row) for row in rows]
    images = [decode_image(data) for row in rows for data in conversation(row)[1]]
    collate.tokenizer.padding_side = collate.padding_side
    batch = collate.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
    return {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}


@pytest.mark.parametrize("family", sorted(PROCESSORS))
@pytest.mark.parametrize("with_answers", [True, False])
def test_rows_encoded_alone_and_padded_equal_the_batch_processed_at_once(family, with_answers):
    processor = PROCESSORS[family]()
    rows = varied_rows(family)
    collate = RecordCollator(processor, with_answers=with_answers, padding_side="right" if with_answers else "left")
    batch = collate(rows)
    reference = batched_reference(collate, rows)
    assert set(batch) - {"labels"} == set(reference)
    for key, value in reference.items():
        assert torch.equal(batch[key], value), key
    if with_answers:
        for index, row in enumerate(rows):
            alone = collate.encode(row)
            assert torch.equal(batch["labels"][index, : alone["labels"].shape[1]], alone["labels"][0])
        assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_encoded_rows_are_cached_by_content_and_bounded_in_bytes():
    processor = tiny_qwen()[1]
    rows = [mcq_row(0), mcq_row(1), mcq_row(2, with_image=False)]
    collate = RecordCollator(processor, with_answers=True)
    first = collate(rows)
    assert (collate.cache.hits, collate.cache.misses, len(collate.cache)) == (0, 3, 3)
    again = collate(list(reversed(rows)))
    assert collate.cache.hits == 3
    for key in ("input_ids", "labels"):
        assert torch.equal(again[key][:, : first[key].shape[1]].flip(0), first[key])
    changed = {**rows[0], "answer": "C"}  # same id, other content: encoded anew
    assert not torch.equal(collate([changed])["labels"], collate([rows[0]])["labels"])
    one_row = collate.cache.bytes // len(collate.cache)
    small = RecordCollator(processor, with_answers=True, cache_bytes=one_row * 2)
    small(rows)
    assert len(small.cache) <= 2 and small.cache.bytes <= one_row * 2
    uncached = RecordCollator(processor, with_answers=True, cache_bytes=0)
    assert uncached.cache is None and torch.equal(uncached(rows)["input_ids"], first["input_ids"])
