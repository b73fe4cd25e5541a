"""Answer one batch of records (MCQ and free-form) with a model and score the answers.

MCQ rows are answered in one of the two evaluation modes. ``logits``: one forward pass; the
prediction is the option letter whose token has the highest next-token logit at the answer
position, among the letters of that question's options only. ``generate``: greedy decoding of
up to ``max_new_tokens``, scored with the paper's Listing 1 matcher
(``jobs.evaluate.matchers.match_mcq``). Free-form rows are always generated greedily (up to
the dataset's budget) and scored by the matcher their ``matcher`` column names (Listings 2-5,
or exact match).

    scorer = BatchScorer(collator, mode="logits")
    rows_out = scorer(model, rows)   # [{"prediction": "B", "chosen": "blue square", "correct": 1.0}, ...]
    rows_out = scorer(model, rows, image_features=memo, key=batch_index)   # a frozen image path's features kept
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from jobs.evaluate.image_features import FrozenImageFeatures
from jobs.evaluate.matchers import match_mcq, score
from recipes.data.collate import PLACEHOLDER_ROW, RecordCollator
from recipes.data.schema import FREEFORM_KIND, LETTERS, MCQ_KIND, row_kind

MODES = ("logits", "generate")
"""Evaluation modes."""


def to_model(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Move a batch to the model's device, casting floating tensors (pixels) to its dtype."""
    parameter = next(model.parameters())
    return {
        key: value.to(parameter.device, dtype=parameter.dtype if value.is_floating_point() else None)
        for key, value in batch.items()
    }


def batches(rows: Sequence[dict], size: int) -> list[Sequence[dict]]:
    """``rows`` in consecutive batches of ``size`` (the last one may be shorter)."""
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def chosen_letter(generated: str, option_count: int) -> str | None:
    """The option letter a generated answer picks, read the way Listing 1 reads it (or None)."""
    text = generated.strip()
    if ":" in text:
        text = text.split(":")[-1].strip()
    text = text.upper()
    for letter in LETTERS[:option_count]:
        if text == letter or text.startswith(f"{letter}."):
            return letter
    return None


@dataclass
class BatchScorer:
    """Scores batches of MCQ records in ``logits`` or ``generate`` mode."""

    collator: RecordCollator
    """Evaluation collator (``with_answers=False``, left padding)."""
    mode: str = "logits"
    """``logits`` or ``generate``."""
    max_new_tokens: int = 8
    """Generation budget of MCQ rows in ``generate`` mode, and of free-form rows unless their dataset sets one."""
    synced_gpus: bool = False
    """Keep all ranks generating in lockstep (needed when ZeRO-3 shards the parameters)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"eval mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.collator.with_answers or self.collator.padding_side != "left":
            raise ValueError("BatchScorer needs an evaluation collator: with_answers=False, padding_side='left'")

    @torch.no_grad()
    def __call__(
        self,
        model: torch.nn.Module,
        rows: Sequence[dict],
        max_new_tokens: int | None = None,
        image_features: FrozenImageFeatures | None = None,
        key: Hashable = None,
    ) -> list[dict[str, Any]]:
        """Per row: ``prediction`` (letter or text), ``chosen`` (the option's text; "" for free-form) and ``correct``.

        ``max_new_tokens`` is the free-form rows' generation budget (default: the scorer's).
        ``image_features`` keeps the image features of these ``rows`` under ``key`` (a model whose
        image path is frozen, the same rows at every call with that key).
        With ``synced_gpus`` every rank runs both parts (an empty part as one placeholder row),
        so that sharded parameters are gathered by all ranks alike.
        """
        mcq = [index for index, row in enumerate(rows) if row_kind(row) == MCQ_KIND]
        freeform = [index for index, row in enumerate(rows) if row_kind(row) != MCQ_KIND]
        results: list[dict[str, Any] | None] = [None] * len(rows)
        if mcq or self.synced_gpus:
            part = [rows[index] for index in mcq] or [PLACEHOLDER_ROW]
            inputs = self._inputs(model, part, image_features, (key, MCQ_KIND))
            for index, result in zip(mcq, self._mcq(model, inputs, part)):
                results[index] = result
        if freeform or self.synced_gpus:
            part = [rows[index] for index in freeform] or [PLACEHOLDER_ROW]
            inputs = self._inputs(model, part, image_features, (key, FREEFORM_KIND))
            for index, result in zip(
                freeform, self._freeform(model, inputs, part, max_new_tokens or self.max_new_tokens)
            ):
                results[index] = result
        return results  # type: ignore[return-value]

    def _inputs(
        self, model: torch.nn.Module, rows: Sequence[dict], image_features: FrozenImageFeatures | None, key: Hashable
    ) -> dict[str, Any]:
        """The model's inputs for ``rows``: the collated batch on its device, image features from the memo."""
        batch = to_model(self.collator(rows), model)
        return image_features.inputs(key, model, batch) if image_features is not None else batch

    def _mcq(self, model: torch.nn.Module, batch: dict[str, Any], rows: Sequence[dict]) -> list[dict[str, Any]]:
        if self.mode == "logits":
            letters = self._logit_letters(model, batch, rows)
            predictions = letters
        else:
            predictions = self._generate(model, batch, self.max_new_tokens)[: len(rows)]
            letters = [chosen_letter(text, len(row["options"])) for text, row in zip(predictions, rows)]
        results = []
        for row, prediction, letter in zip(rows, predictions, letters):
            options = list(row["options"])
            chosen = options[LETTERS.index(letter)] if letter else ""
            results.append(
                {"prediction": prediction, "chosen": chosen, "correct": match_mcq(prediction, row["answer"])}
            )
        return results

    def _freeform(
        self, model: torch.nn.Module, batch: dict[str, Any], rows: Sequence[dict], max_new_tokens: int
    ) -> list[dict[str, Any]]:
        predictions = self._generate(model, batch, max_new_tokens)[: len(rows)]
        return [
            {
                "prediction": prediction,
                "chosen": "",
                "correct": score(row.get("matcher") or "exact", prediction, row["answer"], row["question"]),
            }
            for row, prediction in zip(rows, predictions)
        ]

    def _logit_letters(self, model, batch, rows) -> list[str]:
        logits = model(**batch, logits_to_keep=1).logits[: len(rows), -1, :].float()
        max_options = max(len(row["options"]) for row in rows)
        letter_ids = self.collator.option_token_ids(max_options).to(logits.device)
        scores = logits[:, letter_ids]
        counts = torch.tensor([len(row["options"]) for row in rows], device=logits.device)
        allowed = torch.arange(max_options, device=logits.device).unsqueeze(0) < counts.unsqueeze(1)
        best = scores.masked_fill(~allowed, float("-inf")).argmax(dim=1)
        return [LETTERS[index] for index in best.tolist()]

    def _generate(self, model, batch, max_new_tokens: int) -> list[str]:
        tokenizer = self.collator.tokenizer
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            synced_gpus=self.synced_gpus,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
