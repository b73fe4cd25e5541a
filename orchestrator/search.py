"""How a sweep picks its trials: the full grid, ASHA over the grid's cells, or an Optuna search.

``orchestrator.sweep`` hands its pending trials to ``run_search``, which builds the Ray Tune
``Tuner`` for the grid's ``search.method``:

- ``grid``: every cell, as listed by ``orchestrator.expand``;
- ``asha``: the same cells under ``ForgettingAwareASHA``: at each rung (``grace_steps``, then
  x ``reduction_factor``) only the best trials by ID gain go on, and a trial whose worst OOD
  quadrant has fallen more than ``max_ood_drop_pp`` below zero-shot stops there;
- ``optuna``: ``num_samples`` trials sampled by Optuna's multi-objective TPE sampler
  (maximise ``search/id_gain``, minimise ``search/worst_ood_drop``) over ``search.space``.

Every trial is still a ``TrialConfig`` with a stable id and an MLflow child run of the sweep's
parent run; an Optuna trial's child run also carries the sampled values (``SEARCH_PARAMS_TAG``),
so a resumed Optuna search rebuilds its study from MLflow: finished trials are told to the
sampler and not run again, unfinished ones are proposed first and resume from their checkpoints.

    failed = run_search(grid, plan, concurrency, parent_run_id, progress, driver_resources)
"""

from __future__ import annotations

import json
import os
from typing import Any

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from analysis.mlflow_reader import all_runs
from contract.layout import (
    FULL_GRID_STEPS_TAG,
    KIND_TAG,
    PARAM_DATA_FRACTION,
    PARAM_LORA_R,
    PARAM_LR,
    PARAM_METHOD,
    PARAM_MIX_RATIO,
    PARAM_PARTS,
    PARENT_TAG,
    SEARCH_ID_GAIN,
    SEARCH_PARAMS_TAG,
    SEARCH_TAG,
    SEARCH_WORST_OOD_DROP,
    STATUS_TAG,
    TARGET_QUADRANT,
    TRIAL_KIND,
    delta_metric,
)
from contract.reports import EARLY_STOPPED, STEP, TOTAL_STEPS, TRIAL_NAME, TRIAL_STATUS
from jobs.finetune.config import TrialConfig
from jobs.finetune.tracking import TrialTracker
from jobs.search_decisions import close_board, open_board, post_decision
from jobs.trial import run_trial
from orchestrator.expand import expand_trials, trial_config
from orchestrator.grid_schema import Grid, Range
from orchestrator.mlflow_bookkeeping import DONE_STATUSES, TrialPlan, plan_children
from orchestrator.progress import worst_ood
from recipes.common.redaction import redact
from recipes.common.storage import arrow_filesystem

ID_GAIN, WORST_OOD_DROP = SEARCH_ID_GAIN, SEARCH_WORST_OOD_DROP
OBJECTIVES = {ID_GAIN: "max", WORST_OOD_DROP: "min"}
"""Optuna's objectives and their directions."""
FORGOT_SCORE = -1e6
"""Rung score recorded for a trial past ``max_ood_drop_pp`` (below any ID gain)."""
STUDY_NAME = "forgetless"


def search_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``ID_GAIN`` and ``WORST_OOD_DROP`` of an evaluation's metrics (nothing when it has no deltas)."""
    worst = worst_ood(metrics)
    if delta_metric(TARGET_QUADRANT) not in metrics or worst is None:
        return {}
    return {ID_GAIN: float(metrics[delta_metric(TARGET_QUADRANT)]), WORST_OOD_DROP: -float(worst[1])}


class SearchReportCallback(TuneReportCallback):
    """Forwards a trial's reports to Tune with ``search_metrics`` (read by ASHA and Optuna) and its name.

    Tune wants a search's metrics in every result, so a step-progress report (``TOTAL_STEPS``, no
    metrics) carries those of the trial's latest evaluation; one before the trial's first evaluation
    in this run (the first steps of a resumed trial) is not forwarded.
    """

    def __init__(self, trial_name: str) -> None:
        super().__init__()
        self.trial_name = trial_name
        self.latest: dict[str, float] | None = None
        """``search_metrics`` of the trial's latest evaluation in this run."""

    def after_report(self, run_context, metrics, checkpoint):
        reported = dict(metrics[0]) if metrics else {}
        found = search_metrics(reported)
        if TOTAL_STEPS in reported:
            if self.latest is None:
                return
            found = self.latest
        elif found:
            self.latest = found
        first = {**reported, **found, TRIAL_NAME: self.trial_name} if metrics else {}
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


# -- the Tune trainable ----------------------------------------------------------------------------


def run_search_trial(config: dict, grid: Grid, parent_run_id: str) -> None:
    """Ray Tune function trainable: one trial of any search, forwarding its reports to Tune."""
    os.chdir(os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))  # relative paths are the user's
    if "cell" in config:
        trial = TrialConfig.from_dict(config["cell"]["trial"])
    else:
        trial, done = sampled_trial(grid, config, parent_run_id)
        if done is not None:  # the sampler proposed a trial this sweep already ran
            tune.report(
                {TRIAL_STATUS: done[1], TRIAL_NAME: trial.name, **stored_search_metrics(trial.tracking_uri, done[0])}
            )
            return
    outcome = run_trial(trial, callbacks=[SearchReportCallback(trial.name)])
    if outcome.status == "failed":
        raise RuntimeError(redact(f"trial {trial.name} failed: {outcome.error}"))
    tune.report({TRIAL_STATUS: outcome.status, TRIAL_NAME: trial.name, **search_metrics(outcome.metrics)})


def stored_search_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """``search_metrics`` of a finished trial run's last evaluation, read from MLflow."""
    return search_metrics(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.metrics)


# -- Optuna ---------------------------------------------------------------------------------------


def sampled_cell(grid: Grid, params: dict[str, Any]) -> dict[str, Any]:
    """The grid cell of values Optuna proposed (axes it does not sample take the grid's first value)."""
    mix_ratio = params.get(PARAM_MIX_RATIO, (grid.axes.mix_ratio or [None])[0])
    return {
        "parts": params[PARAM_PARTS],
        "method": params[PARAM_METHOD],
        "lr": float(params[PARAM_LR]),
        "data_fraction": float(params.get(PARAM_DATA_FRACTION, grid.axes.data_fraction[0])),
        "mix_ratio": None if mix_ratio is None else float(mix_ratio),
        "seed": grid.axes.seed[0],
    }


def sampled_trial_config(grid: Grid, params: dict[str, Any]) -> TrialConfig:
    """The ``TrialConfig`` of values Optuna proposed (LoRA rank from ``lora_r`` for method lora)."""
    trial = trial_config(grid, sampled_cell(grid, params))
    if trial.method == "lora" and PARAM_LORA_R in params:
        trial = trial.changed(lora_r=int(params[PARAM_LORA_R]))
    return trial


def sampled_trial(grid: Grid, params: dict[str, Any], parent_run_id: str) -> tuple[TrialConfig, tuple | None]:
    """(trial with its child run, (run id, status) when it already finished) for proposed values."""
    plan = plan_children([sampled_trial_config(grid, params)], parent_run_id)
    if plan.done:
        trial, run_id, status = plan.done[0]
        return trial, (run_id, status)
    trial = plan.pending[0]
    TrialTracker(trial.tracking_uri, trial.run_id).set_tags({SEARCH_PARAMS_TAG: json.dumps(params, sort_keys=True)})
    return trial, None


def _domain(values: list | Range, log: bool = False):
    """A Tune search domain: a categorical choice of ``values``, or a (log-)uniform Range."""
    if isinstance(values, Range):
        return (tune.loguniform if log else tune.uniform)(values.low, values.high)
    return tune.choice(list(values))


def optuna_space(grid: Grid) -> dict[str, Any]:
    """The Tune search space of ``search.space``, each axis defaulting to the grid's own values; its
    keys are the params the sampled trial's run will carry (``contract.layout``)."""
    space, axes = grid.search.space, grid.axes
    lrs = axes.lr + (grid.methods.lora.lr or [])
    lr = space.lr or Range(low=min(lrs), high=max(lrs) * (1 + 1e-9))
    methods = space.method or axes.method
    result = {
        PARAM_PARTS: _domain(space.parts or axes.parts),
        PARAM_METHOD: _domain(methods),
        PARAM_LR: _domain(lr, log=True),
        PARAM_DATA_FRACTION: _domain(space.data_fraction or axes.data_fraction),
    }
    mix_ratio = space.mix_ratio or axes.mix_ratio
    if mix_ratio is not None:
        result[PARAM_MIX_RATIO] = _domain(mix_ratio)
    if "lora" in methods:
        result[PARAM_LORA_R] = _domain(space.lora_r or [grid.methods.lora.r])
    return result


def child_runs(tracking_uri: str, experiment: str, parent_run_id: str) -> list:
    """The trial runs of a sweep's parent run."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(
        all_runs(
            client,
            found.experiment_id,
            f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{KIND_TAG}` = '{TRIAL_KIND}'",
        )
    )


def sampled_runs(grid: Grid, parent_run_id: str) -> list[tuple[dict, Any]]:
    """(proposed values, run) of the Optuna trials this sweep has started, oldest first."""
    runs = [
        run for run in child_runs(grid.tracking_uri, grid.name, parent_run_id) if SEARCH_PARAMS_TAG in run.data.tags
    ]
    runs.sort(key=lambda run: run.info.start_time)
    return [(json.loads(run.data.tags[SEARCH_PARAMS_TAG]), run) for run in runs]


def resumed_study(grid: Grid, space: dict[str, Any], parent_run_id: str):
    """An in-memory Optuna study holding this sweep's finished trials; unfinished ones are queued first."""
    import optuna  # only an optuna search needs it (and Tune's wrapper, which imports it)
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=["maximize", "minimize"])
    distributions = OptunaSearch.convert_search_space(space)
    for params, run in sampled_runs(grid, parent_run_id):
        status = run.data.tags.get(STATUS_TAG)
        values = search_metrics(run.data.metrics)
        if status in DONE_STATUSES and values:
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=distributions, values=[values[ID_GAIN], values[WORST_OOD_DROP]]
                )
            )
        elif status != "failed":
            study.enqueue_trial(params)
    return storage


def optuna_done(grid: Grid, parent_run_id: str) -> list[tuple[TrialConfig, str, str]]:
    """(trial, run id, status) of the Optuna trials of this sweep that already finished."""
    return [
        (sampled_trial_config(grid, params), run.info.run_id, run.data.tags[STATUS_TAG])
        for params, run in sampled_runs(grid, parent_run_id)
        if run.data.tags.get(STATUS_TAG) in DONE_STATUSES
    ]


def optuna_setup(grid: Grid, parent_run_id: str, remaining: int, concurrency: int) -> tuple[dict, Any]:
    """(param space, TuneConfig) of an Optuna search with ``remaining`` trials left to run."""
    from ray.tune.search.optuna import OptunaSearch  # imports optuna: only an optuna search needs it

    space = optuna_space(grid)
    storage = resumed_study(grid, space, parent_run_id)
    told = len(storage.get_all_trials(storage.get_study_id_from_name(STUDY_NAME)))
    searcher = OptunaSearch(  # a resumed search seeds its sampler past the trials it already has
        metric=list(OBJECTIVES),
        mode=list(OBJECTIVES.values()),
        seed=grid.search.seed + told,
        storage=storage,
        study_name=STUDY_NAME,
    )
    return space, tune.TuneConfig(
        search_alg=searcher, num_samples=remaining, max_concurrent_trials=concurrency, reuse_actors=False
    )


# -- ASHA -----------------------------------------------------------------------------------------


class ForgettingAwareASHA(ASHAScheduler):
    """ASHA on ID gain over training steps; past ``max_ood_drop_pp`` a trial scores lowest and stops.

    Rungs sit at ``grace_steps`` x ``reduction_factor``^k steps; a trial that reaches a rung
    below the top 1 / ``reduction_factor`` of the trials recorded there is stopped, and so is
    any trial whose worst OOD drop exceeds the threshold at an evaluation from the first rung
    on. The last step is never a stop (the trial ends there anyway, and marks itself finished).
    Stopped trials are tagged ``early_stopped`` in MLflow with the reason. Every decision on an
    evaluation is posted to the sweep's decision board (``jobs.search_decisions``), which the
    trial waits on: a stopped trial ends itself, so Tune is told to let it run to that end.
    """

    def __init__(self, threshold: float | None, **settings: Any) -> None:
        super().__init__(**settings)
        self.threshold = threshold
        self.first_rung, self.last_step = settings["grace_period"], settings["max_t"]

    def decide(self, tune_controller, trial, result: dict) -> str:
        """ASHA's decision on one reported evaluation (STOP or CONTINUE); a stop is recorded in MLflow."""
        step = result.get(STEP)
        if step is None or TOTAL_STEPS in result or ID_GAIN not in result or result.get(EARLY_STOPPED):
            return self.CONTINUE  # only evaluations are decided on, not step-progress reports
        forgot = self.threshold is not None and result[WORST_OOD_DROP] > self.threshold
        action = super().on_trial_result(
            tune_controller, trial, {**result, ID_GAIN: FORGOT_SCORE} if forgot else result
        )
        if step >= self.last_step:
            return self.CONTINUE
        if forgot and step >= self.first_rung:
            action = self.STOP
        if action == self.STOP:
            record_search_stop(trial.config, result, forgot, self.threshold)
        return action

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = self.decide(tune_controller, trial, result)
        step = result.get(STEP)
        if not step or TOTAL_STEPS in result or result.get(EARLY_STOPPED) or "cell" not in trial.config:
            return action
        searched = TrialConfig.from_dict(trial.config["cell"]["trial"])
        posted = post_decision(searched.sweep, searched.trial_id, int(step), action == self.STOP)
        return self.CONTINUE if posted else action  # with a board, the trial stops itself after this step


def make_asha(grid: Grid) -> ForgettingAwareASHA:
    """The scheduler of an asha grid (threshold: ``search.max_ood_drop_pp``, else ``early_stop``'s)."""
    settings = grid.search
    threshold = settings.max_ood_drop_pp if settings.max_ood_drop_pp is not None else grid.max_ood_drop_pp
    return ForgettingAwareASHA(
        threshold,
        time_attr=STEP,
        metric=ID_GAIN,
        mode="max",
        max_t=grid.train.steps,
        grace_period=settings.grace_steps or grid.train.eval_every,
        reduction_factor=settings.reduction_factor,
        stop_last_trials=False,
    )


def record_search_stop(config: dict, result: dict, forgot: bool, threshold: float | None) -> None:
    """Tag the MLflow run of a trial the search stopped: ``early_stopped`` with the reason."""
    trial = TrialConfig.from_dict(config["cell"]["trial"])
    step = int(result[STEP])
    if forgot:
        reason = f"ASHA at step {step}: worst OOD drop {result[WORST_OOD_DROP]:.1f} pp beyond {threshold:g} pp"
    else:
        reason = f"ASHA at step {step}: ID gain {result[ID_GAIN]:+.1f} pp below the rung's cutoff"
    tracker = TrialTracker(trial.tracking_uri, trial.run_id)
    tracker.set_status("early_stopped", reason)
    tracker.client.set_terminated(trial.run_id, status="FINISHED")


# -- the sweep's entry points ---------------------------------------------------------------------


def plan_search(grid: Grid, trials: list[TrialConfig], parent_run_id: str) -> TrialPlan:
    """Which trials are done and which to run: the grid's cells, or for Optuna the finished samples."""
    if grid.search.method != "optuna":
        return plan_children(trials, parent_run_id)
    return TrialPlan(pending=[], done=optuna_done(grid, parent_run_id))


def trials_to_run(grid: Grid, plan: TrialPlan) -> int:
    """How many trials the search still starts (Optuna: num_samples minus the finished ones)."""
    if grid.search.method != "optuna":
        return len(plan.pending)
    return max(0, grid.search.num_samples - len(plan.done))


def search_trials(grid: Grid, parent_run_id: str) -> list[TrialConfig]:
    """Every trial of the search (for the summary table): the grid's cells, or the Optuna samples."""
    if grid.search.method != "optuna":
        return expand_trials(grid)
    trials = [sampled_trial_config(grid, params) for params, _ in sampled_runs(grid, parent_run_id)]
    return list({trial.trial_id: trial for trial in trials}.values())


def tag_parent_run(grid: Grid, trials: list[TrialConfig], parent_run_id: str) -> None:
    """Record the search method and the full grid's trial-steps (the compute reference) on the parent run."""
    full = sum(trial.steps for trial in trials)
    tags = {SEARCH_TAG: grid.search.method, FULL_GRID_STEPS_TAG: str(full)}
    MlflowClient(tracking_uri=grid.tracking_uri).log_batch(parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def run_search(
    grid: Grid, plan: TrialPlan, concurrency: int, parent_run_id: str, callbacks: list, driver_resources: dict
) -> int:
    """Run the search's pending trials with Ray Tune; returns how many failed."""
    filesystem, root = arrow_filesystem(grid.storage_uri)
    if grid.search.method == "optuna":
        param_space, tune_config = optuna_setup(grid, parent_run_id, trials_to_run(grid, plan), concurrency)
    else:
        cells = [{"trial": trial.to_dict(), "name": trial.name} for trial in plan.pending]
        param_space = {"cell": tune.grid_search(cells)}
        scheduler = make_asha(grid) if grid.search.method == "asha" else None
        tune_config = tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=False, scheduler=scheduler)
    trainable = tune.with_parameters(run_search_trial, grid=grid, parent_run_id=parent_run_id)
    tuner = tune.Tuner(
        tune.with_resources(trainable, driver_resources),
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name="tune",
            storage_path=f"{root}/{grid.name}",
            storage_filesystem=filesystem,
            callbacks=callbacks,
            verbose=0,
        ),
    )
    board = open_board(grid.name) if grid.search.method == "asha" else None
    try:
        results = tuner.fit()
    finally:
        if board is not None:
            close_board(board)
    return sum(1 for result in results if result.error is not None)
