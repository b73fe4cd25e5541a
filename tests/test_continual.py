"""Continual learning: Last/Average, replay sampling, the grid section, the MLLM-CL adapter, Table 3,
and a 3-task toy sequence run end to end (IncLoRA and SeqFull with replay) through the sweep."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from analysis.continual import ContinualRun, build_table3, table3_html, table3_markdown
from contract import layout
from jobs.continual.loop import MODEL_STATE, stage_steps
from jobs.continual.metrics import continual_scores
from jobs.finetune.config import TrialConfig
from jobs.finetune.loop import RESUMED_TAG
from jobs.trial import ensure_trial_run, run_trial
from orchestrator.expand import expand_trials
from orchestrator.grid import GridError, parse_grid
from recipes.adapters.formats import adapt_file
from recipes.data.continual import (
    ContinualTask,
    load_train_table,
    replay_table,
    resolve_task,
    stage_training_table,
)
from recipes.data.schema import RecordFormatError
from recipes.data.writers import write_records
from recipes.models import load_model
from tests.conftest import WorkerKiller, latest_registered_checkpoint, metric_steps
from tests.test_sweep import sweep_command, trial_runs, write_grid

# -- Last and Average ------------------------------------------------------------------------

SCORE_CASES = [
    pytest.param(
        [[80, 20], [70, 90]],
        {"last": [70, 90], "average_at": [80, 80], "average": 80.0, "last_mean": 80.0},
        id="2 tasks",
    ),
    pytest.param(
        [[90, 10, 30], [60, 80, 30], [30, 60, 90]],
        # average_at: 90; (60 + 80) / 2 = 70; (30 + 60 + 90) / 3 = 60; average = (90 + 70 + 60) / 3
        {"last": [30, 60, 90], "average_at": [90, 70, 60], "average": 220 / 3, "last_mean": 60.0},
        id="3 tasks with forgetting",
    ),
    pytest.param(
        [[50, 0, 0], [50, 50, 0], [50, 50, 50]],
        {"last": [50, 50, 50], "average_at": [50, 50, 50], "average": 50.0, "last_mean": 50.0},
        id="no forgetting",
    ),
]


@pytest.mark.parametrize(("matrix", "expected"), SCORE_CASES)
def test_last_and_average_match_hand_computed_values(matrix, expected):
    tasks = [f"t{k}" for k in range(len(matrix))]
    scores = continual_scores(matrix, tasks)
    assert list(scores.last.values()) == pytest.approx(expected["last"])
    assert list(scores.average_at.values()) == pytest.approx(expected["average_at"])
    assert scores.average == pytest.approx(expected["average"])
    assert scores.last_mean == pytest.approx(expected["last_mean"])
    assert scores.metrics()[layout.task_last_metric("t0")] == pytest.approx(expected["last"][0])


def test_scores_need_a_square_matrix():
    with pytest.raises(ValueError, match="matrix must be 2 x 2"):
        continual_scores([[1, 2]], ["a", "b"])


@pytest.mark.parametrize(("rows", "epochs", "batch", "steps"), [(480, 1, 16, 30), (500, 1, 16, 32), (480, 0.01, 16, 1)])
def test_task_steps_cover_the_epochs(rows, epochs, batch, steps):
    assert stage_steps(rows, epochs, batch) == steps


# -- replay ----------------------------------------------------------------------------------


def make_task(tmp_path: Path, name: str, rows: int) -> ContinualTask:
    records = [
        {
            "id": f"{name}-{i}",
            "question": f"{name} question {i}?",
            "options": ["yes", "no"],
            "answer": "A",
            "source": name,
        }
        for i in range(rows)
    ]
    train = tmp_path / f"{name}-train.parquet"
    write_records(records, train)
    return ContinualTask(name, str(train), str(train))


@pytest.fixture
def three_tasks(tmp_path):
    return [make_task(tmp_path, name, rows) for name, rows in (("a", 50), ("b", 40), ("c", 30))]


def ids(table) -> list[str]:
    return table.column("id").to_pylist() if table is not None else []


def test_replay_draws_only_from_earlier_tasks(three_tasks):
    assert replay_table(three_tasks, stage=0, per_task=5, seed=0) is None
    replayed = ids(replay_table(three_tasks, stage=2, per_task=5, seed=0))
    assert len(replayed) == 10 and len(set(replayed)) == 10
    assert {i.split("-")[0] for i in replayed} == {"a", "b"}
    data = stage_training_table(three_tasks, stage=2, per_task=5, seed=0)
    assert ids(data) == [f"c-{i}" for i in range(30)] + replayed


def test_replay_is_seeded_and_stable_across_stages(three_tasks):
    first = ids(replay_table(three_tasks, stage=2, per_task=5, seed=0))
    assert ids(replay_table(three_tasks, stage=2, per_task=5, seed=0)) == first
    assert ids(replay_table(three_tasks, stage=2, per_task=5, seed=1)) != first
    # task a's buffer is the same whether task b or task c is being learned
    assert ids(replay_table(three_tasks, stage=1, per_task=5, seed=0)) == first[:5]


def test_replay_takes_a_whole_small_task(tmp_path):
    tasks = [make_task(tmp_path, "tiny", 3), make_task(tmp_path, "next", 4)]
    assert sorted(ids(replay_table(tasks, stage=1, per_task=20, seed=0))) == ["tiny-0", "tiny-1", "tiny-2"]


def test_toy_domains_are_views_of_one_question_type():
    task = resolve_task("toy-cl-digits")
    assert task == ContinualTask("toy-cl-digits", "toy-cl-digits", "toy-digit-tasks")
    metas = [json.loads(m) for m in load_train_table(task).column("meta").to_pylist()]
    assert metas and all(m["task"].startswith("digit") for m in metas)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("toy-cl-shape", "unknown continual task 'toy-cl-shape'"),
        ({"name": "RS", "train": "x.parquet"}, "expected keys name, train, test"),
        ({"name": "R/S", "train": "x.parquet", "test": "y.parquet"}, "must not contain '/'"),
    ],
)
def test_bad_task_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_task(spec)


# -- the grid section ------------------------------------------------------------------------

CONTINUAL_GRID = {
    "name": "cl",
    "model": "toy-qwen2.5-vl-init",
    "grid": {"lr": [1.0e-4]},
    "methods": {"lora": {"lr": [5.0e-4]}},
    "continual": {
        "tasks": ["toy-cl-shapes", "toy-cl-attributes", "toy-cl-digits"],
        "replay_per_task": [0, 20],
        "method": ["inclora", "seqfull"],
    },
}


def test_continual_grid_expands_methods_and_replay():
    trials = expand_trials(parse_grid(CONTINUAL_GRID))
    assert [t.name for t in trials] == [
        "inclora-r8-llm-lr5e-04-s0",
        "inclora-r8-llm-lr5e-04-s0-replay20",
        "seqfull-llm-lr1e-04-s0",
        "seqfull-llm-lr1e-04-s0-replay20",
    ]
    assert {t.continual_epochs for t in trials} == {(1.0, 1.0, 1.0)}
    assert [t.continual_method for t in trials] == ["inclora", "inclora", "seqfull", "seqfull"]
    assert (
        trials[1].mlflow_params()[layout.PARAM_CONTINUAL_TASKS]
        == '["toy-cl-shapes", "toy-cl-attributes", "toy-cl-digits"]'
    )
    assert len({t.trial_id for t in trials}) == 4


def with_continual(**changes) -> dict:
    grid = json.loads(json.dumps(CONTINUAL_GRID))
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            grid.setdefault(section, {})[field] = value
        else:
            grid[section] = value
    return grid


BROKEN_CONTINUAL = [
    (
        "unknown domain",
        with_continual(**{"continual.tasks": ["toy-cl-shape", "toy-cl-digits"]}),
        "continual.tasks[0]: unknown toy domain 'toy-cl-shape'",
    ),
    ("one task", with_continual(**{"continual.tasks": ["toy-cl-digits"]}), "continual.tasks: "),
    ("epochs per task", with_continual(**{"continual.epochs": [1, 2]}), "epochs needs one value per task (3), got 2"),
    (
        "method twice",
        with_continual(grid={"lr": [1.0e-4], "method": ["full"]}),
        "continual.method: sets the method axis",
    ),
    ("zero 3", with_continual(train={"deepspeed": {"zero_stage": 3}}), "continual: needs train.deepspeed {zero_stage"),
    ("mixing", with_continual(train={"mix": [{"dataset": "toy-general", "ratio": 0.2}]}), "remove train.mix"),
    (
        "missing file",
        with_continual(
            **{"continual.tasks": [{"name": "RS", "train": "nowhere.parquet", "test": "toy-wiki"}, "toy-cl-digits"]}
        ),
        "continual.tasks[0].train: no such file 'nowhere.parquet'",
    ),
]


@pytest.mark.parametrize(("grid", "message"), [pytest.param(g, m, id=i) for i, g, m in BROKEN_CONTINUAL])
def test_broken_continual_sections_are_reported(grid, message):
    with pytest.raises(GridError) as caught:
        parse_grid(grid)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


# -- MLLM-CL adapter -------------------------------------------------------------------------


def test_mllm_cl_splits_keep_mcq_and_open_questions(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "scene.png")
    train = [
        {
            "id": "1",
            "image": "scene.png",
            "conversations": [
                {
                    "from": "human",
                    "value": "<image>\nWhat is shown?\nA. field\nB. lake\nC. road\nAnswer with the letter.",
                },
                {"from": "gpt", "value": "B"},
            ],
        },
        {
            "id": "2",
            "image": "scene.png",
            "conversations": [
                {"from": "human", "value": "<image>\nHow many buildings are there?"},
                {"from": "gpt", "value": "3"},
            ],
        },
    ]
    test = [
        {"question_id": 7, "image": "scene.png", "text": "Is it rural?\nA. yes\nB. no", "answer": "no"},
        {"question_id": 8, "image": "scene.png", "text": "Which?\nA. x\nB. y", "answer": "A. x"},
    ]
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "test.json").write_text(json.dumps(test))
    adapted = adapt_file("mllm-cl", tmp_path / "train.json", source="RS")
    assert adapted.rows == 2 and adapted.kinds == {"mcq": 1, "freeform": 1} and adapted.excluded == {}
    row, open_row = adapted.table.to_pylist()
    assert (row["question"], row["options"], row["answer"]) == ("What is shown?", ["field", "lake", "road"], "B")
    assert (open_row["kind"], open_row["answer"], open_row["matcher"]) == ("freeform", "3", "rs")
    assert row["image"] is not None and json.loads(row["meta"])["instruction"] == "Answer with the letter."
    answers = [r["answer"] for r in adapt_file("mllm-cl", tmp_path / "test.json", source="RS").table.to_pylist()]
    assert answers == ["B", "A"]
    (tmp_path / "bad.json").write_text(json.dumps([{"question_id": 9, "text": "Q?\nA. x\nB. y", "answer": "maybe"}]))
    with pytest.raises(RecordFormatError, match="neither an option letter nor an option's text"):
        adapt_file("mllm-cl", tmp_path / "bad.json", domain="RS")


# -- Table 3 ---------------------------------------------------------------------------------


def test_table3_rows_and_best_cells():
    zero = (30.0, 40.0)
    runs = [
        ContinualRun("a", "inclora", "IncLoRA", 20, ("RS", "Med"), zero, ((80.0, 45.0), (70.0, 90.0))),
        ContinualRun("b", "seqfull", "SeqFull", 20, ("RS", "Med"), zero, ((82.0, 41.0), (60.0, 92.0))),
        ContinualRun("c", "inclora", "IncLoRA", 0, ("RS", "Med"), zero, ((80.0, 45.0), (50.0, 90.0))),
    ]
    table = build_table3(runs)
    assert table.columns == ("RS Last", "RS Average", "Med Last", "Med Average", "Last (mean)", "Average")
    assert [(group, label) for group, label, _ in table.rows] == [
        (None, "Zero-shot"),
        ("w/ replay (20 per task)", "IncLoRA"),
        (None, "SeqFull"),
        ("w/o replay", "IncLoRA"),
    ]
    assert table.rows[1][2] == (70.0, 80.0, 90.0, 80.0, 80.0, 80.0)
    assert table.rows[2][2] == (60.0, 82.0, 92.0, 76.0, 76.0, 79.0)
    assert (1, 0) in table.best and (2, 1) in table.best and (3, 0) not in table.best  # one-row group: no bold
    assert "| SeqFull | 60.00 | **82.00** | **92.00** |" in table3_markdown(table)


def test_table3_html_bolds_the_best_cells_and_escapes_labels():
    zero = (30.0, 40.0)
    runs = [
        ContinualRun("a", "inclora", "IncLoRA <b>&</b>", 20, ("RS", "Med"), zero, ((80.0, 45.0), (70.0, 90.0))),
        ContinualRun("b", "seqfull", "SeqFull", 20, ("RS", "Med"), zero, ((82.0, 41.0), (60.0, 92.0))),
    ]
    text = table3_html(build_table3(runs))
    assert text.startswith("<h2>Table 3: continual learning, Last and Average per task</h2>")
    assert '<tr class="group"><td colspan="7">w/ replay (20 per task)</td></tr>' in text
    assert (
        '<tr><td class="label">IncLoRA &lt;b&gt;&amp;&lt;/b&gt;</td><td><b>70.00</b></td><td>80.00</td><td>90.00</td>'
    ) in text
    assert '<tr><td class="label">Zero-shot</td><td>30.00</td><td>-</td>' in text


# -- end to end ------------------------------------------------------------------------------


def test_three_task_sequence_runs_end_to_end_and_logs_the_matrix(tmp_path):
    grid = write_grid(
        tmp_path / "continual.yaml",
        name="ci-continual",
        train={"batch_size": 4, "warmup_ratio": 0.0, "deepspeed": {"zero_stage": 0}, "keep_last": 1},
        grid={"parts": ["llm"], "lr": [1.0e-3]},
        continual={
            "tasks": ["toy-cl-shapes", "toy-cl-attributes", "toy-cl-digits"],
            "epochs": [0.03, 0.03, 0.03],
            "replay_per_task": [2],
            "method": ["inclora", "seqfull"],
        },
        storage=str(tmp_path / "sweeps"),
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    done = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, trials = trial_runs(tracking_uri, "ci-continual")
    assert sorted(run.info.run_name for run in trials) == [
        "inclora-r4-llm-lr1e-03-s0-replay2",
        "seqfull-llm-lr1e-03-s0-replay2",
    ]
    client = MlflowClient(tracking_uri)
    tasks = ["toy-cl-shapes", "toy-cl-attributes", "toy-cl-digits"]
    for run in trials:
        steps = metric_steps(tracking_uri, run.info.run_id, layout.task_accuracy_metric("toy-cl-shapes"))
        assert len(steps) == 4 and steps[0] == 0, steps  # zero-shot + after each task
        assert (
            metric_steps(tracking_uri, run.info.run_id, layout.accuracy_metric("ood_id")) == steps
        )  # the 2x2 suite each time
        record = json.loads(
            Path(client.download_artifacts(run.info.run_id, layout.MATRIX_ARTIFACT, str(tmp_path))).read_text()
        )
        assert record["tasks"] == tasks and record["steps"] == steps[1:] and len(record["matrix"]) == 3
        final = client.get_run(run.info.run_id).data.metrics
        assert [final[layout.task_accuracy_metric(task)] for task in tasks] == record["matrix"][-1]
        expected = continual_scores(record["matrix"], tasks).metrics()
        assert {key: final[key] for key in expected} == pytest.approx(expected)
    report = tmp_path / "reports" / "ci-continual"
    assert "IncLoRA" in (report / "table3.md").read_text() and (report / "figures" / "continual_matrix.png").is_file()
    assert "Table 3: continual learning" in (report / "report.html").read_text()

    # IncLoRA's last checkpoint: only the weights the adapters were merged into (the LLM's), no adapter left,
    # nothing of the vision tower (the base's, restored from the base model on resume)
    run_dir = next((tmp_path / "sweeps" / "ci-continual").glob("inclora-*"))
    checkpoint = max(path for path in run_dir.glob("checkpoint_*") if path.is_dir())
    state = load_file(checkpoint / MODEL_STATE)
    base = load_model("toy-qwen2.5-vl-init").model.state_dict()
    assert state and not [key for key in state if "lora" in key] and set(state) <= set(base)
    assert all(".visual." not in key and not key.startswith("visual.") for key in state), sorted(state)[:5]
    changed = [key for key in state if not torch.equal(state[key], base[key])]
    assert any("language_model" in key for key in changed), changed[:5]


def test_continual_trial_killed_after_its_first_task_resumes_at_the_second(tmp_path, tracking_uri, ray_cluster):
    """Its worker SIGKILLed once the first task's checkpoint is in, the IncLoRA trial trains only the
    second task on relaunch and ends with the Last / Average of an uninterrupted run."""
    trial = ensure_trial_run(
        TrialConfig(
            model="toy-qwen2.5-vl-init",
            parts="llm",
            lr=1e-3,
            method="lora",
            lora_r=4,
            lora_alpha=8,
            batch_size=4,
            micro_batch_size=4,
            warmup_ratio=0.0,
            zero_stage=0,
            log_every=1,
            eval_batch_size=64,
            continual_tasks=("toy-cl-shapes", "toy-cl-attributes"),
            continual_epochs=(0.05, 0.2),
            storage=str(tmp_path / "storage"),
            tracking_uri=tracking_uri,
            experiment=f"test-{tmp_path.name}",
        )
    )
    first_task_steps, second_task_steps = (
        stage_steps(
            stage_training_table(list(trial.continual_tasks), stage, 0, 0).num_rows, trial.continual_epochs[stage], 4
        )
        for stage in (0, 1)
    )
    killer = WorkerKiller(lambda: latest_registered_checkpoint(tmp_path / "storage") is not None, tmp_path / "storage")
    killer.start()
    outcome = run_trial(trial)
    killer.join(timeout=60)
    assert killer.error is None and killer.killed, killer.error
    assert killer.checkpoint_at_kill == first_task_steps, "killed after the second task, not between the two"
    assert outcome.status == "finished", outcome.error
    client = MlflowClient(tracking_uri)
    assert client.get_run(outcome.run_id).data.tags[RESUMED_TAG] == str(first_task_steps)
    ends = [0, first_task_steps, first_task_steps + second_task_steps]
    assert metric_steps(tracking_uri, outcome.run_id, layout.task_accuracy_metric("toy-cl-shapes")) == ends
    assert metric_steps(tracking_uri, outcome.run_id, layout.TRAIN_LOSS) == list(range(1, ends[-1] + 1))

    uninterrupted = run_trial(
        trial.with_run(run_id=None, experiment=f"test-{tmp_path.name}-straight", storage=str(tmp_path / "straight"))
    )
    assert uninterrupted.status == "finished", uninterrupted.error
    scores = {
        run: {
            key: value
            for key, value in client.get_run(run).data.metrics.items()
            if key.startswith(layout.CONTINUAL_PREFIX)
        }
        for run in (outcome.run_id, uninterrupted.run_id)
    }
    assert {layout.CONTINUAL_LAST, layout.CONTINUAL_AVERAGE} <= set(scores[outcome.run_id])
    assert scores[outcome.run_id] == scores[uninterrupted.run_id]
