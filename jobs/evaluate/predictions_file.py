"""python -m jobs.evaluate score --predictions generated_predictions.jsonl --matcher NAME

Scores an existing predictions file with one of the paper's answer matchers, so numbers from
LLaMA-Factory runs (the paper's released code writes ``generated_predictions.jsonl``, one JSON
object per line with ``prompt``, ``predict`` and ``label``) can be compared directly with the
accuracies forgetless logs:

    from jobs.evaluate.predictions_file import score_predictions_file
    result = score_predictions_file("generated_predictions.jsonl", "rs")
    print(result.summary())     # "generated_predictions.jsonl: 75.00% (3 of 4 right, matcher rs, 0 skipped)"

Matchers are those of ``jobs.evaluate.matchers`` (``mcq``, ``rs``, ``ad``, ``med``, ``sci``,
``fin``, ``exact``); skipped items ("Unanswerable" under rs/ad/med) count in the denominator,
as in the listings. A line that is not a JSON object with string ``predict`` and ``label``
(and ``prompt`` for ``sci``), or whose label is empty, is an error naming the file, the line
and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jobs.evaluate.matchers import MATCHERS
from recipes.common.json_loading import parse_json
from recipes.common.redaction import credential_problem, redact_uri
from recipes.common.storage import exists, open_binary

REQUIRED_KEYS = ("predict", "label")
"""Keys every line must have (``prompt`` too for the ``sci`` matcher)."""


class PredictionsFileError(ValueError):
    """A predictions file that cannot be scored; the message names the file, line and field."""


@dataclass(frozen=True)
class PredictionsScore:
    """The accuracy of one predictions file under one matcher."""

    path: str
    """The file scored."""
    matcher: str
    """The matcher's name."""
    total: int
    """Predictions in the file (the denominator)."""
    credit: float
    """Sum of the per-prediction scores (right answers, partial credit included)."""
    skipped: int
    """Predictions the matcher skipped (counted in ``total``, no credit)."""

    @property
    def accuracy(self) -> float:
        """Accuracy in percent."""
        return 100.0 * self.credit / self.total

    def summary(self) -> str:
        right = f"{self.credit:g}"
        return (
            f"{self.path}: {self.accuracy:.2f}% ({right} of {self.total} right, matcher {self.matcher}, "
            f"{self.skipped} skipped)"
        )


def read_predictions(path: str | os.PathLike, need_prompt: bool = False) -> list[dict]:
    """The objects of a predictions jsonl file, each checked for string ``predict``/``label`` (and ``prompt``)."""
    path = str(path)
    problem = credential_problem("predictions file", path)
    if problem:
        raise PredictionsFileError(problem)
    if not exists(path):
        raise PredictionsFileError(f"{redact_uri(path)}: no such predictions file")
    keys = (*REQUIRED_KEYS, "prompt") if need_prompt else REQUIRED_KEYS
    items = []
    with open_binary(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = parse_json(line)
            except ValueError as error:  # not UTF-8, not JSON, nested too deep
                raise PredictionsFileError(f"{redact_uri(path)}: line {number}: {error}") from None
            if not isinstance(item, dict):
                raise PredictionsFileError(f"{path}: line {number}: expected a JSON object, got {type(item).__name__}")
            for key in keys:
                if not isinstance(item.get(key), str):
                    problem = "missing" if key not in item else f"not a string ({type(item[key]).__name__})"
                    raise PredictionsFileError(f"{redact_uri(path)}: line {number}: field {key} is {problem}")
            if not item["label"].strip():
                raise PredictionsFileError(
                    f"{redact_uri(path)}: line {number}: field label is empty (nothing to score)"
                )
            items.append(item)
    if not items:
        raise PredictionsFileError(f"{redact_uri(path)}: has no predictions (an empty file)")
    return items


def score_predictions_file(path: str | os.PathLike, matcher: str) -> PredictionsScore:
    """Score every line of ``path`` with ``matcher`` (see the module docstring)."""
    if matcher not in MATCHERS:
        raise PredictionsFileError(f"matcher: unknown matcher {matcher!r}; known: {', '.join(sorted(MATCHERS))}")
    items = read_predictions(path, need_prompt=matcher == "sci")
    rule = MATCHERS[matcher]
    scores = [rule(item["predict"], item["label"], item.get("prompt")) for item in items]
    return PredictionsScore(
        str(path),
        matcher,
        len(scores),
        sum(value for value in scores if value is not None),
        sum(value is None for value in scores),
    )
