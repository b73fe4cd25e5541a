"""A trial end to end: Ray Train workers, DeepSpeed on CPU/gloo, MLflow, checkpoints, resume, S3."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

from jobs.checkpoints import load_trial_checkpoint, trained_state_dict
from jobs.finetune.config import TrialConfig
from jobs.finetune.loop import RESUMED_TAG, early_stop_reason, eval_steps
from jobs.trial import run_trial
from recipes.models import load_model
from recipes.parts import resolve_parts
from tests.conftest import metric_steps


PARTS = "llm.attn+lm_head"
"""Trained parts of the main trial test: attention projections and the output head."""


def part_names(parts: str) -> set[str]:
    """Parameter names ``parts`` selects on the test trials' model."""
    loaded = load_model("toy-qwen2.5-vl-init")
    return set(resolve_parts(loaded.model, loaded.family, parts))


def make_trial(tmp_path: Path, tracking_uri: str, **overrides) -> TrialConfig:
    settings = dict(
        model="toy-qwen2.5-vl-init",
        parts="llm.attn",
        lr=2e-3,
        steps=12,
        eval_every=6,
        batch_size=8,
        micro_batch_size=4,
        workers=1,
        zero_stage=2,
        warmup_ratio=0.0,
        eval_batch_size=64,
        storage=str(tmp_path / "storage"),
        tracking_uri=tracking_uri,
        experiment=f"test-{tmp_path.name}",
    )
    settings.update(overrides)
    return TrialConfig(**settings)


def test_two_worker_zero2_trial_learns_and_logs_each_step_once(tmp_path, tracking_uri, ray_cluster):
    trial = make_trial(tmp_path, tracking_uri, parts=PARTS, workers=2, micro_batch_size=2, steps=24, eval_every=12)
    assert trial.grad_accumulation == 2
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error

    for key in ("acc/q/id_id", "acc/q/ood_ood", "delta/q/ood_id", "acc/toy-wiki"):
        assert metric_steps(tracking_uri, outcome.run_id, key) == [0, 12, 24]
    assert metric_steps(tracking_uri, outcome.run_id, "train/loss") == [10, 12, 20, 24]
    losses = [m.value for m in sorted(MlflowClient(tracking_uri).get_metric_history(outcome.run_id, "train/loss"), key=lambda m: m.step)]
    assert losses[-1] < 0.7 * losses[0]
    assert [m.value for m in MlflowClient(tracking_uri).get_metric_history(outcome.run_id, "model/frozen_tensors_changed")] == [0.0, 0.0]
    run = MlflowClient(tracking_uri).get_run(outcome.run_id)
    assert run.data.tags["forgetless.status"] == "finished"
    assert run.data.params["parts"] == PARTS and run.data.params["trial_id"] == trial.trial_id

    # the checkpoint holds exactly the trained tensors, and they moved; everything else is the base's
    checkpoint = outcome.checkpoint
    base = load_model("toy-qwen2.5-vl-init").model
    selected = part_names(PARTS)
    trained = trained_state_dict(checkpoint)
    assert set(trained) == selected
    assert all(not torch.equal(trained[name], base.get_parameter(name)) for name in selected)
    loaded, settings, step = load_trial_checkpoint(checkpoint)
    assert step == 24 and settings["parts"] == PARTS
    for name, param in loaded.model.named_parameters():
        if name not in selected:
            assert torch.equal(param, base.get_parameter(name)), name


def test_lora_trial_saves_adapters_only(tmp_path, tracking_uri, ray_cluster):
    trial = make_trial(tmp_path, tracking_uri, parts="llm", method="lora", lora_r=4, lora_alpha=8, zero_stage=0, steps=6, eval_every=6)
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error
    trained = trained_state_dict(outcome.checkpoint)
    assert trained and all(".lora_" in name for name in trained)


def test_zero3_trial_runs(tmp_path, tracking_uri, ray_cluster):
    trial = make_trial(tmp_path, tracking_uri, workers=2, micro_batch_size=2, zero_stage=3, steps=4, eval_every=4)
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error
    assert metric_steps(tracking_uri, outcome.run_id, "acc/q/id_id") == [0, 4]
    assert set(trained_state_dict(outcome.checkpoint)) == part_names("llm.attn")


def train_worker_pids() -> list[int]:
    """PIDs of live Ray Train worker processes (Ray titles them ``ray::RayTrainWorker...``)."""
    return [
        proc.pid
        for proc in psutil.process_iter(["cmdline"])
        if any("RayTrainWorker" in part for part in proc.info["cmdline"] or ())
    ]


def registered_checkpoint(storage: Path) -> bool:
    """True once Ray Train's controller has registered a checkpoint (its snapshot names one)."""
    for snapshot in storage.rglob("checkpoint_manager_snapshot.json"):
        if '"checkpoint_dir_name"' in snapshot.read_text():
            return True
    return False


def kill_a_worker_after_a_registered_checkpoint(storage: Path, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL a Ray Train worker as soon as a checkpoint is registered (the trial is mid-run)."""
    while not stop.is_set():
        if registered_checkpoint(storage) and (pids := train_worker_pids()):
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            return
        time.sleep(0.1)


def test_trial_killed_after_a_checkpoint_resumes_without_duplicate_steps(tmp_path, tracking_uri, ray_cluster):
    trial = make_trial(tmp_path, tracking_uri, steps=60, eval_every=10)
    stop, killed = threading.Event(), []
    killer = threading.Thread(
        target=kill_a_worker_after_a_registered_checkpoint, args=(tmp_path / "storage", stop, killed)
    )
    killer.start()
    try:
        outcome = run_trial(trial)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed"
    assert outcome.status == "finished", outcome.error
    run = MlflowClient(tracking_uri).get_run(outcome.run_id)
    assert int(run.data.tags[RESUMED_TAG]) in (10, 20, 30, 40, 50)
    assert metric_steps(tracking_uri, outcome.run_id, "acc/q/id_id") == [0, 10, 20, 30, 40, 50, 60]
    assert metric_steps(tracking_uri, outcome.run_id, "train/loss") == [10, 20, 30, 40, 50, 60]


def test_s3_storage_writes_checkpoints_and_resume_reads_them(tmp_path, tracking_uri, ray_cluster, s3_endpoint):
    import boto3

    from tests.conftest import S3_BUCKET

    prefix = f"sweeps-{tmp_path.name}"
    trial = make_trial(tmp_path, tracking_uri, steps=4, eval_every=2, storage=f"s3://{S3_BUCKET}/{prefix}")
    outcome = run_trial(trial)
    assert outcome.status == "finished", outcome.error
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)["Contents"]]
    run_dir = f"{prefix}/{trial.experiment}/{trial.run_name}/"
    assert any(key.startswith(run_dir + "checkpoint_") and key.endswith("trainer_state.json") for key in keys)
    assert any(key.startswith(f"{prefix}/zero-shot/") for key in keys)

    again = run_trial(trial.with_run(run_id=outcome.run_id))  # the same trial: Ray Train restores it from S3
    assert again.status == "finished", again.error
    assert MlflowClient(tracking_uri).get_run(outcome.run_id).data.tags[RESUMED_TAG] == "4"
    assert metric_steps(tracking_uri, outcome.run_id, "acc/q/id_id") == [0, 2, 4]


@pytest.mark.parametrize(
    ("steps", "every", "expected"),
    [(10, 5, [0, 5, 10]), (12, 5, [0, 5, 10, 12]), (3, 10, [0, 3]), (1, 1, [0, 1])],
)
def test_evaluation_steps(tmp_path, steps, every, expected):
    assert eval_steps(make_trial(tmp_path, "sqlite://", steps=steps, eval_every=every)) == expected


@pytest.mark.parametrize(
    ("deltas", "threshold", "stops"),
    [
        ({"id_ood": -1.0, "ood_id": -16.0, "ood_ood": 0.0}, 15, "ood_id -16.0 pp"),
        ({"id_ood": -15.0, "ood_id": 2.0, "ood_ood": 0.0}, 15, None),
        ({"id_ood": -30.0, "ood_id": -20.0, "ood_ood": -1.0}, 15, "id_ood -30.0 pp, ood_id -20.0 pp"),
        ({"id_ood": -90.0, "ood_id": -90.0, "ood_ood": -90.0}, None, None),
    ],
)
def test_early_stop_rule(deltas, threshold, stops):
    reason = early_stop_reason({f"delta/q/{q}": v for q, v in deltas.items()} | {"delta/q/id_id": -50.0}, threshold)
    if stops is None:
        assert reason is None
    else:
        assert reason == f"OOD drop beyond {threshold:g} pp vs zero-shot: {stops}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": 0}, "lr must be > 0, got 0"),
        ({"batch_size": 10, "workers": 2, "micro_batch_size": 4}, "batch_size 10 must be a multiple of workers x micro_batch_size (2 x 4)"),
        ({"data_fraction": 0}, "data_fraction must be in (0, 1], got 0"),
        ({"zero_stage": 4}, "zero_stage must be 0, 1, 2 or 3, got 4"),
        ({"schedule": "step"}, "schedule must be one of cosine, linear, constant, got 'step'"),
        ({"parts": "llm.mlp"}, "unknown part 'llm.mlp'"),
    ],
)
def test_trial_config_validation(tmp_path, overrides, message):
    with pytest.raises(ValueError) as error:
        make_trial(tmp_path, "sqlite://", **overrides)
    assert message in str(error.value)


def test_trial_identity_ignores_where_it_runs(tmp_path):
    trial = make_trial(tmp_path, "sqlite://")
    moved = trial.with_run(storage="s3://elsewhere", tracking_uri="http://127.0.0.1:5000", run_id="abc")
    assert moved.trial_id == trial.trial_id
    assert make_trial(tmp_path, "sqlite://", lr=1e-4).trial_id != trial.trial_id
    assert trial.name == "llm.attn-full-lr2e-03-f1.0-s0"
