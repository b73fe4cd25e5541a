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


# -- pricing: memory, FLOPs, GPU-hours and storage per trial kind (orchestrator.pricing) ---------


def shape_3b():
    from orchestrator.pricing import model_shape

    return model_shape("qwen2.5-vl-3b")  # the shipped config on the meta device: no weights, no memory


STATE_CASES = [
    # (name, workers, zero stage): DeepSpeed's estimators exist for ZeRO-2 and ZeRO-3
    ("zero2, 1 worker", 1, 2),
    ("zero2, 2 workers", 2, 2),
    ("zero2, 8 workers", 8, 2),
    ("zero3, 2 workers", 2, 3),
    ("zero3, 8 workers", 8, 3),
]


@pytest.mark.parametrize("workers, stage", [case[1:] for case in STATE_CASES], ids=[case[0] for case in STATE_CASES])
def test_state_bytes_match_deepspeed_estimators(workers, stage):
    """Every parameter trainable, bf16 on GPUs, no offload: DeepSpeed's own estimate, except the 2 B/param
    fp32 gradient partition that its stage-3 multiplier (18) leaves out and ours (20) counts."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from orchestrator.pricing import state_bytes

    shape = shape_3b()
    total, largest = shape.total, shape.largest_layer
    ours = state_bytes(total, total, largest, workers, stage, fp32=False)
    if stage == 2:
        _, theirs = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=workers, cpu_offload=False)
        assert ours == pytest.approx(theirs, abs=2)
    else:
        _, theirs, _ = estimate_zero3_model_states_mem_needs(
            total, largest, num_gpus_per_node=workers, cpu_offload=False, cpu_offload_params=False
        )
        assert ours - theirs == pytest.approx(2 * total / workers, abs=2)


def test_state_bytes_printed_by_deepspeed_all_cold(capsys):
    """The figure ``estimate_zero2_model_states_mem_needs_all_cold`` prints (GiB, 2 decimals) for the 3B model."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

    from orchestrator.pricing import state_bytes

    shape = shape_3b()
    estimate_zero2_model_states_mem_needs_all_cold(shape.total, num_gpus_per_node=2)
    printed = next(line for line in capsys.readouterr().out.splitlines() if "offload_optimizer=none" in line)
    gpu_gib = float(printed.split("|")[1].strip().removesuffix("GB"))
    assert state_bytes(shape.total, shape.total, shape.largest_layer, 2, 2, fp32=False) / 2**30 == pytest.approx(
        gpu_gib, abs=0.01
    )


FROZEN_CASES = [
    # (name, zero stage, workers, fp32, bytes per frozen parameter, per trainable parameter)
    ("bf16 zero0", 0, 2, False, 2, 2 + 2 + 16),
    ("bf16 zero1", 1, 2, False, 2, 2 + 2 + 16 / 2),
    ("bf16 zero2", 2, 4, False, 2, 2 + (2 + 16) / 4),
    ("bf16 zero3", 3, 4, False, 2 / 4, (2 + 2 + 16) / 4),
    ("fp32 zero0 (CPU)", 0, 1, True, 4, 4 + 4 + 8),
    ("fp32 zero2 (CPU)", 2, 2, True, 4, 4 + (4 + 4 + 8) / 2),
]


@pytest.mark.parametrize(
    "stage, workers, fp32, frozen_bytes, trainable_bytes",
    [case[1:] for case in FROZEN_CASES],
    ids=[case[0] for case in FROZEN_CASES],
)
def test_state_bytes_frozen_and_trainable(stage, workers, fp32, frozen_bytes, trainable_bytes):
    from orchestrator.pricing import state_bytes

    frozen, trainable = 3_000_000, 1_000_000
    expected = frozen * frozen_bytes + trainable * trainable_bytes
    largest = 0  # the gathered largest layer (ZeRO-3) is checked against DeepSpeed above
    assert state_bytes(frozen + trainable, trainable, largest, workers, stage, fp32) == pytest.approx(expected, abs=2)


RECIPES = [
    ("llm", "full"),
    ("llm", "lora"),
    ("vision", "full"),
    ("projector", "full"),
    ("lm_head", "full"),
    ("llm.attn", "full"),
    ("vision.last1", "full"),
    ("llm.mlp_gate_up+projector", "lora"),
]
FLOP_TOLERANCE = 0.02
"""Relative difference allowed between the FLOP estimate and FlopCounterMode (LoRA: the activation
gradient of the first adapted layer's inputs, which autograd skips, is counted)."""


def vlm_batch(model, tokens: int, grid: tuple[int, int]):
    """One sample: ``tokens`` text positions holding ``grid`` patches merged 2 x 2 into image tokens."""
    import torch

    patches = grid[0] * grid[1]
    ids = torch.randint(10, 200, (1, tokens))
    ids[0, 1 : 1 + patches // 4] = model.config.image_token_id
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(patches, 3 * 2 * 14 * 14),
        "image_grid_thw": torch.tensor([[1, *grid]]),
        "labels": ids,
    }


def measured_flops(model, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.set_attn_implementation("eager")  # FlopCounterMode counts eager attention's matmuls
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("parts, method", RECIPES, ids=[f"{p}-{m}" for p, m in RECIPES])
def test_toy_trainable_and_flops_match_the_model(parts, method):
    """The trainable count is what apply_method reports; the FLOPs what FlopCounterMode counts."""
    from orchestrator.pricing import Workload, model_shape, price_trial
    from recipes.methods import MethodConfig, apply_method
    from recipes.models.registry import load_model

    loaded = load_model("toy-qwen2.5-vl-init")  # the toy's shape with random weights: FLOPs do not depend on them
    shape = model_shape("toy-qwen2.5-vl-init")
    config = MethodConfig(method)
    model, report = apply_method(loaded.model, loaded.family, parts, config)
    price = price_trial(shape, parts, config, Workload(micro_batch=1, seq_len=96, image_patches=64))
    assert price.trainable == report.trainable
    measured = measured_flops(model, vlm_batch(model, 96, (8, 8)))
    assert price.flops_per_sample == pytest.approx(measured, rel=FLOP_TOLERANCE)


@pytest.mark.parametrize("parts, method", [("llm", "full"), ("llm", "lora")])
def test_flops_match_at_real_widths(parts, method):
    """Qwen2.5-VL-3B widths, 1 decoder layer and 1 vision block, a small vocabulary (about 150M parameters)."""
    import transformers

    from orchestrator.pricing import Workload, price_trial, shape_from_config
    from recipes.methods import MethodConfig, apply_method
    from recipes.models.families import QWEN2_5_VL
    from recipes.models.shapes import shape_config

    config = shape_config("qwen2.5-vl-3b@layers=1")
    config.text_config.vocab_size = 4096
    config.image_token_id = 5
    shape = shape_from_config("3b-widths", config)
    model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    method_config = MethodConfig(method)
    model, report = apply_method(model, QWEN2_5_VL, parts, method_config)
    price = price_trial(shape, parts, method_config, Workload(micro_batch=1, seq_len=64, image_patches=64))
    assert price.trainable == report.trainable
    assert price.flops_per_sample == pytest.approx(
        measured_flops(model, vlm_batch(model, 64, (8, 8))), rel=FLOP_TOLERANCE
    )


@pytest.fixture
def no_cluster(monkeypatch):
    """The plan of a grid for another machine, with no Ray cluster named (the suite's is in RAY_ADDRESS)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_paper_grid_on_h100_prices_every_recipe(capsys, no_cluster):
    """paper-table1 on an H100: every recipe fits; the sweep's GPU-hours and storage add up."""
    assert main(["grids/paper-table1.yaml", "--no-check-paths", "--gpu", "h100-80"]) == 0
    out = capsys.readouterr().out
    price_lines = out[out.index("price on h100-80") :].splitlines()
    rows = {tuple(line.split()[:2]): line.split() for line in price_lines[3:-1]}
    assert set(rows) == {("llm", "full"), ("vision", "full"), ("projector", "full"), ("llm", "lora")}
    assert all("yes" in row for row in rows.values())
    assert price_lines[-1].startswith("sweep: ")


GPU_FIT_CASES = [
    # (name, gpu, workers, train settings, fits): the paper's LLM full tuning, activation checkpointing on
    ("h100, 2 workers, zero2", "h100-80", 2, {"deepspeed": {"zero_stage": 2}}, True),
    ("a10g, 2 workers, zero2", "a10g", 2, {"deepspeed": {"zero_stage": 2}}, False),
    (
        "a10g, 2 workers, zero3, micro-batch 1",
        "a10g",
        2,
        {"deepspeed": {"zero_stage": 3}, "micro_batch_size": 1},
        False,
    ),
    ("a10g, 4 workers, zero3", "a10g", 4, {"deepspeed": {"zero_stage": 3}}, True),
    ("a100-40, 2 workers, zero0", "a100-40", 2, {"deepspeed": {"zero_stage": 0}}, False),
    ("h200, 1 worker, zero0", "h200", 1, {"deepspeed": {"zero_stage": 0}}, True),
]


@pytest.mark.parametrize(
    "gpu, workers, train, expected", [case[1:] for case in GPU_FIT_CASES], ids=[case[0] for case in GPU_FIT_CASES]
)
def test_plan_refuses_a_grid_that_does_not_fit(tmp_path, capsys, gpu, workers, train, expected, no_cluster):
    import yaml

    path = tmp_path / "fit.yaml"
    grid = {
        "name": "fit",
        "model": "qwen2.5-vl-3b",
        "train": {"batch_size": 16, "activation_checkpointing": True, **train},
        "grid": {"parts": "llm", "lr": 1e-5},
        "resources": {"workers_per_trial": workers, "gpus_per_worker": 1, "gpu": gpu},
    }
    path.write_text(yaml.safe_dump(grid))
    assert main([str(path), "--no-check-paths"]) == (0 if expected else 2)
    err = capsys.readouterr().err
    if not expected:
        lines = [line for line in err.splitlines() if line.startswith("  parts llm full:")]
        assert len(lines) == 1, err
        assert f"usable on {gpu}; try " in lines[0]


def test_sweep_refuses_before_ray_starts(tmp_path, capsys, monkeypatch):
    import yaml

    def refuse_to_start_ray(*args, **kwargs):
        raise AssertionError("a grid that cannot fit got as far as starting Ray")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # this machine, not the suite's cluster
    monkeypatch.setattr("ray.init", refuse_to_start_ray)

    from orchestrator import sweep

    path = tmp_path / "big.yaml"
    grid = {
        "name": "big",
        "model": "qwen2.5-vl-3b",
        "train": {"batch_size": 16, "deepspeed": {"zero_stage": 0}, "activation_checkpointing": False},
        "grid": {"parts": ["llm", "projector"], "lr": [1e-5, 1e-6]},
        "resources": {"workers_per_trial": 2, "gpus_per_worker": 1, "gpu": "a10g"},
    }
    path.write_text(yaml.safe_dump(grid))
    assert sweep.main([str(path), "--no-check-paths"]) == 2
    err = capsys.readouterr().err
    assert "trials do not fit resources.gpu a10g" in err
    assert sum(line.strip().startswith("parts ") for line in err.splitlines()) == 2  # one line per trial kind
    assert "train.deepspeed.zero_stage" in err and "train.activation_checkpointing true" in err


def test_unknown_gpu_kind_is_a_grid_error():
    from orchestrator.grid import GridError

    with pytest.raises(GridError, match="resources.gpu"):
        parse_grid({"name": "g", "model": "toy-qwen2.5-vl", "grid": {"lr": 1e-4}, "resources": {"gpu": "v100"}})


def test_the_etas_step_costs_rank_the_demo_recipes_by_the_work_of_a_step(no_cluster):
    """The sweep's ETA weighs seconds per step by these: the whole LLM's step computes the weight
    gradients LoRA's and the projector's skip; the two learning rates cost the same."""
    from orchestrator.grid import load_grid
    from orchestrator.grid_pricing import step_costs

    grid = load_grid("grids/demo.yaml")
    trials = expand_trials(grid)
    costs = step_costs(grid, trials)
    assert set(costs) == {trial.name for trial in trials}
    full, gentle = costs["llm-full-lr3e-04-f1.0-s0"], costs["llm-full-lr3e-05-f1.0-s0"]
    assert full == gentle
    assert costs["llm-lora-r8-lr3e-04-f1.0-s0"] < full and costs["projector-full-lr1e-04-f1.0-s0"] < full
