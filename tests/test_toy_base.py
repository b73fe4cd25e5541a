"""The toy base knows the toy world before any fine-tuning: zero-shot accuracy above chance in
every quadrant of the 2x2 suite.

The shipped base (``toy-qwen2.5-vl``: 1,500 steps, about 5 minutes) is too slow for the test
suite, so this builds a faster variant with the same architecture and pre-training code: 500
steps on a pre-training mix of the default-size toy world in which the target task has a 40%
share instead of 10% (the class task is the slowest to learn). It measured 36.5 / 38.8 / 37.8 /
48.5% (id_id / id_ood / ood_id / ood_ood) on the default-size suite; chance is 25%.
"""

from __future__ import annotations

import pytest

from jobs.evaluate.suite_eval import SuiteEvaluator
from recipes.data.suites import QUADRANTS, load_suite
from recipes.data.toy_world import ToyWorldConfig
from recipes.models import load_model
from recipes.models.toy_base import PretrainConfig, toy_model_dir

CHANCE = 25.0
"""Every toy question has four options."""
MARGIN_PP = 7.5
"""How far above chance every quadrant must be (about 3.5 standard errors on 400 questions)."""
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


@pytest.fixture(scope="module")
def fast_base(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGETLESS_TOY_SIZE", "default")  # the suite below is the demo's, 200 questions per set
        directory = toy_model_dir(True, pretrain_config=PretrainConfig(steps=500), pretrain_world=faster_pretrain_world())
        loaded = load_model(str(directory))
        result = SuiteEvaluator(load_suite("toy"), loaded.processor, batch_size=64).evaluate(loaded.model)
    return directory, result


@pytest.mark.parametrize("quadrant", QUADRANTS)
def test_pretrained_base_is_above_chance_in_every_quadrant(fast_base, quadrant):
    _, result = fast_base
    assert result.quadrant(quadrant) >= CHANCE + MARGIN_PP, result.metrics


def test_pretraining_is_cached_and_reported(fast_base):
    directory, _ = fast_base
    report = (directory / "pretrain_report.json").read_text()
    assert '"steps": 500' in report
    assert toy_model_dir(True, pretrain_config=PretrainConfig(steps=500), pretrain_world=faster_pretrain_world()) == directory
