"""Every example grid in grids/ validates, expands and plans; the toy ones also with their paths checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.expand import expand_trials
from orchestrator.grid import GridError, load_grid
from orchestrator.plan import render_plan

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "grids"

EXPECTED = {
    "demo.yaml": ("demo-forgetting", 4),
    "toy-table1.yaml": ("toy-table1", 33),
    "demo-fraction.yaml": ("demo-fraction", 6),
    "demo-hybrid.yaml": ("demo-hybrid", 5),
    "demo-continual.yaml": ("demo-continual", 4),
    "demo-search.yaml": ("demo-search", 9),
    "ci.yaml": ("ci-smoke", 2),
    "paper-continual.yaml": ("paper-continual", 4),
    "paper-table1.yaml": ("paper-table1", 7),
    "paper-fraction.yaml": ("paper-fraction", 8),
    "paper-hybrid.yaml": ("paper-hybrid", 5),
}
"""Grid file -> (sweep name, number of trials)."""

TOY_GRIDS = (
    "demo.yaml",
    "toy-table1.yaml",
    "demo-fraction.yaml",
    "demo-hybrid.yaml",
    "demo-continual.yaml",
    "demo-search.yaml",
    "ci.yaml",
)
"""Grids that name only registered toy names: they validate with paths checked on any machine."""

PAPER_GRIDS = sorted(set(EXPECTED) - set(TOY_GRIDS))

FIRST_MISSING_FILE = {
    "paper-table1.yaml": "train.dataset: no such file 'data/imagenet-vqa-train.parquet'",
    "paper-fraction.yaml": "train.dataset: no such file 'data/imagenet-vqa-train.parquet'",
    "paper-hybrid.yaml": "train.dataset: no such file 'data/imagenet-vqa-train.parquet'",
    "paper-continual.yaml": "continual.tasks[0].train: no such file 'data/mllm-cl/RS-train.parquet'",
}
"""Paper grid -> the first data file it names (what a machine without the paper's data lacks)."""


def test_every_grid_is_listed():
    assert sorted(path.name for path in GRIDS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("file_name", sorted(EXPECTED))
def test_grid_validates_expands_and_plans(file_name, monkeypatch):
    monkeypatch.chdir(ROOT)
    grid = load_grid(GRIDS / file_name, check_paths=file_name in TOY_GRIDS)
    trials = expand_trials(grid)
    assert (grid.name, len(trials)) == EXPECTED[file_name]
    text = render_plan(grid, trials, {"CPU": 64.0, "GPU": 8.0})
    assert all(f"{trial.name} " in text and trial.trial_id in text for trial in trials)


@pytest.mark.parametrize("file_name", PAPER_GRIDS)
def test_paper_grids_with_paths_checked_report_only_what_this_machine_lacks(file_name, monkeypatch, tmp_path):
    """Without the paper's data (and model), checking paths reports exactly those, one per line."""
    (tmp_path / "suites").mkdir()
    shutil.copy(ROOT / "suites" / "paper.yaml", tmp_path / "suites" / "paper.yaml")
    shutil.copy(GRIDS / file_name, tmp_path / file_name)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GridError) as caught:
        load_grid(file_name)
    problems = caught.value.problems
    model_missing = [p for p in problems if p.startswith("model: ")]
    assert len(model_missing) <= 1  # only with HF_HUB_OFFLINE=1 and the model not in the Hugging Face cache
    assert all("not in the local Hugging Face cache" in p for p in model_missing)
    files_missing = [p for p in problems if p not in model_missing]
    assert f"{FIRST_MISSING_FILE[file_name]} (relative to {tmp_path})" in files_missing
    suite_lines = [p for p in files_missing if p.startswith("eval.suite: suites/paper.yaml: quadrants.")]
    assert len(suite_lines) == 8 and all("no such dataset '../data/" in p for p in suite_lines)


def test_the_quick_demo_shows_the_headline_recipes_once():
    trials = expand_trials(load_grid(GRIDS / "demo.yaml"))
    assert {(t.parts, t.method, t.lr, t.seed) for t in trials} == {
        ("llm", "full", 3e-4, 0),
        ("llm", "full", 3e-5, 0),
        ("llm", "lora", 3e-4, 0),
        ("projector", "full", 1e-4, 0),
    }
    table1 = {(t.parts, t.method, t.lr, t.steps) for t in expand_trials(load_grid(GRIDS / "toy-table1.yaml"))}
    assert {(t.parts, t.method, t.lr, t.steps) for t in trials} <= table1  # the same recipes as the full table


def test_toy_table1_shows_aggressive_and_gentle_recipes():
    trials = expand_trials(load_grid(GRIDS / "toy-table1.yaml"))
    recipes = {(t.parts, t.method, t.lr) for t in trials}
    same_rates = ("llm", "vision", "llm.attn", "llm.mlp_gate_up")
    assert recipes == (
        {(p, "full", lr) for p in same_rates for lr in (3e-4, 3e-5)}
        | {("projector", "full", 1e-4), ("projector", "full", 3e-5), ("llm", "lora", 3e-4)}
    )
    seeds = {}
    for t in trials:
        seeds.setdefault((t.parts, t.method, t.lr), set()).add(t.seed)
    assert set(map(frozenset, seeds.values())) == {frozenset({0, 1, 2})}  # every recipe on three seeds
    assert {(t.workers, t.batch_size, t.model, t.gpus_per_worker) for t in trials} == {(1, 16, "toy-qwen2.5-vl", 0.0)}
    everything = ("output_drift", "counting_bias", "classname_rate", "vision_probe")
    assert {tuple(t.eval_signals) for t in trials} == {everything}  # the signals' ranking needs them all


def test_paper_table1_is_the_papers_recipes():
    trials = expand_trials(load_grid(GRIDS / "paper-table1.yaml", check_paths=False))
    rows = {(t.parts, t.method, t.lr, t.batch_size, t.steps, t.lora_r if t.method == "lora" else None) for t in trials}
    assert rows == {
        ("llm", "full", 1e-5, 16, 80000, None),
        ("llm", "full", 1e-6, 16, 80000, None),
        ("llm", "lora", 1e-4, 32, 40000, 8),
        ("vision", "full", 1e-5, 16, 80000, None),
        ("vision", "full", 1e-6, 16, 80000, None),
        ("projector", "full", 1e-5, 16, 80000, None),
        ("projector", "full", 1e-6, 16, 80000, None),
    }
    assert {(t.schedule, t.warmup_ratio, t.eval_suite) for t in trials} == {("cosine", 0.1, "suites/paper.yaml")}


def test_paper_fraction_trains_small_fractions_like_the_paper():
    trials = expand_trials(load_grid(GRIDS / "paper-fraction.yaml", check_paths=False))
    settings = {(t.data_fraction, t.lr): (t.steps, t.warmup_ratio, t.schedule) for t in trials}
    long_run, short_run = (80000, 0.0025, "linear"), (2000, 0.1, "linear")
    assert settings == {
        (fraction, lr): long_run if fraction >= 0.25 else short_run
        for fraction in (1.0, 0.25, 0.025, 0.0025)
        for lr in (1e-6, 1e-5)
    }


def test_paper_continual_is_the_papers_table3_setup():
    trials = expand_trials(load_grid(GRIDS / "paper-continual.yaml", check_paths=False))
    rows = {(t.continual_method, t.lr, t.batch_size, t.replay_per_task) for t in trials}
    assert rows == {
        ("seqfull", 1e-6, 16, 0),
        ("seqfull", 1e-6, 16, 20),
        ("inclora", 8e-5, 64, 0),
        ("inclora", 8e-5, 64, 20),
    }
    assert {tuple(task.name for task in t.continual_tasks) for t in trials} == {("RS", "Med", "AD", "Sci", "Fin")}
    assert {t.continual_epochs for t in trials} == {(1.0, 3.0, 1.0, 2.0, 1.0)}
    assert {t.model for t in trials} == {"llava-1.5-7b"}
