"""Grid expansion: which trials a grid has, in which order, with which settings and ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from orchestrator.expand import expand_trials
from orchestrator.grid import GridError, load_grid, parse_grid
from recipes.data.stream import MixSource

HEAD = {"name": "t", "model": "toy-qwen2.5-vl"}


def trial_names(grid_data: dict) -> list[str]:
    return [trial.name for trial in expand_trials(parse_grid({**HEAD, **grid_data}, check_paths=False))]


EXPANSIONS = [
    (
        "product in axis order, seeds innermost",
        {"grid": {"parts": ["llm", "vision"], "lr": [1e-5, 1e-6], "seed": [0, 1]}},
        [
            "llm-full-lr1e-05-f1.0-s0",
            "llm-full-lr1e-05-f1.0-s1",
            "llm-full-lr1e-06-f1.0-s0",
            "llm-full-lr1e-06-f1.0-s1",
            "vision-full-lr1e-05-f1.0-s0",
            "vision-full-lr1e-05-f1.0-s1",
            "vision-full-lr1e-06-f1.0-s0",
            "vision-full-lr1e-06-f1.0-s1",
        ],
    ),
    (
        "exclude removes grid cells, include adds cells after them",
        {
            "grid": {"parts": ["llm", "projector"], "lr": [1e-3, 1e-4]},
            "exclude": [{"parts": "projector", "lr": 1e-4}],
            "include": [
                {"parts": "llm", "method": "lora", "lr": 1e-3, "lora": {"r": 4}},
                {"parts": "projector", "lr": 1e-4, "seed": 7},
            ],
        },
        [
            "llm-full-lr1e-03-f1.0-s0",
            "llm-full-lr1e-04-f1.0-s0",
            "projector-full-lr1e-03-f1.0-s0",
            "llm-lora-r4-lr1e-03-f1.0-s0",
            "projector-full-lr1e-04-f1.0-s7",
        ],
    ),
    (
        "an include cell takes every value of the axes it leaves out",
        {
            "grid": {"parts": ["llm"], "lr": [1e-5, 1e-6], "data_fraction": [1.0]},
            "include": [{"data_fraction": [0.25, 0.025]}],
        },
        [
            "llm-full-lr1e-05-f1.0-s0",
            "llm-full-lr1e-06-f1.0-s0",
            "llm-full-lr1e-05-f0.25-s0",
            "llm-full-lr1e-05-f0.025-s0",
            "llm-full-lr1e-06-f0.25-s0",
            "llm-full-lr1e-06-f0.025-s0",
        ],
    ),
    (
        "LoRA cells use LoRA's own lr axis",
        {"grid": {"method": ["full", "lora"], "lr": [1e-5]}, "methods": {"lora": {"r": 16, "lr": [1e-4, 1e-3]}}},
        ["llm-full-lr1e-05-f1.0-s0", "llm-lora-r16-lr1e-04-f1.0-s0", "llm-lora-r16-lr1e-03-f1.0-s0"],
    ),
    (
        "mix_ratio axis: 0 is no mixing",
        {"train": {"mix": [{"dataset": "toy-general"}]}, "grid": {"lr": [1e-4], "mix_ratio": [0, 0.3, 0.5]}},
        ["llm-full-lr1e-04-f1.0-s0", "llm-full-lr1e-04-f1.0-s0-mix0.3", "llm-full-lr1e-04-f1.0-s0-mix0.5"],
    ),
    (
        "duplicates collapse into the first",
        {"grid": {"lr": [1e-4, 1.0e-4, 1e-5]}, "include": [{"lr": 1e-5}, {"parts": "llm", "method": "full"}]},
        ["llm-full-lr1e-04-f1.0-s0", "llm-full-lr1e-05-f1.0-s0"],
    ),
]


@pytest.mark.parametrize("grid_data, expected", [case[1:] for case in EXPANSIONS], ids=[case[0] for case in EXPANSIONS])
def test_expansion_counts_and_names(grid_data, expected):
    assert trial_names(grid_data) == expected


def test_exclude_with_lists_matches_any_value():
    names = trial_names(
        {
            "grid": {"parts": ["llm", "vision", "projector"], "lr": [1e-5, 1e-6], "seed": [0, 1]},
            "exclude": [{"parts": ["vision", "projector"], "seed": 1}],
        }
    )
    assert len(names) == 8
    assert not [name for name in names if name.endswith("-s1") and not name.startswith("llm-")]


def test_grid_settings_reach_every_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = parse_grid(
        {
            "name": "exp",
            "model": "toy-qwen2.5-vl-init",
            "train": {
                "dataset": "toy-imagenet-vqa",
                "steps": 40,
                "batch_size": 12,
                "warmup_ratio": 0.05,
                "schedule": "linear",
                "weight_decay": 0.01,
                "max_grad_norm": 0.5,
                "eval_every": 10,
                "deepspeed": {"zero_stage": 3},
                "mix": [{"dataset": "toy-general", "ratio": 0.25}],
                "keep_last": 3,
            },
            "eval": {"mode": "generate", "suite": "toy", "batch_size": 4, "max_new_tokens": 5},
            "grid": {"parts": ["llm.attn"], "method": ["lora"], "lr": [2e-4], "data_fraction": [0.5], "seed": [3]},
            "methods": {"lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
            "resources": {"workers_per_trial": 2, "gpus_per_worker": 0.5, "cpus_per_worker": 2},
            "tracking": {"uri": "sqlite:///runs.db"},
            "early_stop": {"max_ood_drop_pp": 12},
        },
        check_paths=False,
    )
    (trial,) = expand_trials(grid)
    expected = dict(
        model="toy-qwen2.5-vl-init", parts="llm.attn", method="lora", lr=2e-4, lora_r=4, lora_alpha=8.0, lora_dropout=0.1,
        dataset="toy-imagenet-vqa", data_fraction=0.5, mix=(MixSource("toy-general", 0.25),), seed=3, steps=40,
        batch_size=12, micro_batch_size=6, warmup_ratio=0.05, schedule="linear", weight_decay=0.01, max_grad_norm=0.5,
        eval_every=10, eval_suite="toy", eval_mode="generate", eval_batch_size=4, max_new_tokens=5, zero_stage=3,
        deepspeed_config=None, max_ood_drop_pp=12.0, workers=2, gpus_per_worker=0.5, cpus_per_worker=2.0,
        storage=str(tmp_path / "sweeps"), keep_last=3, tracking_uri=f"sqlite:///{tmp_path / 'runs.db'}",
        experiment="exp", sweep="exp", run_id=None,
    )  # fmt: skip
    assert {key: getattr(trial, key) for key in expected} == expected
    assert trial.name == "llm.attn-lora-r4-lr2e-04-f0.5-s3-mix0.25"


DEFAULT_MICRO_BATCHES = [(16, 1, 8), (16, 2, 8), (12, 2, 6), (20, 2, 5), (48, 2, 8), (18, 3, 6), (4, 1, 4), (14, 1, 7)]


@pytest.mark.parametrize("batch_size, workers, micro_batch_size", DEFAULT_MICRO_BATCHES)
def test_default_micro_batch_is_capped_at_8_and_divides_the_worker_batch(batch_size, workers, micro_batch_size):
    grid = parse_grid(
        {
            **HEAD,
            "train": {"batch_size": batch_size},
            "grid": {"lr": [1e-4]},
            "resources": {"workers_per_trial": workers},
        }
    )
    assert expand_trials(grid)[0].micro_batch_size == micro_batch_size


def test_include_cells_carry_their_own_train_and_lora_settings():
    grid = parse_grid(
        {
            **HEAD,
            "train": {"steps": 100, "batch_size": 16},
            "grid": {"lr": [1e-5]},
            "methods": {"lora": {"r": 8, "alpha": 16}},
            "include": [
                {
                    "method": "lora",
                    "lr": 1e-4,
                    "lora": {"alpha": 32},
                    "train": {"steps": 50, "batch_size": 32, "schedule": "constant"},
                }
            ],
        }
    )
    full, lora = expand_trials(grid)
    assert (full.steps, full.batch_size, full.schedule, full.method) == (100, 16, "cosine", "full")
    assert (lora.steps, lora.batch_size, lora.micro_batch_size, lora.schedule) == (50, 32, 8, "constant")
    assert (lora.lora_r, lora.lora_alpha, lora.lr) == (8, 32.0, 1e-4)


def test_deepspeed_file_and_train_mix_without_axis():
    grid = parse_grid(
        {
            **HEAD,
            "train": {
                "deepspeed": "ds.json",
                "mix": [{"dataset": "toy-general", "ratio": 0.2}, {"dataset": "toy-wiki", "ratio": 0}],
            },
            "grid": {"lr": [1e-4]},
        },
        check_paths=False,
    )
    (trial,) = expand_trials(grid)
    assert (trial.deepspeed_config, trial.mix) == ("ds.json", (MixSource("toy-general", 0.2),))


GRID_TEXT = """\
name: order
model: toy-qwen2.5-vl
train: {steps: 20, batch_size: 8, mix: [{dataset: toy-general}]}
grid:
  parts: [llm, projector]
  method: [full, lora]
  lr: [1.0e-4, 1.0e-5]
  mix_ratio: [0.0, 0.5]
  seed: [0, 1]
methods: {lora: {r: 4, lr: [1.0e-3]}}
include:
  - {parts: vision, lr: 3.0e-5, train: {steps: 10}}
exclude:
  - {parts: projector, method: lora}
resources: {workers_per_trial: 2}
"""


def shuffled(data, depth: int = 0):
    """The same YAML data with every mapping's keys in reverse order."""
    if isinstance(data, dict):
        return {key: shuffled(value, depth + 1) for key, value in reversed(list(data.items()))}
    if isinstance(data, list):
        return [shuffled(item, depth + 1) for item in data]
    return data


def test_ids_do_not_depend_on_key_order(tmp_path):
    original = tmp_path / "a.yaml"
    original.write_text(GRID_TEXT)
    reordered = tmp_path / "b.yaml"
    reordered.write_text(yaml.safe_dump(shuffled(yaml.safe_load(GRID_TEXT)), sort_keys=False))
    assert reordered.read_text().splitlines()[0].startswith("resources")
    first, second = expand_trials(load_grid(original)), expand_trials(load_grid(reordered))
    assert [t.trial_id for t in first] == [t.trial_id for t in second]
    # llm full 2 lr x 2 mix x 2 seeds + llm lora 1 x 2 x 2 + projector full 8 + vision include (full and lora) 8
    assert len(first) == 8 + 4 + 8 + 8
    assert len({t.trial_id for t in first}) == len(first)


def test_ids_are_stable_across_processes(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID_TEXT)
    here = {t.name: t.trial_id for t in expand_trials(load_grid(path))}
    script = textwrap.dedent(
        f"""
        import json
        from orchestrator.expand import expand_trials
        from orchestrator.grid import load_grid
        print(json.dumps({{t.name: t.trial_id for t in expand_trials(load_grid({str(path)!r}))}}))
        """
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        cwd=Path(__file__).parents[1],
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == here


def test_run_fields_do_not_change_ids():
    base = {**HEAD, "grid": {"lr": [1e-4]}}
    moved = {
        **base,
        "name": "other",
        "storage": "s3://bucket/x",
        "tracking": {"uri": "http://mlflow:5000"},
        "train": {"keep_last": 5},
    }
    (first,), (second,) = expand_trials(parse_grid(base)), expand_trials(parse_grid(moved))
    assert first.trial_id == second.trial_id
    assert (second.experiment, second.storage, second.tracking_uri) == ("other", "s3://bucket/x", "http://mlflow:5000")


def test_mix_ratio_is_split_equally_among_the_mixed_in_datasets():
    grid = {
        "train": {"mix": [{"dataset": "toy-general"}, {"dataset": "toy-chat"}]},
        "grid": {"lr": [1e-4], "mix_ratio": [0, 0.3]},
    }
    trials = expand_trials(parse_grid({**HEAD, **grid}, check_paths=False))
    assert [trial.mix for trial in trials] == [(), (MixSource("toy-general", 0.15), MixSource("toy-chat", 0.15))]
    with pytest.raises(GridError, match=r"train\.mix\[1\]\.ratio: grid\.mix_ratio sets the mixed-in share"):
        parse_grid({**HEAD, "train": {"mix": [{"dataset": "toy-general"}, {"dataset": "toy-chat", "ratio": 0.1}]},
                    "grid": {"lr": [1e-4], "mix_ratio": [0.3]}}, check_paths=False)  # fmt: skip
