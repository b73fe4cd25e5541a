"""Forgetting probes: the counting-bias probe and the class-label distractor probe (numeric part).

Counting bias ("LMM-CL selective tuning"): after narrow fine-tuning, a model's output
distribution drifts toward number tokens, and that drift co-varies with forgetting. The probe
runs the model on held-out prompts, keeps the next-token distribution of every generation
step, and measures how much probability the number tokens get:

    ids = number_token_ids(tokenizer)
    bias = counting_bias(step_probs, ids, mask)        # step_probs: [batch, steps, vocab]

Class-label distractors (forgetting paper, Figure 3): ImageWikiQA questions with one
distractor replaced by the image's class name; a fine-tuned model that ignores the prompt
picks the class name. ``classname_mischoice`` turns chosen/correct/class-name letters into
accuracy and the share of errors that picked the class name.

This module holds the tensor and counting math only; running the model is the evaluator's job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

WORD_BOUNDARY_MARKERS = ("Ġ", "▁", "##", "Ċ")
"""Prefixes tokenizers put on tokens to mark a word start / continuation / newline
(byte-level BPE, sentencepiece, WordPiece, byte-level newline); ignored when reading a token."""

CARDINAL_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion trillion dozen".split()
)
"""Number words counted as number tokens (case-insensitive)."""

ORDINAL_WORDS = frozenset(
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth "
    "thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth hundredth thousandth "
    "millionth billionth".split()
)
"""Ordinal words counted as number tokens ("second" is included although it is also a unit of time)."""

_NUMERAL = re.compile(r"[0-9]+(?:st|nd|rd|th)?")
"""ASCII digit strings, optionally with an ordinal suffix ("7", "2024", "1st", "22nd")."""


def is_number_text(text: str) -> bool:
    """Whether a decoded token (markers and whitespace already removed) is a number.

    Digits ("0", "42"), digit ordinals ("1st", "3RD"), number words and ordinal words
    ("Seven", "twentieth") and hyphenated compounds of them ("twenty-one"), case-insensitive.
    """
    lowered = text.lower()
    if _NUMERAL.fullmatch(lowered):
        return True
    number_words = CARDINAL_WORDS | ORDINAL_WORDS
    parts = lowered.split("-")
    return all(part in number_words for part in parts)


def _strip_markers(token: str) -> str:
    """A raw vocabulary token without word-boundary markers and surrounding whitespace."""
    text = token.strip()
    stripped = True
    while stripped:
        stripped = False
        for marker in WORD_BOUNDARY_MARKERS:
            if text.startswith(marker):
                text = text[len(marker) :].strip()
                stripped = True
    return text


def number_token_ids(tokenizer: Any) -> torch.LongTensor:
    """Sorted ids of the vocabulary tokens that are numbers (see ``is_number_text``).

    Works with any transformers tokenizer: each token of ``tokenizer.get_vocab()`` is first
    read with its word-boundary markers ("Ġ", "▁", "##") and whitespace removed; a token that
    does not read as a number that way and is not then plain ASCII letters/digits is decoded
    with ``tokenizer.convert_tokens_to_string`` (byte-level encodings, sentencepiece byte
    tokens such as ``<0x31>``) and checked again.
    """
    vocab = tokenizer.get_vocab()
    ids = []
    for token, token_id in vocab.items():
        text = _strip_markers(token)
        if text and is_number_text(text):
            ids.append(token_id)
            continue
        if text.isascii() and text.isalnum():
            continue  # plain letters/digits decode to themselves: nothing more to learn
        decoded = tokenizer.convert_tokens_to_string([token]).strip()
        if decoded and is_number_text(decoded):
            ids.append(token_id)
    return torch.tensor(sorted(ids), dtype=torch.long)


@dataclass(frozen=True)
class MeanStd:
    """Mean and standard deviation of one per-sample value over the probe's samples."""

    mean: float
    """Mean over samples."""
    std: float
    """Population standard deviation over samples (0.0 for a single sample)."""


@dataclass(frozen=True)
class CountingBias:
    """Counting-bias measurements of one checkpoint on one batch of probe prompts.

    Per step: ``step_max_prob`` and ``step_mass`` have shape [batch, steps], NaN at masked
    steps. Per sample: shape [batch], over that sample's unmasked steps. Over samples:
    ``MeanStd`` of each per-sample value.
    """

    step_max_prob: torch.Tensor
    """Largest probability of any single number token at each step, [batch, steps]."""
    step_mass: torch.Tensor
    """Total probability of all number tokens at each step, [batch, steps]."""
    mask: torch.Tensor
    """Which steps were generated (True) and count, [batch, steps] bool."""
    sample_mean_mass: torch.Tensor
    """Per sample: mean number-token mass over its steps, [batch]."""
    sample_peak_mass: torch.Tensor
    """Per sample: largest number-token mass of any of its steps, [batch]."""
    sample_mean_max_prob: torch.Tensor
    """Per sample: mean of the per-step max number-token probability, [batch]."""
    sample_peak_max_prob: torch.Tensor
    """Per sample: largest single number-token probability at any of its steps, [batch]."""
    mean_mass: MeanStd
    """Over samples: ``sample_mean_mass`` (the probe's headline number)."""
    peak_mass: MeanStd
    """Over samples: ``sample_peak_mass``."""
    mean_max_prob: MeanStd
    """Over samples: ``sample_mean_max_prob``."""
    peak_max_prob: MeanStd
    """Over samples: ``sample_peak_max_prob``."""

    @property
    def n_samples(self) -> int:
        """Number of probe samples (the batch size)."""
        return int(self.mask.shape[0])


def _validate_probe_inputs(step_probs: torch.Tensor, number_ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise ValueError naming the argument whose shape, type or content is wrong."""
    if step_probs.dim() != 3 or not step_probs.is_floating_point():
        raise ValueError(
            "step_probs: expected a float tensor [batch, steps, vocab], "
            f"got {step_probs.dtype} {tuple(step_probs.shape)}"
        )
    if min(step_probs.shape) == 0:
        raise ValueError(f"step_probs: every dimension must be non-empty, got {tuple(step_probs.shape)}")
    if number_ids.dim() != 1 or number_ids.numel() == 0 or number_ids.is_floating_point():
        raise ValueError(
            f"number_ids: expected a non-empty 1-D integer tensor, got {number_ids.dtype} {tuple(number_ids.shape)}"
        )
    vocab_size = step_probs.shape[-1]
    if int(number_ids.min()) < 0 or int(number_ids.max()) >= vocab_size:
        raise ValueError(f"number_ids: ids must lie in [0, {vocab_size}) (the vocab size of step_probs)")
    if mask.shape != step_probs.shape[:2]:
        raise ValueError(f"mask: expected shape {tuple(step_probs.shape[:2])} [batch, steps], got {tuple(mask.shape)}")
    empty = (~mask).all(dim=1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask: samples {empty} have no unmasked step")


def _over_samples(values: torch.Tensor) -> MeanStd:
    return MeanStd(mean=float(values.mean()), std=float(values.std(correction=0)))


def counting_bias(
    step_probs: torch.Tensor,
    number_ids: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> CountingBias:
    """Number-token probability per step, per sample and over samples.

    ``step_probs``: next-token probabilities (already softmaxed) at each generation step,
    [batch, steps, vocab]. ``number_ids``: vocabulary ids of number tokens
    (``number_token_ids``). ``mask``: [batch, steps], True where a step was generated and
    counts (False for padding after a sample stopped); all steps count when None. Every
    sample needs at least one counted step.
    """
    number_ids = torch.as_tensor(number_ids)
    if mask is None:
        mask = torch.ones(step_probs.shape[:2], dtype=torch.bool, device=step_probs.device)
    mask = torch.as_tensor(mask).to(dtype=torch.bool, device=step_probs.device)
    _validate_probe_inputs(step_probs, number_ids, mask)

    number_probs = step_probs.index_select(-1, number_ids.to(step_probs.device))
    nan = torch.tensor(float("nan"), dtype=step_probs.dtype, device=step_probs.device)
    step_max_prob = torch.where(mask, number_probs.max(dim=-1).values, nan)
    step_mass = torch.where(mask, number_probs.sum(dim=-1), nan)

    counted_steps = mask.sum(dim=1)

    def mean_over_steps(per_step: torch.Tensor) -> torch.Tensor:
        return per_step.nan_to_num(0.0).sum(dim=1) / counted_steps

    def peak_over_steps(per_step: torch.Tensor) -> torch.Tensor:
        return per_step.nan_to_num(float("-inf")).max(dim=1).values

    sample_mean_mass = mean_over_steps(step_mass)
    sample_peak_mass = peak_over_steps(step_mass)
    sample_mean_max_prob = mean_over_steps(step_max_prob)
    sample_peak_max_prob = peak_over_steps(step_max_prob)
    return CountingBias(
        step_max_prob=step_max_prob,
        step_mass=step_mass,
        mask=mask,
        sample_mean_mass=sample_mean_mass,
        sample_peak_mass=sample_peak_mass,
        sample_mean_max_prob=sample_mean_max_prob,
        sample_peak_max_prob=sample_peak_max_prob,
        mean_mass=_over_samples(sample_mean_mass),
        peak_mass=_over_samples(sample_peak_mass),
        mean_max_prob=_over_samples(sample_mean_max_prob),
        peak_max_prob=_over_samples(sample_peak_max_prob),
    )


def _letter(value: Any) -> str | None:
    """An option letter normalised for comparison (stripped, upper-case), or None."""
    if value is None:
        return None
    text = str(value).strip().upper()
    return text or None


def classname_mischoice(rows: Iterable[Mapping[str, Any]]) -> dict[str, float | int]:
    """Accuracy and "mischoice on class name" of the class-label distractor probe.

    Each row is a mapping with ``chosen`` (the option letter the model picked, or None when
    no option could be read from its output), ``correct`` (the right letter) and
    ``class_name`` (the letter of the option that is the image's class name, or None when
    the question has no such option). Letters compare case-insensitively.

    Returns ``n`` (rows), ``accuracy`` (percent right), ``n_errors``,
    ``n_class_name_choices`` (errors that picked the class-name option) and ``mischoice_pct``
    (percent of all errors that picked the class name; 0.0 when there are no errors).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows: empty, the probe needs at least one answered question")
    for index, row in enumerate(rows):
        missing = {"chosen", "correct", "class_name"} - set(row)
        if missing:
            raise ValueError(f"rows[{index}]: missing keys {sorted(missing)}")
        if _letter(row["correct"]) is None:
            raise ValueError(f"rows[{index}].correct: must be an option letter, got {row['correct']!r}")
    errors = [row for row in rows if _letter(row["chosen"]) != _letter(row["correct"])]
    class_name_choices = [
        row
        for row in errors
        if _letter(row["class_name"]) is not None and _letter(row["chosen"]) == _letter(row["class_name"])
    ]
    n_errors = len(errors)
    return {
        "n": len(rows),
        "accuracy": 100.0 * (len(rows) - n_errors) / len(rows),
        "n_errors": n_errors,
        "n_class_name_choices": len(class_name_choices),
        "mischoice_pct": 100.0 * len(class_name_choices) / n_errors if n_errors else 0.0,
    }
