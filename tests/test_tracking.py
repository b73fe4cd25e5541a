"""The trial tracker against a real MLflow store: each (metric, step) once, across restarts."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from contract import layout
from jobs.finetune import tracking
from jobs.finetune.tracking import (
    EARLY_STOP_TAG,
    STATUS_TAG,
    TRACKING_WAIT_ENV,
    TrackingUnavailable,
    TrialTracker,
    start_trial_run,
)
from recipes.common.local_ports import free_port
from tests.conftest import metric_steps


@pytest.fixture
def run_id(tracking_uri, request) -> str:
    """A fresh trial run in its own experiment of the session's MLflow store."""
    return start_trial_run(tracking_uri, f"tracker-{request.node.name}", "trial", {"lr": "1e-3"}, {"trial_id": "t"})


def test_a_step_is_logged_once_however_often_it_is_logged(tracking_uri, run_id):
    tracker = TrialTracker(tracking_uri, run_id)
    assert tracker.log({layout.TRAIN_LOSS: 0.9, layout.TRAIN_LR: 1e-3}, step=1) == 2
    assert tracker.log({layout.TRAIN_LOSS: 0.5, layout.TRAIN_LR: 1e-3}, step=1) == 0
    assert tracker.log({layout.TRAIN_LOSS: 0.8}, step=2) == 1
    assert metric_steps(tracking_uri, run_id, layout.TRAIN_LOSS) == [1, 2]
    history = MlflowClient(tracking_uri).get_metric_history(run_id, layout.TRAIN_LOSS)
    assert sorted((m.step, m.value) for m in history) == [(1, 0.9), (2, 0.8)]  # the first value stays


def test_a_restarted_tracker_skips_what_the_run_holds_and_logs_the_rest(tracking_uri, run_id):
    """A relaunched worker replays steps 1..3 after a step-1 checkpoint; only new (metric, step) pairs land."""
    first = TrialTracker(tracking_uri, run_id)
    for step in (1, 2, 3):
        first.log({layout.TRAIN_LOSS: 1.0 / step}, step)
    first.log({layout.accuracy_metric("id_id"): 40.0}, step=2)

    replay = TrialTracker(tracking_uri, run_id)  # what the relaunched rank 0 creates
    assert [replay.log({layout.TRAIN_LOSS: 9.0}, step) for step in (2, 3, 4)] == [0, 0, 1]
    assert (
        replay.log({layout.accuracy_metric("id_id"): 41.0, layout.FROZEN_TENSORS_CHANGED: 0.0}, step=2) == 1
    )  # a key new at step 2
    assert metric_steps(tracking_uri, run_id, layout.TRAIN_LOSS) == [1, 2, 3, 4]
    assert metric_steps(tracking_uri, run_id, layout.accuracy_metric("id_id")) == [2]
    assert metric_steps(tracking_uri, run_id, layout.FROZEN_TENSORS_CHANGED) == [2]


def test_training_values_wait_for_the_next_write_and_go_out_in_one_call(tracking_uri, run_id, monkeypatch):
    tracker = TrialTracker(tracking_uri, run_id)
    calls = []
    send = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", lambda *a, **k: calls.append(k) or send(*a, **k))
    for step in (10, 20, 30):
        assert tracker.log_soon({layout.TRAIN_LOSS: 1.0 / step, layout.TRAIN_LR: 1e-3}, step) == 2
    assert tracker.log_soon({layout.TRAIN_LOSS: 5.0}, 30) == 0  # a replayed step is not buffered twice
    assert calls == [] and metric_steps(tracking_uri, run_id, layout.TRAIN_LOSS) == []
    tracker.log({layout.accuracy_metric("id_id"): 50.0}, step=30)  # an evaluation takes them along
    assert len(calls) == 1 and len(calls[0]["metrics"]) == 7
    assert metric_steps(tracking_uri, run_id, layout.TRAIN_LOSS) == [10, 20, 30]
    tracker.log_soon({layout.TRAIN_LOSS: 0.1}, 40)
    tracker.set_status("finished")  # a status follows every value before it
    assert metric_steps(tracking_uri, run_id, layout.TRAIN_LOSS) == [10, 20, 30, 40]


def test_a_full_or_old_buffer_is_sent(tracking_uri, run_id, monkeypatch):
    tracker = TrialTracker(tracking_uri, run_id)
    monkeypatch.setattr(tracking, "BUFFER_MAX_VALUES", 4)
    tracker.log_soon({layout.TRAIN_LOSS: 1.0, layout.TRAIN_LR: 1e-3}, 1)
    assert metric_steps(tracking_uri, run_id, layout.TRAIN_LOSS) == []
    tracker.log_soon({layout.TRAIN_LOSS: 1.0, layout.TRAIN_LR: 1e-3}, 2)  # 4 values: sent
    assert metric_steps(tracking_uri, run_id, layout.TRAIN_LOSS) == [1, 2] and tracker.buffered == []
    monkeypatch.setattr(tracking, "BUFFER_MAX_S", 0.0)
    tracker.log_soon({layout.TRAIN_LOSS: 1.0}, 3)  # old at once: sent
    assert metric_steps(tracking_uri, run_id, layout.TRAIN_LOSS) == [1, 2, 3]


def test_status_tags(tracking_uri, run_id):
    tracker = TrialTracker(tracking_uri, run_id)
    assert MlflowClient(tracking_uri).get_run(run_id).data.tags[STATUS_TAG] == "running"
    tracker.set_status("early_stopped", "OOD drop beyond 1 pp vs zero-shot: ood_id -2.0 pp")
    tags = MlflowClient(tracking_uri).get_run(run_id).data.tags
    assert tags[STATUS_TAG] == "early_stopped" and tags[EARLY_STOP_TAG].endswith("ood_id -2.0 pp")
    with pytest.raises(ValueError, match="status must be one of"):
        tracker.set_status("paused")


def test_an_unreachable_server_is_named_with_the_step(tracking_uri, run_id, monkeypatch):
    tracker = TrialTracker(tracking_uri, run_id)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv(TRACKING_WAIT_ENV, "0")  # the tracker sends the batch once
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tracker.client, tracker.tracking_uri = MlflowClient(gone), gone
    with pytest.raises(TrackingUnavailable, match=rf"MLflow at {gone} did not take step 7 of run {run_id}"):
        tracker.log({layout.TRAIN_LOSS: 0.1}, step=7)
    tracker.client, tracker.tracking_uri = MlflowClient(tracking_uri), tracking_uri
    assert tracker.log({layout.TRAIN_LOSS: 0.1}, step=7) == 1  # not marked logged: a retry logs it
