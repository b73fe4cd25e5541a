"""Forgetting signals: each against a hand-computed value, the base's cached drift reference, a signal-based early stop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from contract import layout
from jobs.evaluate.signals import (
    DriftReferenceCache,
    SignalRows,
    TopK,
    TrialSignals,
    coarse_kl,
    linear_probe_accuracy,
    next_token_logprobs,
    top1_agreement,
)
from jobs.finetune.config import DEFAULT_SIGNALS
from jobs.finetune.loop import signal_steps, signal_stop_reason
from jobs.trial import run_trial
from recipes.data.registry import load_dataset
from recipes.data.suites import load_suite
from recipes.models import load_model
from tests.conftest import metric_steps
from tests.test_finetune import make_trial

BASE = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.7, 0.15, 0.1, 0.05]])
CURRENT = torch.tensor([[0.25, 0.25, 0.4, 0.1], [0.1, 0.6, 0.2, 0.1]])


def test_coarse_kl_is_the_kl_of_the_coarsened_distributions_and_at_most_the_full_kl():
    base = TopK.of(BASE.log(), k=2)
    assert base.ids.tolist() == [[0, 1], [0, 1]]
    kl = coarse_kl(base, CURRENT.log())
    # prompt 0: tokens 0, 1, then "the rest" with 0.2 (base) vs 0.5 (current)
    by_hand = [
        0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5),
        0.7 * math.log(0.7 / 0.1) + 0.15 * math.log(0.15 / 0.6) + 0.15 * math.log(0.15 / 0.3),
    ]
    assert kl.tolist() == pytest.approx(by_hand, rel=1e-5)
    full = coarse_kl(TopK.of(BASE.log(), k=4), CURRENT.log())
    assert full.tolist() == pytest.approx((BASE * (BASE / CURRENT).log()).sum(dim=1).tolist(), rel=1e-5)
    assert (kl <= full + 1e-6).all()
    assert coarse_kl(base, BASE.log()).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert top1_agreement(base, CURRENT.log()) == 0.0  # argmax 2 vs 0, 1 vs 0
    assert top1_agreement(base, BASE.log()) == 100.0


def test_linear_probe_reads_a_planted_class_and_not_noise():
    rng = np.random.default_rng(0)
    labels = [f"class{index % 4}" for index in range(80)]
    planted = rng.normal(size=(80, 6))
    planted[np.arange(80), np.arange(80) % 4] += 5.0  # the class, written into its own feature
    assert linear_probe_accuracy(planted, labels) == 100.0
    assert linear_probe_accuracy(rng.normal(size=(80, 6)), labels) < 60.0


def test_signals_of_the_base_and_its_cached_drift_reference(tmp_path):
    loaded = load_model("toy-qwen2.5-vl-init")
    suite = load_suite("toy")
    names = ("counting_bias", "classname_rate", "output_drift", "vision_probe")
    first = TrialSignals(names, suite, loaded.processor, loaded.fingerprint, str(tmp_path), samples=8, vision_rows=64)
    values = first.measure(loaded.model, base_model=loaded.model)
    assert first.cache_hit is False
    assert values[layout.signal_metric("output_kl")] == pytest.approx(0.0, abs=1e-6)
    assert values[layout.signal_metric("top1_agreement")] == 100.0
    assert 0.0 <= values[layout.signal_metric("counting_bias")] <= 1.0
    assert 0.0 <= values[layout.signal_metric("classname_rate")] <= 100.0
    assert 0.0 <= values[layout.signal_metric("vision_probe_acc")] <= 100.0
    assert all(values[layout.signal_time_metric(name)] > 0 for name in names)
    assert all(row["id"].startswith("toy-wiki-classname") for row in first.rows.classname)

    # a second trial of the same base reads the reference: no base model given, none loaded
    second = TrialSignals(("output_drift",), suite, loaded.processor, loaded.fingerprint, str(tmp_path), samples=8)
    with torch.no_grad():
        loaded.model.lm_head.weight[5] += 3.0  # token 5 gains logit 3 * sum(hidden) at every prompt: a known shift
    shifted = second.measure(loaded.model)
    assert second.cache_hit is True
    reference = DriftReferenceCache(str(tmp_path)).get(second.cache_key)
    assert reference is not None and reference.ids.shape == (8, 64)
    # the hand-side: the full KL of the shifted model's distributions vs the base's
    with torch.no_grad():
        loaded.model.lm_head.weight[5] -= 3.0
    base_full = next_token_logprobs(loaded.model, second.collate, second.rows.drift, 32)
    with torch.no_grad():
        loaded.model.lm_head.weight[5] += 3.0
    shifted_full = next_token_logprobs(loaded.model, second.collate, second.rows.drift, 32)
    full_kl = float((base_full.exp() * (base_full - shifted_full)).sum(dim=1).mean())
    assert 0.0 < shifted[layout.signal_metric("output_kl")] <= full_kl + 1e-6
    exact = float(coarse_kl(TopK.of(base_full, k=base_full.shape[1]), shifted_full).mean())
    assert exact == pytest.approx(full_kl, rel=1e-4)


def test_signal_rows_name_a_signal_the_suite_cannot_feed(tmp_path):
    suite = load_suite("toy")
    without_classname = type(suite)(
        "no-classname", {q: [d for d in names if d != "toy-wiki-classname"] for q, names in suite.quadrants.items()}
    )
    with pytest.raises(ValueError, match="no rows for classname_rate"):
        SignalRows.of_suite(without_classname, ("classname_rate",))


def test_the_sweep_refuses_a_signal_its_suite_cannot_feed_before_any_trial(tmp_path, capsys):
    """The ci grid with classname_rate on a suite without class-name rows: exit 2 and one line, no trial."""
    from orchestrator.sweep import main

    suite = load_suite("toy")
    quadrants = {q: [d for d in names if d != "toy-wiki-classname"] for q, names in suite.quadrants.items()}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"name": "no-classname", "quadrants": quadrants}))
    grid = yaml.safe_load(Path("grids/ci.yaml").read_text())
    grid["eval"].update(suite=str(tmp_path / "suite.yaml"), signals=["output_drift", "classname_rate"])
    grid.update(storage=str(tmp_path / "sweeps"), tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db"})
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    assert main([str(tmp_path / "grid.yaml")]) == 2
    err = capsys.readouterr().err
    assert "eval.signals: suite 'no-classname' has no rows for classname_rate" in err
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(
    ("value", "bounds", "stops"),
    [
        (0.2, {"early_stop_signal_max": 0.1}, "signal output_kl 0.2 above its max 0.1"),
        (0.05, {"early_stop_signal_max": 0.1}, None),
        (80.0, {"early_stop_signal": "top1_agreement", "early_stop_signal_min": 90}, "below its min 90"),
    ],
)
def test_signal_stop_rule(tmp_path, value, bounds, stops):
    settings = {"early_stop_signal": "output_kl", **bounds}
    trial = make_trial(tmp_path, "sqlite://", **settings)
    reason = signal_stop_reason({layout.signal_metric(trial.early_stop_signal): value}, trial)
    assert reason == stops if stops is None else stops in reason


def test_signal_settings_are_checked(tmp_path):
    assert make_trial(tmp_path, "sqlite://").signals == DEFAULT_SIGNALS
    assert make_trial(tmp_path, "sqlite://", signal_every=2).trial_id != make_trial(tmp_path, "sqlite://").trial_id
    with pytest.raises(ValueError, match="needs the signal vision_probe"):
        make_trial(tmp_path, "sqlite://", early_stop_signal="vision_probe_acc", early_stop_signal_min=10)
    with pytest.raises(ValueError, match="early_stop_signal needs early_stop_signal_max"):
        make_trial(tmp_path, "sqlite://", early_stop_signal="output_kl")
    assert signal_steps(make_trial(tmp_path, "sqlite://", signal_every=2)) == {2, 4, 8, 10}


def small_toy_suite(folder: Path, rows: int = 16) -> str:
    """A suite file of the toy suite's datasets cut to their first ``rows`` rows (a short trial's evaluations)."""
    quadrants = {}
    for quadrant, names in load_suite("toy").quadrants.items():
        quadrants[quadrant] = []
        for name in names:
            pq.write_table(load_dataset(name).slice(0, rows), folder / f"{name}.parquet")
            quadrants[quadrant].append(f"{name}.parquet")
    (folder / "suite.yaml").write_text(yaml.safe_dump({"name": "small-toy", "quadrants": quadrants}))
    return str(folder / "suite.yaml")


def test_a_trial_stops_when_its_signal_passes_the_bound(tmp_path, tracking_uri, ray_cluster):
    """output_kl is 0 at step 0 and above 0 once the weights move: with max 0 the trial stops at its first
    signal measurement (step 2, between evaluations), evaluating the suite there."""
    trial = make_trial(
        tmp_path,
        tracking_uri,
        eval_suite=small_toy_suite(tmp_path),
        eval_signals=("output_drift",),
        signal_every=2,
        early_stop_signal="output_kl",
        early_stop_signal_max=0.0,
    )
    outcome = run_trial(trial)
    assert outcome.status == "early_stopped", outcome.error
    kl = {
        m.step: m.value
        for m in MlflowClient(tracking_uri).get_metric_history(outcome.run_id, layout.signal_metric("output_kl"))
    }
    assert sorted(kl) == [0, 2] and kl[0] == 0.0 and kl[2] > 0.0
    assert metric_steps(tracking_uri, outcome.run_id, layout.accuracy_metric("ood_id")) == [0, 2]
    assert metric_steps(tracking_uri, outcome.run_id, layout.signal_time_metric("output_drift")) == [0, 2]
    tags = MlflowClient(tracking_uri).get_run(outcome.run_id).data.tags
    assert tags[layout.STATUS_TAG] == "early_stopped" and "signal output_kl" in tags[layout.EARLY_STOP_TAG]
