"""The sweep's time left (hand-computed), its progress lines on a terminal and in a log, the commands' bars."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from contract.layout import TIME_EVAL_S
from jobs.finetune.loop import TOTAL_STEPS
from orchestrator import progress
from orchestrator.eta import (
    TrialPace,
    duration_text,
    estimate_seconds_left,
    expected_wall_time,
    step_rate_seconds_left,
)
from orchestrator.progress import CLEAR_LINE, PLAIN_EVERY_S, SweepProgress
from recipes.common.progress_bar import progress_bar


@pytest.mark.parametrize(
    "wall_times, running_started, now, concurrency, left, expected",
    [
        ([], [50.0], 100.0, 2, 3, None),  # no trial has finished: no estimate
        ([60.0, 120.0], [70.0], 100.0, 2, 3, 180.0),  # mean 90; running 60 left; 60|0 -> 60|90 -> 150|90 -> 150|180
        ([100.0], [60.0], 100.0, 1, 2, 260.0),  # one at a time: 60 left, then 100 + 100
        ([100.0], [], 100.0, 4, 2, 100.0),  # two left, four slots: side by side
        ([100.0], [0.0], 100.0, 2, 1, 100.0),  # running past the mean counts as ending now
        ([30.0, 50.0], [], 100.0, 1, 0, 0.0),  # nothing running or left
        ([40.0], [90.0, 80.0, 70.0], 100.0, 2, 1, 50.0),  # more running than the concurrency says: 30|20|10 -> 30|20|50
    ],
)
def test_estimate_seconds_left(wall_times, running_started, now, concurrency, left, expected):
    assert estimate_seconds_left(wall_times, running_started, now, concurrency, left) == expected


def test_a_running_trial_with_a_step_rate_is_estimated_at_its_own_pace():
    """Mean 90 s would leave the trial that started at 70 s 60 s; its own pace says 20 s: 20|0 -> 20|90."""
    assert estimate_seconds_left([60.0, 120.0], [70.0], 100.0, 2, 1, running_left=[20.0]) == 90.0
    assert estimate_seconds_left([60.0, 120.0], [70.0], 100.0, 2, 1, running_left=[None]) == 90.0 + 0.0  # 60|90
    assert estimate_seconds_left([100.0], [0.0, 50.0], 100.0, 2, 0, running_left=[None, 130.0]) == 130.0


@pytest.mark.parametrize(
    "paces, wall_times, expected",
    [
        ([], [], None),  # nothing ended yet
        ([], [80.0, 100.0], 90.0),  # no step reports (continual trials): the mean wall time
        ([TrialPace(20.0, 1.0, 100)], [150.0], 150.0),  # no finished trial's tail yet: the mean wall time
        ([TrialPace(20.0, None, 100, tail=5.0)], [150.0], 150.0),  # no step rate: the mean wall time
        # cold caches: the finished trial's start-up was 60 s, the running one's 10 s: 10 + 0.5 x 100 + 5
        ([TrialPace(60.0, 0.6, 100, tail=5.0), TrialPace(10.0, 0.4, 100)], [125.0], 65.0),
    ],
)
def test_expected_wall_time(paces, wall_times, expected):
    assert expected_wall_time(paces, wall_times) == pytest.approx(expected) if expected else expected is None


@pytest.mark.parametrize(
    "paces, step_cost, expected",
    [
        # a full step (cost 3) took 1.2 s: a LoRA step (cost 2) takes 0.8 s; 10 + 0.8 x 100 + 5
        ([TrialPace(10.0, 1.2, 100, tail=5.0, step_cost=3.0)], 2.0, 95.0),
        # a full trial at 1.2 s a step (cost 3) and a LoRA one at 0.6 s (cost 2): 0.35 s a unit of cost
        ([TrialPace(10.0, 1.2, 100, tail=5.0, step_cost=3.0), TrialPace(10.0, 0.6, 100, step_cost=2.0)], 3.0, 120.0),
        ([TrialPace(10.0, 1.2, 100, tail=5.0, step_cost=3.0)], 3.0, 135.0),  # the same recipe: its own pace
    ],
)
def test_a_recipe_whose_steps_cost_less_is_expected_to_step_faster(paces, step_cost, expected):
    assert expected_wall_time(paces, [999.0], step_cost) == pytest.approx(expected)


def test_queued_trials_each_take_their_own_expected_wall_time():
    """One slot, nothing running: 40 then 100 then 10 end at 150; two slots: 40|100 -> 50|100."""
    assert estimate_seconds_left([70.0], [], 0.0, 1, 3, queued=[40.0, 100.0, 10.0]) == 150.0
    assert estimate_seconds_left([70.0], [], 0.0, 2, 3, queued=[40.0, 100.0, 10.0]) == 100.0


def test_the_sweep_eta_weighs_the_trials_left_by_what_their_steps_cost(clock):
    """Two full trials (cost 3) ran 100 steps at 1.2 s; the two LoRA trials left (cost 2) step at 0.8 s:
    each takes 10 + 80 + 10 = 100 s, side by side; unweighed it would say 130 s."""
    out = io.StringIO()
    costs = {"full-a": 3.0, "full-b": 3.0, "lora-a": 2.0, "lora-b": 2.0}
    sweep = SweepProgress(total=4, concurrency=2, stream=out, step_costs=costs)
    a, b = tune_trial("full-a"), tune_trial("full-b")
    for trial in (a, b):
        sweep.on_trial_start(0, [], trial)
    clock[0] += 10
    for trial in (a, b):
        sweep.on_trial_result(0, [], trial, {"step": 0, TOTAL_STEPS: 100})
    clock[0] += 120
    for trial in (a, b):
        sweep.on_trial_result(0, [], trial, {"step": 100, TOTAL_STEPS: 100})
    clock[0] += 10
    sweep.on_trial_complete(0, [], a)
    sweep.on_trial_complete(0, [], b)
    assert out.getvalue().splitlines()[-1].endswith("0 running, 2 left, ETA 1m40s")


def test_a_trial_not_started_is_expected_to_take_the_warm_start_up_not_the_cold_one(clock):
    """Two full trials pay the cold caches (60 s each to their first step); the third starts in 10 s."""
    out = io.StringIO()
    sweep = SweepProgress(total=3, concurrency=2, stream=out)
    a, b, c = tune_trial("a"), tune_trial("b"), tune_trial("c")
    for trial in (a, b):
        sweep.on_trial_start(0, [], trial)
    clock[0] += 60
    for trial in (a, b):
        sweep.on_trial_result(0, [], trial, {"step": 10, TOTAL_STEPS: 100})
    clock[0] += 90
    for trial in (a, b):
        sweep.on_trial_result(0, [], trial, {"step": 100, TOTAL_STEPS: 100})  # 1 s a step
    clock[0] += 10
    sweep.on_trial_complete(0, [], a)  # 160 s in all: 60 start-up, 90 steps, 10 tail
    sweep.on_trial_start(0, [], c)
    clock[0] += 10
    sweep.on_trial_result(0, [], c, {"step": 10, TOTAL_STEPS: 100})  # c started in 10 s
    sweep.on_trial_complete(0, [], b)  # 170 s: its tail 20 s
    # c: 10 s start-up + 100 steps x 1 s + 15 s mean tail = 125 s, 10 s of it run (the mean wall time, 165 s,
    # would say 2m35s)
    assert out.getvalue().splitlines()[-1].endswith("1 running, 0 left, ETA 1m55s")


def test_the_zero_shot_evaluation_the_first_trials_pay_is_left_out_of_the_expected_start_up(clock):
    """Both first trials spend 50 of their 60 s start-up on the zero-shot evaluation, which later
    trials read from the cache: a trial not started yet takes 10 + 100 x 1 s + 10 s, not 160 s."""
    out = io.StringIO()
    sweep = SweepProgress(total=3, concurrency=2, stream=out)
    a, b = tune_trial("a"), tune_trial("b")
    for trial in (a, b):
        sweep.on_trial_start(0, [], trial)
    clock[0] += 55
    for trial in (a, b):
        sweep.on_trial_result(0, [], trial, {"step": 0, TIME_EVAL_S: 50.0})
    clock[0] += 5
    for trial in (a, b):
        sweep.on_trial_result(0, [], trial, {"step": 10, TOTAL_STEPS: 100})
    clock[0] += 90
    for trial in (a, b):
        sweep.on_trial_result(0, [], trial, {"step": 100, TOTAL_STEPS: 100})
    clock[0] += 10
    sweep.on_trial_complete(0, [], a)
    sweep.on_trial_complete(0, [], b)
    assert out.getvalue().splitlines()[-1].endswith("0 running, 1 left, ETA 2m00s")


@pytest.mark.parametrize(
    "progress, total, expected",
    [
        ([], 100, None),  # no report yet
        ([(100.0, 10)], 100, None),  # one report says nothing of the pace
        ([(100.0, 10), (130.0, 40)], 100, 60.0),  # 1 s a step, 60 steps to go
        ([(100.0, 10), (130.0, 10)], 100, None),  # no step between them
        ([(100.0, 90), (110.0, 100)], 100, 0.0),  # done
    ],
)
def test_step_rate_seconds_left(progress, total, expected):
    assert step_rate_seconds_left(progress, total) == expected


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (44.6, "45s"), (185, "3m05s"), (7620, "2h07m"), (-3, "0s")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def tune_trial(name: str, steps: int = 100) -> SimpleNamespace:
    """What SweepProgress reads of a Tune trial: its id, its grid cell and its last result."""
    cell = {"name": name, "trial": {"steps": steps}}
    return SimpleNamespace(trial_id=f"id-{name}", config={"cell": cell}, last_result={})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """SweepProgress's clock, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_log_output_gets_the_eta_after_a_trial_ends_and_steps_lines_at_most_every_plain_every_s(clock):
    out = io.StringIO()
    sweep = SweepProgress(total=4, concurrency=2, stream=out)
    a, b = tune_trial("a"), tune_trial("b")
    sweep.on_trial_start(0, [], a)
    clock[0] += 10
    sweep.on_trial_result(0, [], a, {"step": 10, TOTAL_STEPS: 100})  # a steps line
    clock[0] += 20
    sweep.on_trial_start(0, [], b)
    sweep.on_trial_result(0, [], b, {"step": 10, TOTAL_STEPS: 100})  # 20 s after the last: none
    clock[0] += PLAIN_EVERY_S
    sweep.on_trial_result(0, [], a, {"step": 40, TOTAL_STEPS: 100})  # a steps line again
    clock[0] = 1090.0
    sweep.on_trial_complete(0, [], a)
    assert out.getvalue().splitlines() == [
        "[     0s 0/4 done] a: started",
        "[    10s 0/4 done] a 10/100 | 1 running, 3 left",
        "[    30s 0/4 done] b: started",
        "[    60s 0/4 done] a 40/100, b 10/100 | 2 running, 2 left",
        "[    90s 1/4 done] a: done",
        # a trial takes: the quickest start-up (b's, 0 s) + 100 steps at a's 50 s / 30 steps + a's tail (30 s)
        # = 196.7 s; b has run 60 s: 136.7 s left; the two left take the free slot at 0 and b's at 136.7
        "[    90s 1/4 done] 1 running, 2 left, ETA 5m33s",
    ]


def test_a_terminal_gets_one_status_line_redrawn_in_place(clock):
    out = Terminal()
    sweep = SweepProgress(total=2, concurrency=2, stream=out)
    a, b = tune_trial("a", steps=6), tune_trial("b", steps=6)
    sweep.on_trial_start(0, [], a)
    sweep.on_trial_start(0, [], b)
    for step in (1, 2):
        sweep.on_trial_result(0, [], a, {"step": step, TOTAL_STEPS: 6})
    sweep.on_trial_result(0, [], b, {"step": 1, TOTAL_STEPS: 6})
    status = "[     0s 0/2 done] a 2/6, b 1/6 | 2 running, 0 left"
    assert out.getvalue().endswith(CLEAR_LINE + status)
    assert out.getvalue().count("a 1/6") == 1 and "\n" not in out.getvalue().split("b: started\n")[1]
    clock[0] += 50
    sweep.on_trial_complete(0, [], a)  # a line clears the status line, which comes back under it
    sweep.on_experiment_end([])  # and goes before the summary table
    status = "[    50s 1/2 done] b 1/6 | 1 running, 0 left, ETA 0s"
    eta = "[    50s 1/2 done] 1 running, 0 left, ETA 0s"
    assert out.getvalue().endswith(f"{CLEAR_LINE}{eta}\n{CLEAR_LINE}{status}{CLEAR_LINE}")
    assert f"{CLEAR_LINE}[    50s 1/2 done] a: done\n" in out.getvalue()


def test_progress_bars_show_a_rate_and_an_eta_on_a_terminal_only():
    counted = []
    terminal, log = Terminal(), io.StringIO()
    for _ in progress_bar(range(3), total=lambda: counted.append(1) or 3, desc="adapting", unit="row", file=terminal):
        pass
    assert "adapting: 100%" in terminal.getvalue() and "3/3 [" in terminal.getvalue()
    assert "row/s]" in terminal.getvalue() and "<00:00" in terminal.getvalue()  # rate and time left
    for _ in progress_bar(range(3), total=lambda: counted.append(1) or 3, desc="adapting", unit="row", file=log):
        pass
    assert log.getvalue() == "" and counted == [1]  # quiet, and the count is not even taken


def test_source_row_count_is_the_total_of_the_adapt_bar(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recipes.adapters.rows import iter_source_rows, source_row_count

    (tmp_path / "a.jsonl").write_text('{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    (tmp_path / "a.tsv").write_text("x\ty\n1\t2\n3\t4\n")
    pq.write_table(pa.table({"x": list(range(700))}), tmp_path / "a.parquet", row_group_size=256)
    (tmp_path / "a.json").write_text('[{"x": 1}]')
    for name, rows in [("a.jsonl", 3), ("a.tsv", 2), ("a.parquet", 700)]:
        path = str(tmp_path / name)
        assert source_row_count(path) == rows == len(list(iter_source_rows(path)))
    assert source_row_count(str(tmp_path / "a.json")) is None


def test_step_reports_reach_tune_with_the_latest_evaluations_search_metrics(monkeypatch):
    """Tune refuses a result without the search's metrics (ASHA's, Optuna's): a step report carries the last
    evaluation's; one before any evaluation (a resumed trial's first steps) is not forwarded."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from contract.layout import delta_metric
    from orchestrator.search import ID_GAIN, WORST_OOD_DROP, SearchReportCallback

    forwarded = []
    monkeypatch.setattr(TuneReportCallback, "__init__", lambda self: None)  # outside a Tune session
    monkeypatch.setattr(
        TuneReportCallback, "after_report", lambda self, context, metrics, checkpoint: forwarded.append(metrics[0])
    )
    callback = SearchReportCallback("t")
    deltas = {
        delta_metric("id_id"): 5.0,
        delta_metric("id_ood"): -2.0,
        delta_metric("ood_id"): -1.0,
        delta_metric("ood_ood"): 0.0,
    }
    callback.after_report(None, [{"step": 1, TOTAL_STEPS: 6}], None)
    callback.after_report(None, [{"step": 2, **deltas}], None)
    callback.after_report(None, [{"step": 3, TOTAL_STEPS: 6}], None)
    searched = {ID_GAIN: 5.0, WORST_OOD_DROP: 2.0, "trial_name": "t"}
    assert forwarded == [{"step": 2, **deltas, **searched}, {"step": 3, TOTAL_STEPS: 6, **searched}]
