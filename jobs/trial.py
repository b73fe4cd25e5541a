"""Launch one trial as a Ray Train ``TorchTrainer`` and record how it ended in MLflow.

The launcher stands above the two kinds of trial workers: ``jobs.finetune.loop`` (one task)
and ``jobs.continual.loop`` (a task sequence); both import only what is below them.

The trainer's run lives at ``<storage>/<experiment>/<trial name>-<trial id>``; Ray Train V2
restores the latest checkpoint of a run with that name by itself, so launching an unfinished
trial again resumes it, and worker failures restart the worker group from the last checkpoint
(up to ``max_failures`` times). Continual-learning trials run ``jobs.continual.loop`` instead of
``jobs.finetune.loop``; everything else is the same:

    outcome = run_trial(trial)                 # standalone: finds or creates the MLflow run
    outcome = run_trial(trial, callbacks=[TuneReportCallback()])   # inside a Tune trial
    outcome.status, outcome.metrics
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow.tracking import MlflowClient
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from contract.layout import KIND_TAG, STATUS_TAG, SWEEP_TAG, TIME_TRIAL_S, TRIAL_ID_TAG, TRIAL_KIND
from contract.reports import EARLY_STOPPED, STEP
from jobs.finetune.config import TrialConfig
from jobs.finetune.tracking import TrialTracker, start_trial_run
from jobs.worker import trial_worker
from recipes.common import storage
from recipes.models import ModelNotCachedError, resolve_model_dir


@dataclass
class TrialOutcome:
    """How a trial ended."""

    status: str
    """finished, early_stopped or failed."""
    run_id: str
    """The MLflow run holding its metrics."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The last metrics it reported."""
    error: str | None = None
    """The error that ended it, when it failed."""
    checkpoint: str | None = None
    """Path of its latest checkpoint in storage (inside the bucket for s3 storage)."""


def build_trainer(trial: TrialConfig, callbacks: Sequence[Any] = ()):
    """The ``TorchTrainer`` that runs ``trial`` (``workers`` ranks, CPU+gloo or GPU+NCCL)."""
    # Workers keep the working directory Ray gave them (the job's working dir), so relative
    # dataset, suite and DeepSpeed paths in the trial mean what the user meant.
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    use_gpu = trial.gpus_per_worker > 0
    resources = {"CPU": trial.cpus_per_worker, **({"GPU": trial.gpus_per_worker} if use_gpu else {})}
    filesystem, root = storage.arrow_filesystem(trial.storage)
    return TorchTrainer(
        trial_worker,
        train_loop_config={"trial": trial.to_dict()},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=trial.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=trial.run_name,
            storage_path=f"{root}/{trial.experiment}",
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=trial.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=trial.keep_last),
            callbacks=list(callbacks),
        ),
    )


def find_trial_run(trial: TrialConfig) -> tuple[str, str] | None:
    """(run id, status tag) of the newest MLflow run of this trial in its experiment, if any."""
    client = MlflowClient(tracking_uri=trial.tracking_uri)
    experiment = client.get_experiment_by_name(trial.experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial.trial_id}' and tags.`{KIND_TAG}` = '{TRIAL_KIND}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return (runs[0].info.run_id, runs[0].data.tags.get(STATUS_TAG, "running")) if runs else None


def ensure_trial_run(trial: TrialConfig, parent_run_id: str | None = None) -> TrialConfig:
    """The trial with ``run_id`` set: its unfinished run if one exists, else a new run."""
    if trial.run_id:
        return trial
    existing = find_trial_run(trial)
    if existing and existing[1] != "finished":
        return trial.with_run(run_id=existing[0])
    tags = {TRIAL_ID_TAG: trial.trial_id, **({SWEEP_TAG: trial.sweep} if trial.sweep else {})}
    run_id = start_trial_run(
        trial.tracking_uri, trial.experiment, trial.name, trial.mlflow_params(), tags, parent_run_id
    )
    return trial.with_run(run_id=run_id)


def run_trial(trial: TrialConfig, callbacks: Sequence[Any] = ()) -> TrialOutcome:
    """Fit the trial's TorchTrainer and mark its MLflow run finished / early_stopped / failed."""
    try:
        resolve_model_dir(trial.model)  # builds toy models here, once, not inside the workers
    except ModelNotCachedError:
        pass  # a Hub model: downloaded by the workers' nodes that load it (load_model), not on this one
    trial = ensure_trial_run(trial)
    tracker = TrialTracker(trial.tracking_uri, trial.run_id)
    tracker.set_status("running")
    client = tracker.client
    started = time.perf_counter()
    try:
        result = build_trainer(trial, callbacks).fit()
    except Exception as error:  # Ray Train raises once its failure budget (max_failures) is spent
        if tagged_early_stopped(client, trial.run_id):
            # a search scheduler tagged the run and then stopped the trial (orchestrator.search);
            # the stop can reach fit() as an error before Tune ends this process: not a failure
            return TrialOutcome("early_stopped", trial.run_id)
        tracker.set_status("failed")
        client.set_terminated(trial.run_id, status="FAILED")
        return TrialOutcome("failed", trial.run_id, error=f"{type(error).__name__}: {error}")
    metrics = dict(result.metrics or {})  # the metrics of the latest checkpoint's report
    # stopped by its own rule (the metric) or by the search, which tags the run (jobs.search_decisions)
    stopped = bool(metrics.get(EARLY_STOPPED)) or tagged_early_stopped(client, trial.run_id)
    tracker.log({TIME_TRIAL_S: time.perf_counter() - started}, int(metrics.get(STEP, trial.steps)))
    if not stopped:
        tracker.set_status("finished")
    client.set_terminated(trial.run_id, status="FINISHED")
    checkpoint = result.checkpoint.path if result.checkpoint else None
    return TrialOutcome("early_stopped" if stopped else "finished", trial.run_id, metrics, checkpoint=checkpoint)


def tagged_early_stopped(client: MlflowClient, run_id: str) -> bool:
    """Whether the trial's MLflow run is tagged ``early_stopped`` (by the trial's rule or by a search)."""
    return client.get_run(run_id).data.tags.get(STATUS_TAG) == "early_stopped"
