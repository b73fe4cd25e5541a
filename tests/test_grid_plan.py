"""The dry-run plan: every trial in the table, the resources a trial needs, and the concurrency."""

from __future__ import annotations

import os

import pytest

from orchestrator.expand import expand_trials
from orchestrator.grid import parse_grid
from orchestrator.plan import (
    cluster_resources,
    local_resources,
    main,
    max_concurrent_trials,
    render_plan,
    trial_resources,
)


def grid_with(resources: dict):
    return parse_grid({"name": "plan", "model": "toy-qwen2.5-vl", "grid": {"lr": [1e-4]}, "resources": resources})


CONCURRENCY = [
    ("2-core laptop, 2 CPU workers", {"workers_per_trial": 2}, {"CPU": 2.0, "GPU": 0.0}, 1),
    ("8 cores, 2 CPU workers", {"workers_per_trial": 2}, {"CPU": 8.0}, 4),
    ("too small for one trial", {"workers_per_trial": 2}, {"CPU": 1.0}, 0),
    ("CPUs per worker", {"workers_per_trial": 2, "cpus_per_worker": 3}, {"CPU": 16.0}, 2),
    ("GPUs decide", {"workers_per_trial": 2, "gpus_per_worker": 1, "cpus_per_worker": 4}, {"CPU": 64.0, "GPU": 8.0}, 4),
    (
        "CPUs decide on a GPU node",
        {"workers_per_trial": 2, "gpus_per_worker": 1, "cpus_per_worker": 8},
        {"CPU": 32.0, "GPU": 8.0},
        2,
    ),
    ("fractional GPUs", {"workers_per_trial": 2, "gpus_per_worker": 0.5}, {"CPU": 16.0, "GPU": 4.0}, 4),
    ("no GPUs in the cluster", {"gpus_per_worker": 1}, {"CPU": 16.0}, 0),
    ("grid cap is smaller", {"workers_per_trial": 1, "max_concurrent_trials": 3}, {"CPU": 16.0}, 3),
    ("grid cap is larger", {"workers_per_trial": 1, "max_concurrent_trials": 30}, {"CPU": 16.0}, 16),
    ("ray's other resource keys", {"workers_per_trial": 1}, {"CPU": 4.0, "memory": 1e10, "node:10.0.0.1": 1.0}, 4),
]


@pytest.mark.parametrize(
    "resources, cluster, expected", [case[1:] for case in CONCURRENCY], ids=[case[0] for case in CONCURRENCY]
)
def test_max_concurrent_trials(resources, cluster, expected):
    assert max_concurrent_trials(grid_with(resources), cluster) == expected


def test_trial_resources():
    assert trial_resources(grid_with({"workers_per_trial": 4, "gpus_per_worker": 1, "cpus_per_worker": 2})) == {
        "CPU": 8.0,
        "GPU": 4.0,
    }


def test_dry_run_lists_every_trial_and_the_resources():
    grid = parse_grid(
        {
            "name": "plan",
            "model": "toy-qwen2.5-vl",
            "train": {"mix": [{"dataset": "toy-general"}]},
            "grid": {"parts": ["llm", "projector"], "lr": [1e-3, 1e-4], "mix_ratio": [0, 0.5], "seed": [0, 1]},
            "include": [{"parts": "llm", "method": "lora", "lr": 1e-3, "mix_ratio": 0}],
            "resources": {"workers_per_trial": 2, "max_concurrent_trials": 2},
        }
    )
    trials = expand_trials(grid)
    text = render_plan(grid, trials, {"CPU": 8.0, "GPU": 0.0})
    assert len(trials) == 2 * 2 * 2 * 2 + 2
    header = "name  id  parts  method  lr  data fraction  seed  mix ratio  steps  batch".split("  ")
    table = text.splitlines()
    header_line = next(line for line in table if line.startswith("name "))
    assert [column for column in header if column not in header_line] == []
    for trial in trials:
        row = next(line for line in table if line.startswith(trial.name + " "))
        method = ["lora", "r8"] if trial.method == "lora" else ["full"]
        mix_ratio = {0.0: "0.0", 0.5: "0.5"}[trial.mix_ratio]
        lr = {1e-3: "1e-03", 1e-4: "1e-04"}[trial.lr]
        assert row.split() == [
            trial.name,
            trial.trial_id,
            trial.parts,
            *method,
            lr,
            "1.0",
            str(trial.seed),
            mix_ratio,
            "100",
            "16",
        ]
    assert "sweep plan (<grid>): 18 trials" in text
    assert "per trial: 2 workers x (1 CPU, 0 GPUs) = 2 CPUs, 0 GPUs" in text
    assert "cluster: 8 CPUs, 0 GPUs" in text
    assert text.endswith("max concurrency: 2 trials at once (grid max_concurrent_trials 2)")


def test_dry_run_says_when_no_trial_fits():
    grid = grid_with({"workers_per_trial": 2, "gpus_per_worker": 1})
    text = render_plan(grid, expand_trials(grid), {"CPU": 2.0, "GPU": 0.0})
    assert "max concurrency: 0: one trial needs more than this cluster has" in text


def test_cluster_resources_without_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    resources = cluster_resources()
    assert resources == local_resources()
    assert resources["CPU"] == float(os.cpu_count())
    assert resources["GPU"] >= 0


def test_plan_command(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("name: cmd\nmodel: toy-qwen2.5-vl\ngrid: {lr: [1.0e-4, 1.0e-5]}\n")
    assert main([str(good)]) == 0
    assert "sweep cmd" in capsys.readouterr().out
    missing_data = tmp_path / "data.yaml"
    missing_data.write_text(
        "name: cmd\nmodel: toy-qwen2.5-vl\ntrain: {dataset: /nowhere/x.parquet}\ngrid: {lr: 1.0e-4}\n"
    )
    assert main([str(missing_data)]) == 2
    assert "--no-check-paths" in capsys.readouterr().err
    assert main([str(missing_data), "--no-check-paths"]) == 0
