"""``python -m jobs.finetune``: flags generated from ``TrialConfig``, checked by it, before Ray starts."""

from __future__ import annotations

import pytest

from jobs.finetune.__main__ import build_parser, main, parse_trial

BASE = ["--model", "toy-qwen2.5-vl-init", "--parts", "llm", "--lr", "1e-4"]


def test_tuple_flags_take_several_values():
    trial = parse_trial(
        [
            *BASE,
            "--continual-tasks",
            "toy-cl-shapes",
            "toy-cl-digits",
            "--continual-epochs",
            "1",
            "0.5",
            "--replay-per-task",
            "20",
        ]
    )
    assert [task.name for task in trial.continual_tasks] == ["toy-cl-shapes", "toy-cl-digits"]
    assert trial.continual_epochs == (1.0, 0.5) and trial.replay_per_task == 20


def test_help_comes_from_the_field_docstrings():
    text = build_parser().format_help()
    assert "Share of steps with linear warm-up." in text and "{cosine,linear,constant}" in text


@pytest.mark.parametrize(
    "flags, line",
    [
        (["--lr", "-1"], "error: --lr: must be > 0"),
        (["--warmup-ratio", "1"], "error: --warmup-ratio: must be < 1"),
        (["--zero-stage", "4"], "error: --zero-stage: must be <= 3"),
        (["--parts", "llm.nope"], "error: --parts: "),
        (
            ["--batch-size", "12"],
            "error: --batch-size, --micro-batch-size, --workers: invalid trial: batch_size 12 must be a multiple of "
            "workers x micro_batch_size (1 x 8)",
        ),
        (["--schedule", "cosin"], "error: argument --schedule: invalid choice: 'cosin'"),
        (["--continual-epochs", "1", "x"], "error: argument --continual-epochs: invalid float value: 'x'"),
        (
            [
                "--continual-tasks",
                "toy-cl-shapes",
                "toy-cl-digits",
                "--continual-epochs",
                "1",
                "1",
                "--zero-stage",
                "3",
            ],
            "error: invalid trial: continual trials run ZeRO stage 0-2",
        ),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(flags, line, capsys):
    with pytest.raises(SystemExit) as stopped:
        raise SystemExit(main([*BASE, *flags]))
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.startswith(line) and err.count("\n") == 1, err
