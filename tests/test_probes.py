"""Probe math: number-token ids from real tokenizers, counting bias on hand-computed tensors,
the checkpoint comparison table and the class-name mischoice counts."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from jobs.evaluate.probe_math import (
    classname_mischoice,
    counting_bias,
    number_token_ids,
)

# (tokenizer kind, vocabulary token, is a number token)
NUMBER_TOKEN_CASES = [
    ("byte-level", "7", True),
    ("byte-level", "2024", True),
    ("byte-level", "Ġ42", True),
    ("byte-level", "ĠSeven", True),
    ("byte-level", "twenty-one", True),
    ("byte-level", "Ġhundred", True),
    ("byte-level", "1st", True),
    ("byte-level", "Ġ22ND", True),
    ("byte-level", "Third", True),
    ("byte-level", "ĠTWELFTH", True),
    ("byte-level", "ĉ3", True),  # tab + "3": only decoding reveals the digit
    ("byte-level", "ĠCat", False),
    ("byte-level", "x1", False),
    ("byte-level", "1.5", False),
    ("byte-level", "Ġonce", False),
    ("byte-level", "Ġ", False),
    ("byte-level", "ÃĹ", False),  # "×" in byte-level encoding
    ("sentencepiece", "▁five", True),
    ("sentencepiece", "▁▁9", True),
    ("sentencepiece", "<0x31>", True),  # byte-fallback token for "1"
    ("sentencepiece", "<0x41>", False),  # byte-fallback token for "A"
    ("sentencepiece", "▁dog", False),
    ("sentencepiece", "##8", True),
]

DECODERS = {
    "byte-level": lambda: decoders.ByteLevel(),
    "sentencepiece": lambda: decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    ),
}


@pytest.fixture(scope="module")
def tokenizers_by_kind() -> dict[str, PreTrainedTokenizerFast]:
    """One real fast tokenizer per kind, with a WordLevel vocabulary made of the table's tokens."""
    built = {}
    for kind, make_decoder in DECODERS.items():
        tokens = ["<unk>"] + [token for token_kind, token, _ in NUMBER_TOKEN_CASES if token_kind == kind]
        backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        backend.decoder = make_decoder()
        built[kind] = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    return built


@pytest.mark.parametrize(("kind", "token", "is_number"), NUMBER_TOKEN_CASES, ids=lambda v: str(v))
def test_number_token_ids(tokenizers_by_kind, kind, token, is_number):
    tokenizer = tokenizers_by_kind[kind]
    ids = number_token_ids(tokenizer)
    assert ids.dtype == torch.long
    assert (tokenizer.convert_tokens_to_ids(token) in ids.tolist()) is is_number


def test_number_token_ids_sorted_unique(tokenizers_by_kind):
    ids = number_token_ids(tokenizers_by_kind["byte-level"]).tolist()
    assert ids == sorted(set(ids))


def _table(cases: dict) -> list:
    """pytest params from a {case name: case tuple} table."""
    return [pytest.param(*case, id=name) for name, case in cases.items()]


NAN = float("nan")
NUMBER_IDS = torch.tensor([1, 3])
# [batch 2, steps 3, vocab 5]; number tokens are ids 1 and 3.
STEP_PROBS = torch.tensor(
    [
        [[0.5, 0.2, 0.1, 0.1, 0.1], [0.2, 0.4, 0.0, 0.4, 0.0], [0.1, 0.0, 0.8, 0.1, 0.0]],
        [[0.0, 0.6, 0.2, 0.2, 0.0], [0.7, 0.0, 0.1, 0.2, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]],
    ],
    dtype=torch.float64,
)
MASK = torch.tensor([[True, True, True], [True, True, False]])  # sample 1 stopped after 2 steps

# (mask, field, expected): per-step masses 0.3 0.8 0.1 | 0.8 0.2 (1.0 masked);
# per-step max probs 0.2 0.4 0.1 | 0.6 0.2 (1.0 masked).
COUNTING_BIAS_CASES = {
    "step mass": (MASK, "step_mass", [[0.3, 0.8, 0.1], [0.8, 0.2, NAN]]),
    "step max prob": (MASK, "step_max_prob", [[0.2, 0.4, 0.1], [0.6, 0.2, NAN]]),
    "sample mean mass": (MASK, "sample_mean_mass", [0.4, 0.5]),
    "sample peak mass": (MASK, "sample_peak_mass", [0.8, 0.8]),
    "sample mean max prob": (MASK, "sample_mean_max_prob", [0.7 / 3, 0.4]),
    "sample peak max prob": (MASK, "sample_peak_max_prob", [0.4, 0.6]),
    "mean mass over samples": (MASK, "mean_mass", (0.45, 0.05)),
    "peak mass over samples": (MASK, "peak_mass", (0.8, 0.0)),
    "mean max prob over samples": (MASK, "mean_max_prob", ((0.7 / 3 + 0.4) / 2, (0.4 - 0.7 / 3) / 2)),
    "peak max prob over samples": (MASK, "peak_max_prob", (0.5, 0.1)),
    "no mask: every step counts": (None, "sample_mean_mass", [0.4, 2.0 / 3]),
    "no mask: peak sees the last step": (None, "sample_peak_max_prob", [0.4, 1.0]),
}


@pytest.mark.parametrize(("mask", "field", "expected"), _table(COUNTING_BIAS_CASES))
def test_counting_bias(mask, field, expected):
    value = getattr(counting_bias(STEP_PROBS, NUMBER_IDS, mask), field)
    if isinstance(value, torch.Tensor):
        torch.testing.assert_close(value, torch.tensor(expected, dtype=torch.float64), equal_nan=True)
    else:
        assert (value.mean, value.std) == pytest.approx(expected)


def test_counting_bias_sample_count():
    assert counting_bias(STEP_PROBS, NUMBER_IDS, MASK).n_samples == 2


COUNTING_BIAS_ERRORS = {
    "2-D probabilities": ((STEP_PROBS[0], NUMBER_IDS, None), "step_probs"),
    "integer probabilities": ((STEP_PROBS.long(), NUMBER_IDS, None), "step_probs"),
    "id beyond the vocabulary": ((STEP_PROBS, torch.tensor([1, 5]), None), "number_ids"),
    "no number ids": ((STEP_PROBS, torch.tensor([], dtype=torch.long), None), "number_ids"),
    "mask of the wrong shape": ((STEP_PROBS, NUMBER_IDS, MASK[:, :2]), "mask: expected shape"),
    "sample with no counted step": (
        (STEP_PROBS, NUMBER_IDS, torch.tensor([[True] * 3, [False] * 3])),
        r"samples \[1\]",
    ),
}


@pytest.mark.parametrize(("args", "message"), _table(COUNTING_BIAS_ERRORS))
def test_counting_bias_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        counting_bias(*args)


def _row(chosen, correct, class_name):
    return {"chosen": chosen, "correct": correct, "class_name": class_name}


# (rows, expected result)
MISCHOICE_CASES = {
    "all right": (
        [_row("A", "A", "B"), _row("c", "C", None)],
        {"n": 2, "accuracy": 100.0, "n_errors": 0, "n_class_name_choices": 0, "mischoice_pct": 0.0},
    ),
    "two of three errors pick the class name": (
        [_row("A", "A", "B"), _row("B", "A", "B"), _row("d", "C", "D"), _row("B", "C", "D")],
        {"n": 4, "accuracy": 25.0, "n_errors": 3, "n_class_name_choices": 2, "mischoice_pct": 200.0 / 3},
    ),
    "errors without a class-name option count as other errors": (
        [_row("B", "A", None), _row("B", "A", "B")],
        {"n": 2, "accuracy": 0.0, "n_errors": 2, "n_class_name_choices": 1, "mischoice_pct": 50.0},
    ),
    "unreadable answer is an error, not a class-name choice": (
        [_row(None, "A", "B"), _row("A", "A", "B")],
        {"n": 2, "accuracy": 50.0, "n_errors": 1, "n_class_name_choices": 0, "mischoice_pct": 0.0},
    ),
}


@pytest.mark.parametrize(("rows", "expected"), _table(MISCHOICE_CASES))
def test_classname_mischoice(rows, expected):
    assert classname_mischoice(rows) == pytest.approx(expected)


MISCHOICE_ERRORS = {
    "no rows": ([], "empty"),
    "missing key": ([{"chosen": "A", "correct": "A"}], r"rows\[0\]: missing keys \['class_name'\]"),
    "no correct letter": ([_row("A", None, "B")], r"rows\[0\]\.correct"),
}


@pytest.mark.parametrize(("rows", "message"), _table(MISCHOICE_ERRORS))
def test_classname_mischoice_rejects_bad_rows(rows, message):
    with pytest.raises(ValueError, match=message):
        classname_mischoice(rows)


def test_nan_marks_masked_steps_only():
    bias = counting_bias(STEP_PROBS, NUMBER_IDS, MASK)
    assert torch.isnan(bias.step_mass).tolist() == (~MASK).tolist()
    assert not math.isnan(bias.mean_mass.mean)
