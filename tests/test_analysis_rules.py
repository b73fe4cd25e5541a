"""The rules behind Table 1 and the frontier: colour thresholds, dominance, seed averaging."""

from __future__ import annotations

import pytest

from analysis.errors import AnalysisError
from analysis.frontier import dominates, pareto_front
from analysis.mlflow_reader import QUADRANTS, Recipe, Setting, Trial
from analysis.outcomes import summarize
from analysis.tables import delta_tone, format_pp

ZERO_SHOT = {"id_id": 50.0, "id_ood": 60.0, "ood_id": 40.0, "ood_ood": 30.0}


def make_trial(lr: float, id_gain: float, ood_deltas: tuple[float, float, float], seed: int = 0) -> Trial:
    """A trial with two checkpoints (zero-shot and final) and the given changes."""
    deltas = dict(zip(QUADRANTS, (id_gain, *ood_deltas)))
    recipe = Recipe(parts="llm", method="full", lr_value=lr, lr=f"{lr:.0e}")
    return Trial(
        run_id=f"run-{lr}-{seed}",
        name=f"llm-full-lr{lr:.0e}-s{seed}",
        status="finished",
        setting=Setting(recipe=recipe, data_fraction=1.0, mix_ratio=0.0, mix_sources=()),
        seed=str(seed),
        params={},
        tags={},
        history={q: {0: ZERO_SHOT[q], 100: ZERO_SHOT[q] + deltas[q]} for q in QUADRANTS},
    )


@pytest.mark.parametrize(
    "delta, tone",
    [
        (-16.56, "drop"),
        (-3.01, "drop"),
        (-3.0, "stable"),
        (-3.004, "stable"),
        (-3.006, "drop"),
        (0.0, "stable"),
        (2.99, "stable"),
        (3.0, "stable"),
        (3.01, None),
        (11.3, None),
    ],
)
def test_delta_tone_follows_the_paper_margin(delta: float, tone: str | None):
    assert delta_tone(delta) == tone


@pytest.mark.parametrize("value, text", [(0.46, "+0.46"), (-16.556, "-16.56"), (-0.001, "+0.00"), (0.0, "+0.00")])
def test_format_pp(value: float, text: str):
    assert format_pp(value) == text


@pytest.mark.parametrize(
    "points, front",
    [
        # (ID gain, mean OOD delta) per setting -> indices on the frontier
        ([(30, -9), (27, 0), (10, -1)], [0, 1]),
        ([(30, -9), (27, -9)], [0, 1]),  # tie on retention: no dominance
        ([(27, 0), (27, -1)], [0, 1]),  # tie on ID gain: no dominance
        ([(27, 0), (27, 0)], [0, 1]),  # identical: both stay
        ([(5, 1), (10, 2), (20, 3)], [2]),  # one setting better on both than all others
        ([(10, 0)], [0]),
    ],
)
def test_pareto_front(points: list[tuple[float, float]], front: list[int]):
    trials = [make_trial(lr=10.0 ** -(i + 1), id_gain=g, ood_deltas=(r, r, r)) for i, (g, r) in enumerate(points)]
    outcomes = summarize(trials)
    by_lr = sorted(outcomes, key=lambda o: -o.setting.recipe.lr_value)  # back to the order of `points`
    assert [by_lr.index(o) for o in pareto_front(by_lr)] == front


def test_dominance_needs_both_axes_strictly_better():
    strong, weak = summarize([make_trial(1e-5, 20, (1, 1, 1)), make_trial(1e-6, 10, (0, 0, 0))])[::-1]
    assert strong.setting.recipe.lr == "1e-05"
    assert dominates(strong, weak) and not dominates(weak, strong) and not dominates(strong, strong)


def test_seeds_of_a_setting_are_averaged():
    [outcome] = summarize([make_trial(1e-5, 20, (-4, 0, 2), seed=0), make_trial(1e-5, 10, (-2, 2, 0), seed=1)])
    assert len(outcome.trials) == 2
    assert outcome.id_gain == 15 and outcome.final_id == 65
    assert [outcome.deltas[q] for q in QUADRANTS[1:]] == [-3, 1, 1]
    assert outcome.ood_retention == pytest.approx(-1 / 3)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("data_fraction", 0.0, "data_fraction must be in"),
        ("data_fraction", 1.5, "data_fraction must be in"),
        ("mix_ratio", 1.0, "mix_ratio must be in"),
    ],
)
def test_setting_validates_its_fields(field: str, value: float, message: str):
    settings = {
        "recipe": Recipe("llm", "full", 1e-5, "1e-05"),
        "data_fraction": 1.0,
        "mix_ratio": 0.0,
        "mix_sources": (),
        field: value,
    }
    with pytest.raises(AnalysisError, match=message):
        Setting(**settings)


def test_trial_needs_a_zero_shot_value():
    trial = make_trial(1e-5, 10, (0, 0, 0))
    history = {**trial.history, "ood_id": {100: 40.0}}
    with pytest.raises(AnalysisError, match=r"no step-0 \(zero-shot\) value for acc/q/ood_id"):
        Trial(
            run_id="r",
            name="t",
            status="finished",
            setting=trial.setting,
            seed="0",
            params={},
            tags={},
            history=history,
        )
