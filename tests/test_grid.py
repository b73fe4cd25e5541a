"""Grid file validation: every broken file reports exactly its problems, all at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from orchestrator.grid import GridError, load_grid, parse_grid
from recipes.common.redaction import CREDENTIAL_HINT
from recipes.data.registry import registered_datasets
from recipes.data.schema import records_to_table
from recipes.models.catalog import REGISTERED_MODELS
from tests.data_fixtures import mcq_record

BASE = """\
name: t
model: toy-qwen2.5-vl-init
grid: {lr: [1.0e-4]}
"""
"""The smallest valid grid; cases append sections to it (or replace it)."""

PARTS_MESSAGE = (
    "valid parts: vision, projector, llm, llm.attn, llm.mlp_gate_up, lm_head, vision.last<N> "
    "(combine with '+', e.g. llm+projector)"
)


def write(tmp_path, text: str, name: str = "grid.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path, check_paths: bool = True) -> list[str]:
    with pytest.raises(GridError) as caught:
        load_grid(path, check_paths=check_paths)
    return caught.value.problems


CREDENTIALS_PROBLEM = f"contains credentials; {CREDENTIAL_HINT}"

BROKEN = [
    ("negative lr", "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1.0e-4, -1]}\n", ["grid.lr[1]: must be > 0"]),
    (
        "lr not a number",
        "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [fast]}\n",
        ["grid.lr[0]: expected a number, got 'fast'"],
    ),
    ("empty axis", "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: []}\n", ["grid.lr: must not be empty"]),
    ("misspelt key", BASE + "train: {stpes: 10}\n", ["train.stpes: unknown key; did you mean 'steps'?"]),
    (
        "misspelt section",
        BASE + "resorces: {workers_per_trial: 2}\n",
        ["resorces: unknown key; did you mean 'resources'?"],
    ),
    (
        "unknown key without a close match",
        BASE + "early_stop: {patience: 3}\n",
        ["early_stop.patience: unknown key (valid keys: max_ood_drop_pp, signal, max, min)"],
    ),
    (
        "unknown forgetting signal",
        BASE + "eval: {signals: [output_drift, loss_spike]}\n",
        ["eval.signals[1]: must be one of counting_bias, classname_rate, output_drift, vision_probe; got 'loss_spike'"],
    ),
    (
        "signal early stop without a bound",
        BASE + "early_stop: {signal: output_kl}\n",
        ["early_stop: signal needs max or min, and max/min need signal"],
    ),
    (
        "signal early stop on a signal not measured",
        BASE + "early_stop: {signal: vision_probe_acc, min: 10}\n",
        ["early_stop.signal: vision_probe_acc needs vision_probe in eval.signals (measured: ['output_drift'])"],
    ),
    (
        "unknown part",
        "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1.0e-4], parts: [llm, vision, llm.mlp]}\n",
        [f"grid.parts[2]: unknown part 'llm.mlp'; {PARTS_MESSAGE}"],
    ),
    (
        "unknown method",
        "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1.0e-4], method: [ful]}\n",
        ["grid.method[0]: must be one of full, lora; got 'ful'"],
    ),
    (
        "batch not divisible by workers x micro-batch",
        BASE + "train: {batch_size: 16, micro_batch_size: 8}\nresources: {workers_per_trial: 3}\n",
        ["train.batch_size: 16 is not a multiple of resources.workers_per_trial x train.micro_batch_size (3 x 8)"],
    ),
    (
        "batch not divisible by workers",
        BASE + "train: {batch_size: 16}\nresources: {workers_per_trial: 3}\n",
        ["train.batch_size: 16 is not a multiple of resources.workers_per_trial (3)"],
    ),
    (
        "missing required keys",
        "train: {steps: 10}\n",
        ["name: missing required key", "model: missing required key", "grid: missing required key"],
    ),
    ("missing lr", "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {parts: [llm]}\n", ["grid.lr: missing required key"]),
    ("integer expected", BASE + "train: {steps: fast}\n", ["train.steps: expected an integer, got 'fast'"]),
    ("integer, not a fraction", BASE + "train: {steps: 2.5}\n", ["train.steps: expected an integer, got 2.5"]),
    ("section not a mapping", BASE + "train: [1, 2]\n", ["train: expected a mapping, got [1, 2]"]),
    ("string expected", "name: t\nmodel: 3\ngrid: {lr: [1.0e-4]}\n", ["model: expected a string, got 3"]),
    ("boolean expected", BASE + "report: {enabled: maybe}\n", ["report.enabled: expected true or false, got 'maybe'"]),
    (
        "choice",
        BASE + "train: {schedule: cosin}\neval: {mode: greedy}\n",
        [
            "train.schedule: must be one of cosine, linear, constant; got 'cosin'",
            "eval.mode: must be one of logits, generate; got 'greedy'",
        ],
    ),
    (
        "fraction bounds",
        "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1.0e-4], data_fraction: [0, 1.5]}\n",
        ["grid.data_fraction[0]: must be > 0", "grid.data_fraction[1]: must be <= 1"],
    ),
    ("share bounds", BASE + "train: {warmup_ratio: 1}\n", ["train.warmup_ratio: must be < 1"]),
    ("lora rank", BASE + "methods: {lora: {r: 0}}\n", ["methods.lora.r: must be >= 1"]),
    ("zero stage", BASE + "train: {deepspeed: {zero_stage: 4}}\n", ["train.deepspeed.zero_stage: must be <= 3"]),
    (
        "bad name",
        "name: my sweep\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1.0e-4]}\n",
        [
            "name: must use only letters, digits, '.', '_' and '-' (it names the MLflow experiment and the "
            "storage folder), got 'my sweep'"
        ],
    ),
    (
        "credentials in the tracking uri",
        BASE + "tracking: {uri: 'http://alice:hunter2@mlflow.internal:5000'}\n",
        ["tracking.uri: " + CREDENTIALS_PROBLEM],
    ),
    (
        "token in the tracking uri",
        BASE + "tracking: {uri: 'https://mlflow.example/?access_token=abc'}\n",
        ["tracking.uri: " + CREDENTIALS_PROBLEM],
    ),
    (
        "storage scheme",
        BASE + "storage: gs://bucket/x\n",
        ["storage: expected a local path or s3://bucket/prefix, got 'gs://bucket/x'"],
    ),
    (
        "s3 without bucket",
        BASE + "storage: s3://\n",
        ["storage: s3 storage needs a bucket: s3://bucket/prefix, got 's3://'"],
    ),
    (
        "unknown dataset",
        BASE + "train: {dataset: toy-imagenet}\n",
        [
            "train.dataset: unknown dataset 'toy-imagenet'; did you mean 'toy-imagenet-vqa'? "
            f"(registered: {', '.join(registered_datasets())}; or the path of an MCQ file: .parquet, .pq, .jsonl, .ndjson)"
        ],
    ),
    (
        "not an MCQ file",
        BASE + "train: {dataset: data/train.csv}\n",
        ["train.dataset: 'data/train.csv' is not an MCQ file; expected .parquet, .pq, .jsonl, .ndjson"],
    ),
    (
        "unknown model",
        "name: t\nmodel: qwen2.5-vl-3B\ngrid: {lr: [1.0e-4]}\n",
        [
            "model: unknown model 'qwen2.5-vl-3B'; did you mean 'qwen2.5-vl-3b'? "
            f"(registered: {', '.join(REGISTERED_MODELS)}; or a local model directory or a Hub id org/name)"
        ],
    ),
    (
        "unknown suite",
        BASE + "eval: {suite: tyo}\n",
        ["eval.suite: unknown suite 'tyo'; did you mean 'toy'? (registered: toy; or the path of a suite YAML file)"],
    ),
    (
        "mix_ratio axis without a mix dataset",
        "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1.0e-4], mix_ratio: [0.0, 0.5]}\n",
        ["grid.mix_ratio: needs at least one dataset in train.mix to set the ratio of, found 0"],
    ),
    (
        "mix ratios sum to 1 or more",
        BASE + "train: {mix: [{dataset: toy-general, ratio: 0.6}, {dataset: toy-wiki, ratio: 0.5}]}\n",
        ["train.mix: ratios sum to 1.1; they must sum to < 1 (the target dataset gets the rest)"],
    ),
    (
        "mix ratio missing",
        BASE + "train: {mix: [{dataset: toy-general}]}\n",
        ["train.mix[0].ratio: missing required key (or give the grid.mix_ratio axis)"],
    ),
    (
        "mix repeats the target",
        BASE + "train: {mix: [{dataset: toy-imagenet-vqa, ratio: 0.5}]}\n",
        ["train.mix[0].dataset: 'toy-imagenet-vqa' is already in the training data"],
    ),
    (
        "lora settings on a full cell",
        BASE + "include: [{parts: projector, method: full, lora: {r: 4}}]\n",
        ["include[0].lora: applies to method lora only; this cell's method is full"],
    ),
    (
        "misspelt include key",
        BASE + "include: [{method: lora, lora: {alpah: 4}}]\n",
        ["include[0].lora.alpah: unknown key; did you mean 'alpha'?"],
    ),
    (
        "include batch override",
        BASE
        + "resources: {workers_per_trial: 2}\ninclude: [{parts: vision, train: {batch_size: 10, micro_batch_size: 2}}]\n",
        [
            "include[0].train.batch_size: 10 is not a multiple of resources.workers_per_trial x "
            "include[0].train.micro_batch_size (2 x 2)"
        ],
    ),
    (
        "empty include cell",
        BASE + "include: [{}]\n",
        ["include[0]: empty cell; give at least one of parts, method, lr, data_fraction, mix_ratio, seed, lora, train"],
    ),
    (
        "exclude value not on the axis",
        BASE + "exclude: [{lr: 1.0e-3}]\n",
        ["exclude[0].lr[0]: 1e-03 is not a value of the grid's lr axis (1e-04)"],
    ),
    (
        "exclude matching nothing",
        "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1.0e-4], method: [full, lora]}\nmethods: {lora: {lr: [1.0e-3]}}\n"
        "exclude: [{method: full, lr: 1.0e-3}]\n",
        ["exclude[0]: matches no trial of the grid"],
    ),
    (
        "exclude on a missing axis",
        BASE + "exclude: [{mix_ratio: 0.5}]\n",
        ["exclude[0].mix_ratio: the grid has no mix_ratio axis"],
    ),
    (
        "exclude removing everything",
        BASE + "exclude: [{parts: llm}]\n",
        ["exclude: removes every trial of the grid and there are no include cells"],
    ),
    (
        "deepspeed stage and file",
        BASE + "train: {deepspeed: {zero_stage: 3, config: ds.json}}\n",
        ["train.deepspeed: give zero_stage or the path of a DeepSpeed JSON (config), not both"],
    ),
    (
        "duplicate key",
        "name: t\nmodel: toy-qwen2.5-vl-init\ngrid:\n  lr: [1.0e-4]\n  lr: [1.0e-5]\n",
        ["grid.lr: duplicate key (lines 4 and 5); YAML would keep only the last"],
    ),
    (
        "YAML syntax",
        "name: t\n  model: x\n",
        ["YAML syntax error at line 2, column 8: mapping values are not allowed here"],
    ),
    ("empty file", "", ["the file is empty"]),
    ("only comments", "# nothing yet\n", ["the file is empty"]),
    (
        "top level not a mapping",
        "- name: t\n",
        ["top level: expected a mapping of the grid's sections (name, model, grid, ...), got a list"],
    ),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_broken_grid_reports_exactly_its_problems(tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    assert problems_of(write(tmp_path, text), check_paths=False) == expected


def test_missing_file(tmp_path):
    assert problems_of(tmp_path / "nope.yaml") == ["no such file"]


def test_several_problems_are_reported_together(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = """\
        name: t
        model: toy-qwen2.5-vl-init
        train:
          stpes: 10
          dataset: missing.parquet
        grid:
          lr: [1.0e-4, -1]
          parts: [llm, llm.mlp]
        resources: {workers_per_trial: 3}
        eval: {suite: tyo}
        """
    assert problems_of(write(tmp_path, text)) == [
        "train.stpes: unknown key; did you mean 'steps'?",
        f"grid.parts[1]: unknown part 'llm.mlp'; {PARTS_MESSAGE}",
        "grid.lr[1]: must be > 0",
        "train.batch_size: 16 is not a multiple of resources.workers_per_trial (3)",
        f"train.dataset: no such file 'missing.parquet' (relative to {tmp_path})",
        "eval.suite: unknown suite 'tyo'; did you mean 'toy'? (registered: toy; or the path of a suite YAML file)",
    ]


def test_error_message_is_the_file_then_one_problem_per_line(tmp_path):
    path = write(tmp_path, "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [-1, 0]}\n")
    with pytest.raises(GridError) as caught:
        load_grid(path)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == f"{path}:\n  grid.lr[0]: must be > 0\n  grid.lr[1]: must be > 0"


PATH_CASES = [
    (
        "dataset file",
        "train: {dataset: data/train.parquet}\n",
        "data/train.parquet",
        "train.dataset: no such file 'data/train.parquet' (relative to {cwd})",
    ),
    (
        "mix file",
        "train: {mix: [{dataset: mix.jsonl, ratio: 0.3}]}\n",
        "mix.jsonl",
        "train.mix[0].dataset: no such file 'mix.jsonl' (relative to {cwd})",
    ),
    (
        "suite file",
        "eval: {suite: suites/x.yaml}\n",
        None,
        "eval.suite: no such file 'suites/x.yaml' (relative to {cwd})",
    ),
    (
        "deepspeed file",
        "train: {deepspeed: ds.json}\n",
        None,
        "train.deepspeed: no such file 'ds.json' (relative to {cwd})",
    ),
]


@pytest.mark.parametrize(
    "section, created, expected", [case[1:] for case in PATH_CASES], ids=[case[0] for case in PATH_CASES]
)
def test_paths_are_checked_only_with_check_paths(tmp_path, monkeypatch, section, created, expected):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, BASE + section)
    assert problems_of(path) == [expected.format(cwd=tmp_path)]
    load_grid(path, check_paths=False)
    if created:  # a valid file passes; its rows are read (a sample) as the sweep reads them
        (tmp_path / created).parent.mkdir(parents=True, exist_ok=True)
        table = records_to_table([mcq_record(0)])
        if created.endswith(".parquet"):
            pq.write_table(table, tmp_path / created)
        else:
            (tmp_path / created).write_text(json.dumps({**mcq_record(0), "image": None}) + "\n")
        load_grid(path)


def test_local_model_directory_needs_a_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    path = write(tmp_path, "name: t\nmodel: ./models/tiny\ngrid: {lr: [1.0e-4]}\n")
    assert problems_of(path) == ["model: model directory models/tiny has no config.json"]
    (tmp_path / "models" / "tiny" / "config.json").write_text("{}")
    assert load_grid(path).model == "./models/tiny"
    missing = write(tmp_path, "name: t\nmodel: ./models/other\ngrid: {lr: [1.0e-4]}\n", "missing.yaml")
    assert load_grid(missing, check_paths=False).model == "./models/other"
    assert len(problems_of(missing)) == 1


def test_hub_models_not_cached_are_accepted_unless_offline(tmp_path, monkeypatch):
    """Each node downloads a missing Hub model before its workers load it; HF_HUB_OFFLINE=1 forbids that."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # what HF_HUB_CACHE sets: an empty cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    path = write(tmp_path, "name: t\nmodel: some-org/some-model\ngrid: {lr: [1.0e-4]}\n")
    assert load_grid(path, check_paths=False).model == "some-org/some-model"
    assert load_grid(path).model == "some-org/some-model"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    (problem,) = problems_of(path)
    assert problem.startswith(
        "model: model 'some-org/some-model' (some-org/some-model) is not in the local Hugging Face cache"
    )
    assert "HF_HUB_OFFLINE=1 forbids downloading it: fetch it first (`hf download some-org/some-model`)" in problem


def test_deepspeed_json_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, BASE + "train: {deepspeed: ds.json}\n")
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3}, "optimizer": {"type": "Adam"}}))
    assert problems_of(path) == [
        "train.deepspeed: ds.json: remove optimizer; the trial sets AdamW and the learning-rate schedule from the grid "
        "(lr, warmup_ratio, schedule)"
    ]
    (tmp_path / "ds.json").write_text("{not json")
    assert problems_of(path)[0].startswith("train.deepspeed: ds.json: not valid JSON")
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert load_grid(path).train.deepspeed.config == "ds.json"


def test_suite_file_datasets_are_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suites").mkdir()
    quadrants = {
        "id_id": ["../data/a.parquet"],
        "id_ood": ["toy-styles"],
        "ood_id": ["toy-wiki"],
        "ood_ood": ["toy-text-qa"],
    }
    (tmp_path / "suites" / "s.yaml").write_text(json.dumps({"name": "s", "quadrants": quadrants}))
    path = write(tmp_path, BASE + "eval: {suite: suites/s.yaml}\n")
    looked_for = tmp_path / "suites" / ".." / "data" / "a.parquet"
    assert problems_of(path) == [
        f"eval.suite: suites/s.yaml: quadrants.id_id[0]: no such dataset '../data/a.parquet' (not a registered name; looked for {looked_for})"  # noqa: E501 (a table row)
    ]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.parquet").write_text("")
    assert load_grid(path).eval.suite == "suites/s.yaml"


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    grid = load_grid(write(tmp_path, "name: t\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1e-5, 1.0e-5]}\n"))
    assert grid.axes.lr == [1e-5, 1e-5]


def test_defaults_and_single_values(tmp_path):
    grid = load_grid(write(tmp_path, "name: t\nmodel: toy-qwen2.5-vl\ngrid: {lr: 1.0e-4, parts: llm + projector}\n"))
    assert grid.axes.lr == [1e-4]
    assert grid.axes.parts == ["llm+projector"]
    assert (grid.axes.method, grid.axes.seed, grid.axes.data_fraction, grid.axes.mix_ratio) == (
        ["full"],
        [0],
        [1.0],
        None,
    )
    assert (grid.train.dataset, grid.eval.suite, grid.eval.mode) == ("toy-imagenet-vqa", "toy", "logits")
    assert (grid.resources.workers_per_trial, grid.resources.gpus_per_worker, grid.storage) == (1, 0.0, "./sweeps")
    assert (grid.tracking.uri, grid.max_ood_drop_pp, grid.report_enabled, grid.max_concurrent_trials) == (
        "sqlite:///mlflow.db",
        None,
        True,
        None,
    )
    assert grid.source == str(tmp_path / "grid.yaml")


def test_run_locations_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = parse_grid({"name": "exp", "model": "toy-qwen2.5-vl", "grid": {"lr": [1e-4]}})
    assert (grid.experiment, grid.source) == ("exp", "<grid>")
    assert grid.storage_uri == str(tmp_path / "sweeps")
    assert grid.sweep_storage == str(tmp_path / "sweeps" / "exp")
    assert grid.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    remote = parse_grid(
        {**grid.model_dump(by_alias=True), "storage": "s3://bucket/sweeps/", "tracking": {"uri": "http://mlflow:5000"}}
    )
    assert (remote.storage_uri, remote.sweep_storage, remote.tracking_uri) == (
        "s3://bucket/sweeps",
        "s3://bucket/sweeps/exp",
        "http://mlflow:5000",
    )


def test_parse_grid_rejects_a_non_mapping():
    with pytest.raises(GridError) as caught:
        parse_grid(["name"])
    assert caught.value.problems == [
        "top level: expected a mapping of the grid's sections (name, model, grid, ...), got a list"
    ]


def test_validating_a_grid_loads_neither_torch_nor_ray():
    script = textwrap.dedent(
        """
        import sys
        from orchestrator.grid import load_grid
        load_grid("grids/demo.yaml")
        load_grid("grids/demo-continual.yaml")
        print(sorted({"torch", "transformers", "deepspeed", "ray"} & set(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr
