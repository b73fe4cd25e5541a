"""Turn MCQ records into model batches with each family's own chat template.

The processor's chat template renders the conversation (system prompt, image placeholder,
question with lettered options, the instruction to answer with a letter); the processor expands
image placeholders and makes pixel tensors. Training batches carry ``labels`` that are -100
everywhere except the answer (the option letter and the end-of-turn token), so the loss is on
the answer only. Evaluation batches end with the generation prompt, so the next token is the
answer:

    collate = MCQCollator(processor, with_answers=True)
    batch = collate(rows)            # input_ids, attention_mask, pixel_values, ..., labels
    model(**batch).loss
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from PIL import Image

from recipes.data.prompts import mcq_prompt
from recipes.data.schema import LETTERS

IGNORE_INDEX = -100
"""Label value that the loss ignores (transformers' convention)."""


def _blank_png(size: int = 28) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


PLACEHOLDER_ROW = {
    "id": "__placeholder__",
    "image": _blank_png(),
    "question": "",
    "options": ["", ""],
    "answer": "A",
    "source": "placeholder",
    "meta": "{}",
}
"""A blank-image question appended to text-only batches when every rank must run the vision
encoder (ZeRO-3 gathers each module's shards collectively, so all ranks must call the same
modules). Its labels are ignored and its outputs dropped."""


def decode_image(data: bytes | None) -> Image.Image | None:
    """PIL RGB image from encoded bytes, or None for a text-only question."""
    if data is None:
        return None
    return Image.open(io.BytesIO(data)).convert("RGB")


def user_message(row: dict) -> dict:
    """The user turn of an MCQ record: an image part (when it has one) and the prompt text."""
    content: list[dict] = [{"type": "image"}] if row["image"] is not None else []
    content.append({"type": "text", "text": mcq_prompt(row["question"], list(row["options"]))})
    return {"role": "user", "content": content}


@dataclass
class MCQCollator:
    """Callable that turns a list of MCQ records into a padded batch for one model family."""

    processor: Any
    """The model's processor (tokenizer + image processor + chat template)."""
    with_answers: bool = False
    """True for training (append the answer letter and mask labels to it); False for evaluation."""
    padding_side: str = "right"
    """``right`` for training; ``left`` for evaluation, so the last position of every row is the answer."""
    always_image: bool = False
    """Append ``PLACEHOLDER_ROW`` to batches without images (ZeRO-3); callers drop its outputs."""
    _letter_ids: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def prompt_text(self, row: dict) -> str:
        """The rendered conversation up to and including the assistant's generation prompt."""
        return self.processor.apply_chat_template([user_message(row)], add_generation_prompt=True, tokenize=False)

    def answer_suffix(self, row: dict, prompt: str) -> str:
        """What the template appends after ``prompt`` for the answer: the letter and end-of-turn."""
        answer = {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]}
        full = self.processor.apply_chat_template([user_message(row), answer], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("chat template renders the answer turn with a different prefix than the prompt")
        return full[len(prompt) :].rstrip()

    def _text_length(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def letter_token_id(self, letter: str) -> int:
        """The token the model emits first when it answers ``letter`` right after the generation prompt."""
        if letter not in self._letter_ids:
            prompt = self.prompt_text({"image": None, "question": "?", "options": ["x", "y"], "answer": "A"})
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            full_ids = self.tokenizer(prompt + letter, add_special_tokens=False)["input_ids"]
            if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
                raise ValueError(f"cannot isolate the token of answer letter {letter!r} in this chat template")
            self._letter_ids[letter] = full_ids[len(prompt_ids)]
        return self._letter_ids[letter]

    def option_token_ids(self, max_options: int) -> torch.Tensor:
        """Token ids of the letters A.. for up to ``max_options`` options."""
        return torch.tensor([self.letter_token_id(letter) for letter in LETTERS[:max_options]])

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        """The batch of ``rows``; one row longer (``PLACEHOLDER_ROW`` last) when ``always_image`` adds it."""
        placeholder = self.always_image and all(row["image"] is None for row in rows)
        if placeholder:
            rows = [*rows, PLACEHOLDER_ROW]
        prompts = [self.prompt_text(row) for row in rows]
        texts = prompts
        answer_lengths: list[int] = []
        if self.with_answers:
            suffixes = [self.answer_suffix(row, prompt) for row, prompt in zip(rows, prompts)]
            texts = [prompt + suffix for prompt, suffix in zip(prompts, suffixes)]
            answer_lengths = [
                self._text_length(text) - self._text_length(prompt) for text, prompt in zip(texts, prompts)
            ]
        images = [decode_image(row["image"]) for row in rows if row["image"] is not None]
        self.tokenizer.padding_side = self.padding_side
        batch = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        batch = {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}
        if self.with_answers:
            if self.padding_side != "right":
                raise ValueError("training batches (with_answers=True) need padding_side='right'")
            lengths = batch["attention_mask"].sum(dim=1)
            positions = torch.arange(batch["input_ids"].shape[1]).unsqueeze(0)
            answer_start = (lengths - torch.tensor(answer_lengths)).unsqueeze(1)
            keep = (positions >= answer_start) & (positions < lengths.unsqueeze(1))
            batch["labels"] = torch.where(keep, batch["input_ids"], IGNORE_INDEX)
            if placeholder:
                batch["labels"][-1] = IGNORE_INDEX
        return batch
