"""The 2x2 evaluation: both modes, data-parallel gathering, zero-shot cache, probes, the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contract import layout
from jobs.evaluate.probe_runs import classname_probe, counting_probe
from jobs.evaluate.scoring import chosen_letter
from jobs.evaluate.suite_eval import SuiteEvaluator, delta_metrics, quadrant_metrics
from jobs.evaluate.zero_shot import ZeroShotCache, zero_shot_key
from recipes.data.registry import load_dataset
from recipes.data.suites import QUADRANTS, Suite, load_suite
from recipes.models import load_model
from recipes.toyworld.base import SHIPPED_BASE_DIR


@pytest.fixture(scope="module")
def letter_model():
    """The shipped pre-trained toy base: it answers with a bare letter (read from its folder, so the
    small toy world of the tests does not ask for a base of its own)."""
    return load_model(str(SHIPPED_BASE_DIR))


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite("toy")


def test_logits_and_generate_agree_on_a_model_that_answers_with_a_letter(letter_model, suite):
    by_mode = {
        mode: SuiteEvaluator(suite, letter_model.processor, mode=mode, batch_size=64).evaluate(letter_model.model)
        for mode in ("logits", "generate")
    }
    logits, generated = (by_mode[mode].predictions.to_pylist() for mode in ("logits", "generate"))
    assert len(logits) == len(generated) > 300
    assert all(row["prediction"] in "ABCD" for row in generated), "the model must answer with a bare letter"
    assert [row["prediction"] for row in logits] == [row["prediction"] for row in generated]
    assert by_mode["logits"].metrics == by_mode["generate"].metrics


def test_metrics_are_percent_per_dataset_and_quadrant(letter_model, suite):
    result = SuiteEvaluator(suite, letter_model.processor, batch_size=64).evaluate(letter_model.model)
    rows = result.predictions.to_pylist()
    for quadrant in QUADRANTS:
        datasets = suite.quadrants[quadrant]
        per_dataset = []
        for name in datasets:
            correct = [row["correct"] for row in rows if row["dataset"] == name]
            per_dataset.append(100 * sum(correct) / len(correct))
            assert result.metrics[layout.dataset_metric(name)] == pytest.approx(per_dataset[-1])
        assert result.metrics[layout.accuracy_metric(quadrant)] == pytest.approx(sum(per_dataset) / len(per_dataset))
    chosen = [row for row in rows if row["chosen"]]
    assert len(chosen) == len(rows)  # logits mode always picks one of the options


@pytest.mark.parametrize(
    ("accuracy", "expected"),
    [
        (
            {"a": 50.0, "b": 70.0, "c": 10.0, "d": 20.0, "e": 30.0},
            {"id_id": 60.0, "id_ood": 10.0, "ood_id": 20.0, "ood_ood": 30.0},
        ),
        (
            {"a": 0.0, "b": 100.0, "c": 100.0, "d": 0.0, "e": 25.0},
            {"id_id": 50.0, "id_ood": 100.0, "ood_id": 0.0, "ood_ood": 25.0},
        ),
    ],
)
def test_quadrant_aggregation(accuracy, expected):
    suite = Suite("t", {"id_id": ["a", "b"], "id_ood": ["c"], "ood_id": ["d"], "ood_ood": ["e"]})
    metrics = quadrant_metrics(accuracy, suite, {"a": 100, "b": 100, "c": 400, "d": 10, "e": 100})
    assert {q: metrics[layout.accuracy_metric(q)] for q in QUADRANTS} == expected
    assert metrics[layout.dataset_metric("a")] == accuracy["a"]
    zero_shot = {layout.accuracy_metric(q): 25.0 for q in QUADRANTS}
    assert delta_metrics(metrics, zero_shot) == {layout.delta_metric(q): value - 25.0 for q, value in expected.items()}


def test_a_quadrant_standard_error_combines_its_datasets_binomial_errors():
    suite = Suite("t", {"id_id": ["a", "b"], "id_ood": ["c"], "ood_id": ["d"], "ood_ood": ["e"]})
    accuracy = {"a": 50.0, "b": 90.0, "c": 100.0, "d": 20.0, "e": 50.0}
    metrics = quadrant_metrics(accuracy, suite, {"a": 100, "b": 400, "c": 50, "d": 1600, "e": 2500})
    # a: sqrt(.5 * .5 / 100) = 5 pp, b: sqrt(.9 * .1 / 400) = 1.5 pp; their mean: sqrt(25 + 2.25) / 2
    assert metrics[layout.stderr_metric("id_id")] == pytest.approx((25 + 2.25) ** 0.5 / 2)
    assert metrics[layout.stderr_metric("id_ood")] == 0.0  # all right: no binomial spread
    assert metrics[layout.stderr_metric("ood_id")] == pytest.approx(1.0)  # sqrt(.2 * .8 / 1600)
    assert metrics[layout.stderr_metric("ood_ood")] == pytest.approx(1.0)  # 2,500 questions at 50 %: the 1 pp goal


@pytest.mark.parametrize(
    ("generated", "options", "letter"),
    [
        ("B", 4, "B"),
        ("b", 4, "B"),
        ("The answer is: C", 4, "C"),
        ("D. red square", 4, "D"),
        ("E", 4, None),
        ("Bee", 4, None),
        ("", 4, None),
    ],
)
def test_generated_answers_are_read_like_listing_1(generated, options, letter):
    assert chosen_letter(generated, options) == letter


def test_two_worker_evaluation_gathers_exactly_the_one_worker_results(letter_model, suite, ray_cluster):
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    def evaluate_on_workers(config):
        import ray.train

        from jobs.evaluate.suite_eval import SuiteEvaluator
        from recipes.data.suites import load_suite
        from recipes.models import load_model

        context = ray.train.get_context()
        loaded = load_model(config["model"])
        evaluator = SuiteEvaluator(load_suite("toy"), loaded.processor, batch_size=16)
        result = evaluator.evaluate(loaded.model, context.get_world_rank(), context.get_world_size())
        return None if result is None else (result.metrics, result.predictions.to_pylist())

    trainer = TorchTrainer(
        evaluate_on_workers,
        train_loop_config={"model": str(letter_model.path)},
        scaling_config=ScalingConfig(num_workers=2),
    )
    metrics, rows = trainer.fit().return_value
    reloaded = load_model(str(letter_model.path))  # what the workers evaluated: the saved model
    expected = SuiteEvaluator(suite, reloaded.processor, batch_size=16).evaluate(reloaded.model)
    assert rows == expected.predictions.to_pylist()
    assert metrics == expected.metrics


def test_zero_shot_cache_round_trip_and_key(letter_model, suite, tmp_path):
    evaluator = SuiteEvaluator(suite, letter_model.processor, batch_size=64)
    key = zero_shot_key(letter_model.fingerprint, suite, evaluator)
    cache = ZeroShotCache(str(tmp_path / "zero-shot"))
    assert cache.get(key) is None
    result = cache.put(key, evaluator.evaluate(letter_model.model))
    cached = cache.get(key)
    assert cached.metrics == result.metrics
    assert cached.predictions.equals(result.predictions)
    other_mode = SuiteEvaluator(suite, letter_model.processor, mode="generate", batch_size=64)
    assert zero_shot_key(letter_model.fingerprint, suite, other_mode) != key
    assert zero_shot_key("another-model", suite, evaluator) != key
    assert (
        zero_shot_key(letter_model.fingerprint, suite, SuiteEvaluator(suite, letter_model.processor, batch_size=64))
        == key
    )


def test_zero_shot_cache_on_s3(letter_model, suite, s3_endpoint):
    from tests.conftest import S3_BUCKET

    evaluator = SuiteEvaluator(suite, letter_model.processor, batch_size=64)
    cache = ZeroShotCache(f"s3://{S3_BUCKET}/zero-shot")
    result = cache.put("k1", evaluator.evaluate(letter_model.model))
    assert cache.get("k1").metrics == result.metrics
    assert cache.get("k2") is None


def test_classname_probe_counts_mischoices(letter_model):
    rows = load_dataset("toy-wiki-classname").to_pylist()
    stats = classname_probe(letter_model.model, letter_model.processor, rows)
    assert stats["n"] == len(rows)
    assert 0 <= stats["accuracy"] <= 100 and 0 <= stats["mischoice_pct"] <= 100
    assert stats["n_errors"] == round(len(rows) * (100 - stats["accuracy"]) / 100)


def test_classname_probe_needs_the_classname_option(letter_model):
    with pytest.raises(ValueError, match="needs meta.classname_option"):
        classname_probe(letter_model.model, letter_model.processor, load_dataset("toy-wiki").to_pylist())


def test_counting_probe_measures_number_token_mass(letter_model):
    rows = load_dataset("toy-text-qa").to_pylist()[:12]
    bias = counting_probe(letter_model.model, letter_model.processor, rows, max_new_tokens=4)
    assert bias.n_samples == 12
    assert 0.0 <= bias.mean_mass.mean <= 1.0
    assert bias.mask[:, 0].all()  # the first step is always generated


def test_evaluate_command_prints_the_quadrant_table():
    result = subprocess.run(
        [sys.executable, "-m", "jobs.evaluate", "--model", "toy-qwen2.5-vl-init", "--suite", "toy", "--mode", "logits"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for quadrant in QUADRANTS:
        line = next(line for line in result.stdout.splitlines() if f"q/{quadrant}" in line)
        assert " ± " in line  # the quadrant's standard error
    assert "stderr" not in result.stdout and "questions in" in result.stdout


def test_evaluate_command_rejects_a_missing_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jobs.evaluate", "--model", "toy-qwen2.5-vl-init", "--checkpoint", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2
    assert "is not a trial checkpoint" in result.stderr
