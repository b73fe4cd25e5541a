"""The toy base knows the toy world before any fine-tuning: zero-shot accuracy above chance in
every quadrant of the 2x2 suite.

The shipped base (``toy-qwen2.5-vl``: 1,500 steps, about 5 minutes) is too slow for the test
suite, so this builds a faster variant with the same architecture and pre-training code: 500
steps on a pre-training mix of the default-size toy world in which the target task has a 40%
share instead of 10% (the class task is the slowest to learn). Chance is 25%; the bar is three
standard errors of a guesser above it (31.5% on id_id's 400 questions, 30.3% on ood_id's 600).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from jobs.evaluate.suite_eval import SuiteEvaluator
from recipes.data.suites import QUADRANTS, load_suite
from recipes.data.toy_world import ToyWorldConfig
from recipes.models import load_model
from recipes.models.toy_base import PretrainConfig, toy_model_dir

CHANCE = 0.25
"""Every toy question has four options."""
STANDARD_ERRORS = 3.0
"""How far above chance every quadrant must be, in standard errors of a guesser's accuracy on its
questions (a guesser gets there with probability ~0.1%)."""
FASTER_PRETRAIN_SHARES = (
    ("classify", 0.4),
    ("styles", 0.6 * 1 / 9),
    ("digits", 0.6 * 1 / 9),
    ("attributes", 0.6 * 2.5 / 9),
    ("wiki", 0.6 * 2 / 9),
    ("digit-tasks", 0.6 * 1.5 / 9),
    ("text-qa", 0.6 * 1 / 9),
)
"""The faster variant's pre-training mix: the target task at 40%, the rest in fixed proportions."""


def faster_pretrain_world() -> ToyWorldConfig:
    """The default-size toy world with the faster variant's pre-training mix."""
    return ToyWorldConfig(size="default", pretrain_shares=FASTER_PRETRAIN_SHARES)


def file_identities(directory: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every file in ``directory``: a rebuild writes new files, a cache hit none."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in directory.iterdir()}


@pytest.fixture(scope="module")
def fast_base(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGETLESS_TOY_SIZE", "default")  # the suite below is the demo's, 200 questions per set
        build = lambda: toy_model_dir(True, pretrain_config=PretrainConfig(steps=500), pretrain_world=faster_pretrain_world())  # noqa: E731
        directory = build()
        loaded = load_model(str(directory))
        suite = load_suite("toy")
        result = SuiteEvaluator(suite, loaded.processor, batch_size=64).evaluate(loaded.model)
        questions = {q: sum(suite.load(d).num_rows for d in suite.quadrants[q]) for q in QUADRANTS}
        built = file_identities(directory)
        again = build()
    return directory, again, result, questions, built


@pytest.mark.parametrize("quadrant", QUADRANTS)
def test_pretrained_base_is_above_chance_in_every_quadrant(fast_base, quadrant):
    _, _, result, questions, _ = fast_base
    bar = 100 * (CHANCE + STANDARD_ERRORS * math.sqrt(CHANCE * (1 - CHANCE) / questions[quadrant]))
    assert result.quadrant(quadrant) >= bar, (round(bar, 1), result.metrics)


def test_pretraining_is_cached_and_reported(fast_base):
    directory, again, _, _, built = fast_base
    assert '"steps": 500' in (directory / "pretrain_report.json").read_text()
    assert again == directory
    assert file_identities(directory) == built, "the second request rebuilt the model instead of finding it"
