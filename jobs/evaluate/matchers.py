"""Answer matchers for generation-mode evaluation, exactly as the paper's appendix lists them.

Generation mode (``eval.mode: generate``) asks the model for free text and then decides
whether that text answers the question with one of these rules:

    from jobs.evaluate.matchers import accuracy
    accuracy("mcq", predictions=["Answer: B", "C. a dog"], labels=["B", "A"])   # 50.0

Each rule is a function that scores one prediction against its label and returns a float in
[0, 1] (1.0 right, 0.0 wrong, a fraction for partial credit) or ``None`` for "skipped": a
skipped item earns nothing but still counts in the denominator, as in the listings, where
``total = len(f)`` is taken before the ``continue``.

The rules come from "forgetting-full-paper" (appendix D.2 Listing 1 and D.4 Listings 2-5).
The listings are pseudo code and their PDF extraction broke some lines; the logic here
follows them line by line, quirks included, because the point is to reproduce the paper's
numbers. Where a listing can be read two ways, or where its behaviour is surprising, the
function's docstring says so and which reading is implemented.

| name      | listing | used for                                                   |
|-----------|---------|------------------------------------------------------------|
| mcq       | 1       | single-letter multiple choice (ImageNet, Flowers, ...)     |
| rs, ad    | 2       | MLLM-CL remote sensing and autonomous driving              |
| med       | 3       | MLLM-CL medical                                            |
| sci       | 4       | MLLM-CL science (needs the prompt text)                    |
| fin       | 5       | MLLM-CL finance                                            |
| exact     | -       | free-form answers without a listing (toy tasks, VQA)       |

``rs_ad`` is another name of the ``rs``/``ad`` rule. The names are those a free-form record
may carry in its ``matcher`` column (``recipes.data.schema.MATCHER_NAMES``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Score = float | None
"""A matcher's verdict on one prediction: a float in [0, 1], or None for skipped-but-counted."""

Matcher = Callable[[str, str, str | None], Score]
"""``matcher(predict, label, prompt=None) -> Score``."""

UNANSWERABLE = "Unanswerable"
"""Listings 2 and 3 skip a prediction that contains this exact, case-sensitive text."""


def match_mcq(predict: str, label: str, prompt: str | None = None) -> float:
    """Listing 1 (``result_matcher.py``): single-letter multiple choice.

    Both sides are ``str()``-converted and stripped; when the prediction contains ``:``
    only the text after the *last* ``:`` is kept (and stripped); both are upper-cased; the
    prediction is right when it equals the label or starts with ``label + "."``.

    Consequences kept from the listing: ``"Answer: B"`` and ``"B. a dog"`` are right, but
    ``"B) a dog"``, ``"The answer is B"`` and ``"B: a dog"`` (the text after the colon is
    ``"a dog"``) are wrong. ``prompt`` is unused.
    """
    predict = str(predict).strip()
    label = str(label).strip()
    if ":" in predict:
        predict = predict.split(":")[-1].strip()
    predict = predict.upper()
    label = label.upper()
    return 1.0 if predict == label or predict.startswith(f"{label}.") else 0.0


def match_rs_ad(predict: str, label: str, prompt: str | None = None) -> Score:
    """Listing 2: remote sensing (RS) and autonomous driving (AD).

    - A prediction containing ``"Unanswerable"`` (case-sensitive, before lower-casing) is
      skipped: ``None``, counted in the denominator.
    - Both sides are lower-cased (not stripped).
    - Ground truth with a space: right when it is a substring of the prediction.
    - Otherwise every ``.`` of the ground truth becomes a space, then
      - prediction with a space: right when it contains ``" " + gt``, ``gt + " "``,
        ``gt + "."`` or ``gt + ","``;
      - prediction without a space: right when ``gt`` is a substring of it.

    Line 18-19 of the listing is one condition broken over two lines by the extraction
    (the four ``or`` terms); that is the only reading that parses.

    Consequences kept from the listing: the word-boundary test is one-sided, so ``"no"``
    matches ``"here nobody"`` (``" no"``) and ``"plane"`` matches ``"airplane."``
    (``"plane."``), but not ``"an airplane"`` (the ground truth ends the prediction with
    no trailing character). A dotted one-word answer such as ``"u.s"`` becomes ``"u s"``
    and no longer matches a prediction that keeps the dots (``"the u.s. army"``).
    A lower-case ``"unanswerable"`` is not skipped. ``prompt`` is unused.
    """
    if UNANSWERABLE in predict:
        return None
    pred = predict.lower()
    gt = label.lower()
    if " " in gt:
        return 1.0 if gt in pred else 0.0
    gt = gt.replace(".", " ")
    if " " in pred:
        bounded = (" " + gt) in pred or (gt + " ") in pred or (gt + ".") in pred or (gt + ",") in pred
        return 1.0 if bounded else 0.0
    return 1.0 if gt in pred else 0.0


def match_med(predict: str, label: str, prompt: str | None = None) -> Score:
    """Listing 3: medical (Med).

    A prediction containing ``"Unanswerable"`` (case-sensitive, on the raw text) is skipped
    (``None``, counted in the denominator); otherwise right when the lower-cased label is a
    substring of the lower-cased prediction. Nothing is stripped, and a short label matches
    inside longer words (``"no"`` is found in ``"not sure"``), as in the listing. ``prompt``
    is unused.
    """
    ground_truth = label.lower()
    pred = predict.lower()
    if UNANSWERABLE in predict:
        return None
    return 1.0 if ground_truth in pred else 0.0


def _normalise_sci(text: str) -> str:
    """Listing 4's normalisation: strip, lower, ``.`` -> space, ``,`` -> space, ``neither`` -> ``no``."""
    return text.strip().lower().replace(".", " ").replace(",", " ").replace("neither", "no")


def match_sci(predict: str, label: str, prompt: str | None = None) -> float:
    """Listing 4: science (Sci). Needs the prompt (the question text).

    Prediction and ground truth are normalised (strip, lower, ``.`` and ``,`` replaced by
    spaces, ``neither`` replaced by ``no``; the label is stripped once more first, a no-op).

    - One-character ground truth (the paper's stand-in for "a multiple-choice letter"):
      right when the normalised prediction equals it exactly.
    - Else, when the prompt contains ``"Which states"`` (MapQA): partial credit, the share
      of ground-truth items found among the prediction items, both split on ``,``.
    - Else: right when the ground truth is in the prediction or the prediction is in the
      ground truth.

    Reading taken where the listing is ambiguous: the extraction lost the indentation of
    lines 23-24. ``elif`` on line 24 can only pair with ``if 'Which states'`` (line 14), and
    ``right += count / len_gt`` (line 23) is taken as running once after the item loop, as in
    the MLLM-CL evaluation scripts it adapts. With the split quirk below, running it inside
    the loop would give the same result, since there is always exactly one item.

    Consequences kept from the listing:

    - The normalisation has already replaced every ``,`` by a space, so ``split(",")``
      always yields a single item: the "Which states" branch is an exact match of the
      normalised strings, 1.0 or 0.0, never partial credit. ``"Texas, Ohio"`` vs
      ``"Ohio, Texas"`` scores 0; so does ``"Texas,Ohio"`` (one space after normalising,
      against two).
    - The single-character test happens after normalising, so a label ``"A."`` becomes
      ``"a "`` (two characters) and takes the substring branch, while a prediction ``"A."``
      against the label ``"A"`` is wrong (``"a "`` != ``"a"``).
    - ``pred in gt`` credits any prediction that is a substring of the answer, including an
      empty prediction.
    """
    if prompt is None:
        raise ValueError("sci matcher (Listing 4): the prompt text is required, it decides the 'Which states' rule")
    problem = prompt
    pred = _normalise_sci(predict)
    gt = _normalise_sci(label.strip())
    if len(gt) == 1:
        return 1.0 if gt == pred else 0.0
    if "Which states" in problem:
        gt_items = gt.split(",")
        pred_items = pred.split(",")
        found = sum(1 for item in gt_items if item in pred_items)
        return found / len(gt_items)
    return 1.0 if gt in pred or pred in gt else 0.0


def match_fin(predict: str, label: str, prompt: str | None = None) -> float:
    """Listing 5: finance (Fin).

    The prediction is lower-cased with every space and ``.`` removed; the label is only
    lower-cased; right when they are equal.

    Consequences kept from the listing: the label keeps its spaces and dots, so a label such
    as ``"12.5"`` or ``"net income"`` can never be matched, and ``"1 2 5"`` matches ``"125"``.
    ``prompt`` is unused.
    """
    pred = predict.lower().replace(" ", "").replace(".", "")
    gt = label.lower()
    return 1.0 if gt == pred else 0.0


def _normalise_exact(text: str) -> str:
    return " ".join(str(text).strip().lower().rstrip(".").split())


def match_exact(predict: str, label: str, prompt: str | None = None) -> float:
    """Exact match after normalising both sides: strip, lower-case, one trailing ``.`` dropped, runs of spaces as one.

    ``"Four."`` matches ``"four"``; ``"4 shapes"`` does not match ``"4"``. ``prompt`` is unused.
    """
    return 1.0 if _normalise_exact(predict) == _normalise_exact(label) else 0.0


MATCHERS: dict[str, Matcher] = {
    "exact": match_exact,
    "mcq": match_mcq,
    "rs": match_rs_ad,
    "ad": match_rs_ad,
    "rs_ad": match_rs_ad,
    "med": match_med,
    "sci": match_sci,
    "fin": match_fin,
}
"""Matcher name (as a suite or grid names it) -> per-prediction scoring function."""


def score(matcher_name: str, predict: str, label: str, prompt: str | None = None) -> float:
    """One prediction's credit under a matcher: its score, 0.0 for a skipped item (it still counts)."""
    if matcher_name not in MATCHERS:
        raise ValueError(f"matcher: unknown matcher {matcher_name!r}; known: {', '.join(sorted(MATCHERS))}")
    return MATCHERS[matcher_name](predict, label, prompt) or 0.0


def accuracy(
    matcher_name: str,
    predictions: Sequence[str],
    labels: Sequence[str],
    prompts: Sequence[str] | None = None,
) -> float:
    """Accuracy in percent (0..100) of ``predictions`` against ``labels`` under one matcher.

    Skipped items (``None`` scores, e.g. ``"Unanswerable"`` under rs/ad/med) earn nothing
    but stay in the denominator, like the listings' ``right / total`` with
    ``total = len(f)``. ``prompts`` (one per item) is required by ``sci``.
    """
    if matcher_name not in MATCHERS:
        raise ValueError(f"matcher_name: unknown matcher {matcher_name!r}; known: {', '.join(sorted(MATCHERS))}")
    if len(predictions) != len(labels):
        raise ValueError(f"predictions and labels differ in length: {len(predictions)} vs {len(labels)}")
    if not predictions:
        raise ValueError("predictions: empty, accuracy is undefined")
    if prompts is not None and len(prompts) != len(predictions):
        raise ValueError(f"prompts: {len(prompts)} given for {len(predictions)} predictions")
    if matcher_name == "sci" and prompts is None:
        raise ValueError("prompts: the sci matcher (Listing 4) needs the prompt of every item")
    for field, values in (("predictions", predictions), ("labels", labels)):
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise TypeError(f"{field}[{index}]: expected str, got {type(value).__name__}")
    matcher = MATCHERS[matcher_name]
    item_prompts = prompts if prompts is not None else [None] * len(predictions)
    scores = [
        matcher(prediction, label, prompt) for prediction, label, prompt in zip(predictions, labels, item_prompts)
    ]
    return 100.0 * sum(score or 0.0 for score in scores) / len(scores)
