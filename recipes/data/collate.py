"""Turn records of the data contract (MCQ and free-form) into model batches with each family's chat template.

The processor's chat template renders the conversation (system prompt, image placeholders,
the earlier turns of a conversation, the question: for MCQ rows with lettered options and the
instruction to answer with a letter); the processor expands image placeholders and makes pixel
tensors. Images go where the text's ``<image>`` / ``<image k>`` placeholders are (in place, as
the family's image tokens); images no placeholder names go first in the first user turn. A
family that takes one image per row (LLaVA-1.5) gets a clear error naming a row with more.

Training batches carry ``labels`` that are -100 everywhere except the assistant's turns (each
reply and its end-of-turn token: the option letter of an MCQ row, the reference answer of a
free-form row, and every earlier assistant turn of a conversation), so the loss is on the
assistant tokens only. Evaluation batches end with the generation prompt, so the next token is
the answer:

    collate = RecordCollator(processor, with_answers=True)
    batch = collate(rows)            # input_ids, attention_mask, pixel_values, ..., labels
    model(**batch).loss
"""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from PIL import Image

from recipes.data import prompts as prompts_module
from recipes.data import schema as schema_module
from recipes.data.encoded_store import EncodedRowStore, source_digest
from recipes.data.prompts import IMAGE_PLACEHOLDER, mcq_prompt
from recipes.data.schema import ASSISTANT_ROLE, LETTERS, MCQ_KIND, USER_ROLE, row_history, row_images, row_kind

IGNORE_INDEX = -100
"""Label value that the loss ignores (transformers' convention)."""

DEFAULT_CACHE_BYTES = 512 * 2**20
"""Encoded rows one collator keeps (512 MiB: the toy world's rows several times over; at the
paper's 448-pixel images about a hundred rows, so large datasets are encoded as they stream)."""


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


def question_text(row: dict) -> str:
    """The text of a record's last user turn: the MCQ prompt (question, options, instruction) or the question."""
    if row_kind(row) == MCQ_KIND:
        return mcq_prompt(row["question"], list(row["options"]))
    return row["question"]


def place_images(texts: Sequence[str], image_count: int) -> tuple[list[list[dict]], list[int]]:
    """Content parts of user texts with their image placeholders in place, and the image order.

    ``<image k>`` is image k (from 1); ``<image>`` the next image not yet placed. Images that
    no placeholder names go first in the first text. Returns one content list per text and the
    index of the image of every image part, in order (an image named twice appears twice).
    """
    contents: list[list[dict]] = []
    order: list[int] = []
    next_image = 0
    for text in texts:
        parts: list[dict] = []
        position = 0
        for match in IMAGE_PLACEHOLDER.finditer(text):
            if match.group(1) is not None:
                index = int(match.group(1)) - 1
            else:
                index, next_image = next_image, next_image + 1
            if not 0 <= index < image_count:
                parts.append({"type": "text", "text": text[position : match.end()]})  # names no image: plain text
                position = match.end()
                continue
            parts.append({"type": "text", "text": text[position : match.start()]})
            parts.append({"type": "image"})
            order.append(index)
            position = match.end()
        parts.append({"type": "text", "text": text[position:]})
        merged: list[dict] = []
        for part in parts:
            if part["type"] == "text" and merged and merged[-1]["type"] == "text":
                merged[-1] = {"type": "text", "text": merged[-1]["text"] + part["text"]}
            else:
                merged.append(part)
        contents.append([p if p["type"] == "image" else {"type": "text", "text": p["text"].strip("\n")} for p in merged
                         if p["type"] == "image" or p["text"].strip()])  # fmt: skip
    unplaced = [index for index in range(image_count) if index not in order]
    if unplaced:
        contents[0] = [{"type": "image"} for _ in unplaced] + contents[0]
        order = unplaced + order
    return contents, order


def conversation(row: dict, with_answer: bool = False) -> tuple[list[dict], list[bytes]]:
    """A record's chat messages (history, question, the answer when ``with_answer``) and its images in order."""
    turns = [*row_history(row), {"role": USER_ROLE, "text": question_text(row)}]
    images = row_images(row)
    user_texts = [turn["text"] for turn in turns if turn["role"] == USER_ROLE]
    contents, order = place_images(user_texts, len(images))
    messages, user_index = [], 0
    for turn in turns:
        if turn["role"] == USER_ROLE:
            messages.append({"role": USER_ROLE, "content": contents[user_index]})
            user_index += 1
        else:
            messages.append({"role": ASSISTANT_ROLE, "content": [{"type": "text", "text": turn["text"]}]})
    if with_answer:
        messages.append({"role": ASSISTANT_ROLE, "content": [{"type": "text", "text": row["answer"]}]})
    return messages, [images[index] for index in order]


def user_message(row: dict) -> dict:
    """The last user turn of a record: its image parts (placeholders in place) and the prompt text."""
    return conversation(row)[0][-1]


def image_limit(processor: Any) -> int | None:
    """Images one row may have for this processor's family (``ModelFamily.max_images_per_row``; None: any number)."""
    from recipes.models.families import family_for_processor  # local: the recipes.models package imports this module

    family = family_for_processor(processor)
    return family.max_images_per_row if family is not None else None


@cache
def encoding_code_digest() -> str:
    """Hash of the source of the modules that turn a record into tensors: this one, prompts and schema."""
    return source_digest([sys.modules[__name__], prompts_module, schema_module])


@dataclass
class RecordCollator:
    """Callable that turns a list of records (MCQ and free-form) into a padded batch for one model family."""

    processor: Any
    """The model's processor (tokenizer + image processor + chat template)."""
    with_answers: bool = False
    """True for training (append the answer and label the assistant turns); False for evaluation."""
    padding_side: str = "right"
    """``right`` for training; ``left`` for evaluation, so the last position of every row is the answer."""
    always_image: bool = False
    """Append ``PLACEHOLDER_ROW`` to batches without images (ZeRO-3); callers drop its outputs."""
    max_images: int | None = None
    """Images a row may have; None: the family's limit (one for LLaVA-1.5, any number for Qwen2.5-VL)."""
    cache_bytes: int = DEFAULT_CACHE_BYTES
    """Bytes of encoded rows (token ids, labels, pixel tensors) kept for rows seen again (a later
    epoch, the next evaluation); 0 encodes every row every time."""
    store_bytes: int = 0
    """Bytes of encoded rows kept on local disk for the other processes of this machine (the next
    trials of a sweep; ``recipes.data.encoded_store``); 0: no disk store."""
    max_length: int | None = None
    """Longest row in tokens, image tokens included (``TrialConfig.max_seq_len``); None: any length."""
    overlength: str = "error"
    """A row longer than ``max_length``: ``error`` (ValueError naming the row) or ``truncate`` (``fit``)."""
    truncated: int = field(default=0, init=False)
    """Rows this collator has cut to ``max_length`` (each time it batched one)."""
    _letter_ids: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    cache: EncodingCache | None = field(default=None, init=False, repr=False)
    store: EncodedRowStore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.with_answers and self.padding_side != "right":
            raise ValueError("training batches (with_answers=True) need padding_side='right'")
        if self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {self.cache_bytes}")
        if self.store_bytes < 0:
            raise ValueError(f"store_bytes must be >= 0, got {self.store_bytes}")
        if self.overlength not in OVERLENGTH_POLICIES:
            raise ValueError(f"overlength must be one of {', '.join(OVERLENGTH_POLICIES)}, got {self.overlength!r}")
        self.cache = EncodingCache(self.cache_bytes) if self.cache_bytes else None
        if self.store_bytes:
            self.store = EncodedRowStore.for_collator(
                self.processor, self.with_answers, encoding_code_digest(), self.store_bytes
            )

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)

    def prompt_text(self, row: dict) -> str:
        """The rendered conversation up to and including the assistant's generation prompt."""
        return self._render(conversation(row)[0], True)

    def answer_spans(self, row: dict) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation up to the end of its answer, and the character spans of every assistant turn.

        A span runs from the end of the generation prompt before the turn to the end of the
        turn's end-of-turn token (trailing whitespace after it is left out).
        """
        messages, _ = conversation(row, with_answer=True)
        full = self._render(messages, False)
        spans = []
        for index, message in enumerate(messages):
            if message["role"] != ASSISTANT_ROLE:
                continue
            prefix = self._render(messages[:index], True)
            upto = self._render(messages[: index + 1], False).rstrip()
            if not full.startswith(prefix) or not full.startswith(upto) or len(upto) < len(prefix):
                raise ValueError("chat template renders the answer turn with a different prefix than the prompt")
            spans.append((len(prefix), len(upto)))
        return full[: spans[-1][1]], spans

    def answer_suffix(self, row: dict, prompt: str) -> str:
        """What the template appends after ``prompt`` for the answer: the reply and end-of-turn."""
        full, spans = self.answer_spans(row)
        if not full.startswith(prompt):
            raise ValueError("chat template renders the answer turn with a different prefix than the prompt")
        return full[len(prompt) : spans[-1][1]]

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

    def _check_images(self, rows: Sequence[dict]) -> None:
        limit = self.max_images if self.max_images is not None else image_limit(self.processor)
        if limit is None:
            return
        for row in rows:
            count = len(row_images(row))
            if count > limit:
                raise ValueError(
                    f"row {row['id']!r} ({row.get('source')}) has {count} images, but this model family "
                    f"({type(self.processor).__name__}) takes at most {limit} per row; leave such rows out of its data"
                )

    def _assistant_labels(self, text: str, spans: list[tuple[int, int]], ids: torch.Tensor) -> torch.Tensor:
        """Labels of one row: its processed ``ids`` where the text token lies in an assistant span, else -100.

        The text is tokenized alone (with character offsets) and aligned to the processor's ids,
        in which every image token of the text became a run of image tokens.
        """
        image_token = self.tokenizer.convert_tokens_to_ids(self.processor.image_token)
        for special in (False, True):
            encoded = self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
            labels = torch.full_like(ids, IGNORE_INDEX)
            position = 0
            aligned = True
            for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
                if position >= len(ids):
                    aligned = False
                    break
                if token == image_token:
                    while position < len(ids) and ids[position] == image_token:
                        position += 1
                    continue
                if ids[position] != token:
                    aligned = False
                    break
                if end > start and any(low <= start < high for low, high in spans):
                    labels[position] = ids[position]
                position += 1
            if aligned and position == len(ids):
                return labels
        raise ValueError("cannot align the tokenized conversation with the processor's input ids")

    def encode(self, row: dict) -> dict[str, torch.Tensor]:
        """One row processed alone: its token tensors (1 x length, no padding), image tensors and labels.

        ``__call__`` pads and concatenates these; the result equals processing the rows together,
        since the processor tokenizes each text and processes each image on its own.
        """
        messages, images_in_order = conversation(row, with_answer=False)
        if self.with_answers:
            text, spans = self.answer_spans(row)
        else:
            text = self._render(messages, True)
        images = [decode_image(data) for data in images_in_order]
        encoded = self.processor(text=[text], images=images or None, return_tensors="pt")
        encoded = {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}
        if self.with_answers:
            encoded["labels"] = self._assistant_labels(text, spans, encoded["input_ids"][0])[None]
        return encoded

    def cached_encode(self, row: dict) -> dict[str, torch.Tensor]:
        """``encode(row)``, from the collator's cache, else its disk store, when this row (by
        content) was encoded before, here or by another process."""
        tiers = [tier for tier in (self.cache, self.store) if tier is not None]  # nearest first
        if not tiers:
            return self.encode(row)
        key = row_digest(row)
        found_in, encoded = next(
            ((index, hit) for index, tier in enumerate(tiers) if (hit := tier.get(key)) is not None), (len(tiers), None)
        )
        if encoded is None:
            encoded = self.encode(row)
        for tier in tiers[:found_in]:  # the nearer tiers that missed it keep it
            tier.put(key, encoded)
        return encoded

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        """The batch of ``rows``; one row longer (``PLACEHOLDER_ROW`` last) when ``always_image`` adds it."""
        self._check_images(rows)
        placeholder = self.always_image and all(not row_images(row) for row in rows)
        if placeholder:
            rows = [*rows, PLACEHOLDER_ROW]
        encoded = [self.fit(row, self.cached_encode(row)) for row in rows]
        batch = pad_and_concatenate(encoded, self.token_pad_values, self.padding_side)
        if placeholder and self.with_answers:
            batch["labels"][-1] = IGNORE_INDEX
        return batch

    def fit(self, row: dict, encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``encoded`` within ``max_length`` tokens: as it is when short enough, else refused or truncated.

        Truncation keeps the first ``max_length`` tokens (image tensors whole), so it never cuts an
        image's tokens: a row whose image tokens reach past ``max_length`` is refused, and so is a
        row that would keep none of its supervised (answer) tokens, which could teach nothing.
        """
        length = encoded["input_ids"].shape[1]
        if self.max_length is None or length <= self.max_length:
            return encoded
        where = (
            f"row {row.get('id')!r} ({row.get('source')}) has {length} tokens, more than max_seq_len {self.max_length}"
        )
        if self.overlength == "error":
            raise ValueError(f"{where}; raise max_seq_len, lower max_pixels, or set overlength: truncate")
        image_token = self.tokenizer.convert_tokens_to_ids(self.processor.image_token)
        image_positions = (encoded["input_ids"][0] == image_token).nonzero()
        if len(image_positions) and int(image_positions[-1]) >= self.max_length:
            raise ValueError(
                f"{where}, and its image tokens run to position {int(image_positions[-1]) + 1}: truncating would cut "
                "an image (raise max_seq_len or lower max_pixels)"
            )
        if "labels" in encoded and not (encoded["labels"][0, : self.max_length] != IGNORE_INDEX).any():
            raise ValueError(f"{where}, and truncating it would cut all of its answer tokens (raise max_seq_len)")
        self.truncated += 1
        return {key: v[:, : self.max_length] if key in self.token_pad_values else v for key, v in encoded.items()}

    @property
    def token_pad_values(self) -> dict[str, int]:
        """Padding value of each per-token tensor; every other tensor is per image and is concatenated."""
        return {**TOKEN_PAD_VALUES, "input_ids": self.tokenizer.pad_token_id}


OVERLENGTH_POLICIES = ("error", "truncate")
"""What ``RecordCollator.fit`` does with a row longer than ``max_length``."""

TOKEN_PAD_VALUES = {"attention_mask": 0, "labels": IGNORE_INDEX, "mm_token_type_ids": 0, "token_type_ids": 0}
"""Padding of the per-token tensors other than ``input_ids`` (which pads with the tokenizer's pad token)."""


def pad_and_concatenate(
    encoded: Sequence[dict[str, torch.Tensor]], token_pad_values: dict[str, int], padding_side: str
) -> dict[str, torch.Tensor]:
    """A batch of rows encoded alone: per-token tensors padded to the longest row, image tensors concatenated."""
    length = max(row["input_ids"].shape[1] for row in encoded)
    batch: dict[str, torch.Tensor] = {}
    for key in dict.fromkeys(key for row in encoded for key in row):  # every key, first-seen order
        parts = [row[key] for row in encoded if key in row]
        if key not in token_pad_values:  # per image: rows without images have none
            batch[key] = torch.cat(parts)
            continue
        if len(parts) != len(encoded):
            raise ValueError(f"per-token tensor {key!r} is missing from some encoded rows")
        padded = torch.full((len(parts), length), token_pad_values[key], dtype=parts[0].dtype)
        for index, part in enumerate(parts):
            width = part.shape[1]
            if padding_side == "right":
                padded[index, :width] = part[0]
            else:
                padded[index, length - width :] = part[0]
        batch[key] = padded
    return batch


def row_digest(row: dict) -> bytes:
    """A digest of a record's content (every field, images included): the key of its cached encoding."""
    return hashlib.blake2b(pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL), digest_size=16).digest()


class EncodingCache:
    """Encoded rows by content digest, least recently used dropped first beyond ``max_bytes`` of tensors."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, dict[str, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> dict[str, torch.Tensor] | None:
        encoded = self._entries.get(key)
        if encoded is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return encoded

    def put(self, key: bytes, encoded: dict[str, torch.Tensor]) -> None:
        size = encoded_bytes(encoded)
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = encoded
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= encoded_bytes(dropped)


def encoded_bytes(encoded: dict[str, torch.Tensor]) -> int:
    """Bytes held by an encoded row's tensors."""
    return sum(tensor.numel() * tensor.element_size() for tensor in encoded.values())
