"""Answer matchers: one table per listing of the paper's appendix (D.2 Listing 1, D.4 Listings 2-5).

Every branch of every listing has a case that scores and a case that does not; the quirks
the listings have (and the matchers keep on purpose) have cases of their own.
"""

from __future__ import annotations

import pytest

from jobs.evaluate.matchers import (
    MATCHERS,
    accuracy,
    match_fin,
    match_mcq,
    match_med,
    match_rs_ad,
    match_sci,
)
from recipes.data.schema import MATCHER_NAMES

# Listing 1: (predict, label, expected)
MCQ_CASES = {
    "exact letter": ("B", "B", 1.0),
    "other letter": ("A", "B", 0.0),
    "case and whitespace ignored": ("  c \n", " C ", 1.0),
    "letter then dot then text": ("B. a golden retriever", "B", 1.0),
    "letter then bracket is not accepted": ("B) a golden retriever", "B", 0.0),
    "letter followed by another letter": ("BA", "B", 0.0),
    "text after the last colon": ("Answer: B", "B", 1.0),
    "after the colon, letter dot text": ("The answer is: b. a dog", "B", 1.0),
    "after the colon, wrong letter": ("Answer: C", "B", 0.0),
    "colon after the letter keeps only the text": ("B: a golden retriever", "B", 0.0),
    "letter inside a sentence": ("The answer is B", "B", 0.0),
}

# Listing 2: (predict, label, expected)
RS_AD_CASES = {
    "unanswerable is skipped": ("Unanswerable", "plane", None),
    "unanswerable inside text is skipped": ("This is Unanswerable.", "plane", None),
    "lower-case unanswerable is scored": ("unanswerable", "unanswerable", 1.0),
    "gt with space, substring": ("The picture shows New York City", "new york", 1.0),
    "gt with space, not found": ("new-york", "New York", 0.0),
    "gt alone, pred with space, space before": ("it is a plane", "Plane", 1.0),
    "gt alone, pred with space, space after": ("plane over the sea", "plane", 1.0),
    "gt alone, pred with space, dot after": ("an airplane. yes", "plane", 1.0),
    "gt alone, pred with space, comma after": ("an airplane, yes", "plane", 1.0),
    "gt alone, pred with space, no boundary": ("an airplane", "plane", 0.0),
    "gt alone, pred with space, not found": ("a ship at sea", "plane", 0.0),
    "gt alone, space before is enough for a word prefix": ("two planes here", "plane", 1.0),
    "gt alone, one-sided boundary matches a prefix": ("here nobody", "no", 1.0),
    "gt alone, pred alone, substring": ("planes", "plane", 1.0),
    "gt alone, pred alone, not found": ("ship", "plane", 0.0),
    "dotted gt becomes spaced and matches spaced text": ("u s army", "U.S", 1.0),
    "dotted gt no longer matches dotted text": ("the u.s. army", "U.S", 0.0),
}

# Listing 3: (predict, label, expected)
MED_CASES = {
    "unanswerable is skipped": ("Unanswerable from this scan", "pneumonia", None),
    "lower-case unanswerable is scored": ("unanswerable", "Unanswerable", 1.0),
    "label found, case ignored": ("The answer is Pneumonia.", "pneumonia", 1.0),
    "label not found": ("Normal chest", "pneumonia", 0.0),
    "short label found inside a word": ("not sure", "no", 1.0),
}

WHICH_STATES = "Which states have a value above 10?"
PLAIN_QUESTION = "Which process makes sugar in leaves?"

# Listing 4: (predict, label, prompt, expected)
SCI_CASES = {
    "one-character gt, equal": ("a", " A ", PLAIN_QUESTION, 1.0),
    "one-character gt, other letter": ("B", "A", PLAIN_QUESTION, 0.0),
    "one-character gt, dot in the prediction": ("A.", "A", PLAIN_QUESTION, 0.0),
    "one-character gt, longer prediction": ("A photosynthesis", "A", PLAIN_QUESTION, 0.0),
    "dotted letter gt takes the substring branch": ("a", "A.", PLAIN_QUESTION, 1.0),
    "which states, same list": ("texas, ohio", "Texas, Ohio", WHICH_STATES, 1.0),
    "which states, other order scores nothing": ("Ohio, Texas", "Texas, Ohio", WHICH_STATES, 0.0),
    "which states, missing comma space scores nothing": ("Texas,Ohio", "Texas, Ohio", WHICH_STATES, 0.0),
    "which states, subset gets no partial credit": ("Texas", "Texas, Ohio", WHICH_STATES, 0.0),
    "gt in pred": ("It is photosynthesis.", "Photosynthesis", PLAIN_QUESTION, 1.0),
    "pred in gt": ("photo", "photosynthesis", PLAIN_QUESTION, 1.0),
    "neither becomes no": ("no", "Neither", PLAIN_QUESTION, 1.0),
    "empty prediction is in every gt": ("", "photosynthesis", PLAIN_QUESTION, 1.0),
    "neither way round": ("respiration", "photosynthesis", PLAIN_QUESTION, 0.0),
}

# Listing 5: (predict, label, expected)
FIN_CASES = {
    "equal after removing spaces": ("1 2 5", "125", 1.0),
    "equal after removing dots, case ignored": ("Apple Inc.", "APPLEINC", 1.0),
    "different value": ("126", "125", 0.0),
    "label keeps its dot and never matches": ("12.5", "12.5", 0.0),
    "label keeps its spaces and never matches": ("net income", "net income", 0.0),
}


def _table(cases: dict) -> list:
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize(("predict", "label", "expected"), _table(MCQ_CASES))
def test_listing1_mcq(predict, label, expected):
    assert match_mcq(predict, label) == expected


@pytest.mark.parametrize(("predict", "label", "expected"), _table(RS_AD_CASES))
def test_listing2_rs_ad(predict, label, expected):
    assert match_rs_ad(predict, label) == expected


@pytest.mark.parametrize(("predict", "label", "expected"), _table(MED_CASES))
def test_listing3_med(predict, label, expected):
    assert match_med(predict, label) == expected


@pytest.mark.parametrize(("predict", "label", "prompt", "expected"), _table(SCI_CASES))
def test_listing4_sci(predict, label, prompt, expected):
    assert match_sci(predict, label, prompt) == expected


@pytest.mark.parametrize(("predict", "label", "expected"), _table(FIN_CASES))
def test_listing5_fin(predict, label, expected):
    assert match_fin(predict, label) == expected


def test_mcq_converts_non_strings_like_the_listing():
    assert match_mcq(1, 1) == 1.0


def test_registry_names_and_shared_rs_ad_rule():
    assert set(MATCHERS) == {"exact", "mcq", "rs", "ad", "rs_ad", "med", "sci", "fin"}
    assert MATCHERS["rs"] is MATCHERS["ad"] is MATCHERS["rs_ad"] is match_rs_ad
    assert set(MATCHERS) == set(MATCHER_NAMES)  # every name a record may carry has a rule


ACCURACY_CASES = {
    "mcq three of four": ("mcq", ["A", "Answer: B", "C. cat", "D"], ["A", "B", "C", "A"], None, 75.0),
    "rs unanswerable stays in the denominator": (
        "rs",
        ["Unanswerable", "a plane", "ship"],
        ["plane", "plane", "plane"],
        None,
        100.0 / 3,
    ),
    "ad same rule as rs": ("ad", ["Unanswerable", "turn left"], ["left", "left"], None, 50.0),
    "med unanswerable stays in the denominator": (
        "med",
        ["Unanswerable", "pneumonia", "normal", "Unanswerable"],
        ["pneumonia"] * 4,
        None,
        25.0,
    ),
    "sci uses each item's prompt": (
        "sci",
        ["texas, ohio", "texas, ohio"],
        ["Texas, Ohio", "Texas"],
        [WHICH_STATES, PLAIN_QUESTION],
        100.0,
    ),
    "sci which-states exact match only": (
        "sci",
        ["texas", "b"],
        ["Texas, Ohio", "B"],
        [WHICH_STATES, PLAIN_QUESTION],
        50.0,
    ),
    "fin all wrong": ("fin", ["1", "2"], ["3", "4"], None, 0.0),
}


@pytest.mark.parametrize(("name", "predictions", "labels", "prompts", "expected"), _table(ACCURACY_CASES))
def test_accuracy_percent(name, predictions, labels, prompts, expected):
    assert accuracy(name, predictions, labels, prompts) == pytest.approx(expected)


ACCURACY_ERRORS = {
    "unknown matcher": (("vqa", ["A"], ["A"], None), ValueError, "unknown matcher"),
    "length mismatch": (("mcq", ["A", "B"], ["A"], None), ValueError, "differ in length"),
    "empty": (("mcq", [], [], None), ValueError, "empty"),
    "prompt count": (("sci", ["a"], ["a"], ["q", "q"]), ValueError, "prompts"),
    "sci without prompts": (("sci", ["a"], ["a"], None), ValueError, "needs the prompt"),
    "non-string prediction": (("rs", [None], ["plane"], None), TypeError, r"predictions\[0\]"),
}


@pytest.mark.parametrize(("args", "error", "message"), _table(ACCURACY_ERRORS))
def test_accuracy_rejects_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        accuracy(*args)


def test_sci_matcher_requires_prompt():
    with pytest.raises(ValueError, match="prompt"):
        match_sci("a", "a")
