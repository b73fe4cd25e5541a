"""The MLflow layout of a sweep: the one place that spells its run tags, metric names and labels.

A sweep is a parent run tagged ``forgetless.kind=sweep``; each trial is a child run tagged
``forgetless.kind=trial`` and ``mlflow.parentRunId``, with its state in ``forgetless.status``.
Every checkpoint evaluation logs accuracies in percent as ``acc/<dataset>`` and
``acc/q/<quadrant>`` with their change vs zero-shot as ``delta/q/<quadrant>``; step 0 is the
zero-shot model. The trial (``jobs``), the sweep (``orchestrator``), the report (``analysis``)
and the synthetic writer of the analysis tests all build names with this module, so they agree
by construction. It imports nothing, so every package can import it:

    from contract.layout import QUADRANTS, accuracy_metric, recipe_label
    accuracy_metric("ood_id")                 # "acc/q/ood_id"
    recipe_label("llm", "full", "1e-05")      # "llm · full · lr 1e-05"
"""

from __future__ import annotations

import re

LAYOUT_VERSION = 1
"""Version of this layout, tagged on every sweep and trial run (``LAYOUT_TAG``)."""

# -- quadrants -------------------------------------------------------------------------------------

QUADRANTS = ("id_id", "id_ood", "ood_id", "ood_ood")
"""The 2x2 ID/OOD matrix as ``<text>_<image>``: the target task first."""
TARGET_QUADRANT = "id_id"
"""The quadrant of the task being learned (ID text, ID images)."""
OOD_QUADRANTS = ("id_ood", "ood_id", "ood_ood")
"""The quadrants where forgetting shows (early stopping watches them)."""

# -- tags ------------------------------------------------------------------------------------------

KIND_TAG = "forgetless.kind"
"""Tells sweep (parent) runs from trial (child) runs: ``SWEEP_KIND`` or ``TRIAL_KIND``."""
SWEEP_KIND = "sweep"
TRIAL_KIND = "trial"
STATUS_TAG = "forgetless.status"
"""A trial's state, one of ``STATUSES``; on a sweep run, how the sweep ended."""
STATUSES = ("running", "finished", "early_stopped", "failed")
"""The values of ``STATUS_TAG`` on a trial run."""
DONE_STATUSES = ("finished", "early_stopped")
"""Trial states that count as done: a re-run skips them, the report analyses them."""
EARLY_STOP_TAG = "forgetless.early_stop_reason"
"""Why a trial was stopped early (set with status ``early_stopped``)."""
RESUMED_TAG = "forgetless.resumed_after_step"
"""Set each time a trial resumes from a checkpoint: the checkpoint's step."""
TRIALS_TAG = "forgetless.trials"
"""On a sweep run: how many trials the grid has."""
LAYOUT_TAG = "forgetless.layout_version"
"""On every sweep and trial run: the ``LAYOUT_VERSION`` it was written with."""
PARENT_TAG = "mlflow.parentRunId"
"""MLflow's own tag linking a trial run to its sweep run."""
SWEEP_TAG = "sweep"
"""The sweep (grid name) a run belongs to."""
TRIAL_ID_TAG = "trial_id"
"""A trial's stable id (the hash of its resolved settings)."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""MLflow's experiment tag naming the kind of work an experiment holds."""
EXPERIMENT_KIND = "custom_model_development"
"""A sweep's experiment holds model training, not GenAI traces."""

SEARCH_TAG = "forgetless.search"
"""On a sweep run: its search method (grid, asha or optuna)."""
FULL_GRID_STEPS_TAG = "forgetless.full_grid_trial_steps"
"""On a sweep run: the training steps the full grid would spend (an adaptive search's reference)."""
SEARCH_PARAMS_TAG = "forgetless.search_params"
"""On a sampled trial's run: the values its search proposed (JSON)."""

# -- metrics ---------------------------------------------------------------------------------------

DATASET_ACCURACY_PREFIX = "acc/"
QUADRANT_ACCURACY_PREFIX = "acc/q/"
QUADRANT_DELTA_PREFIX = "delta/q/"
QUADRANT_STDERR_PREFIX = "stderr/q/"


def dataset_metric(dataset: str) -> str:
    """Accuracy on one evaluation dataset, in percent: ``acc/<dataset>``."""
    return f"{DATASET_ACCURACY_PREFIX}{dataset}"


def accuracy_metric(quadrant: str) -> str:
    """Accuracy of a quadrant (the mean of its datasets), in percent: ``acc/q/<quadrant>``."""
    return f"{QUADRANT_ACCURACY_PREFIX}{quadrant}"


def stderr_metric(quadrant: str) -> str:
    """Standard error of a quadrant's accuracy, in percentage points: ``stderr/q/<quadrant>``.

    Each dataset's accuracy ``p`` over ``n`` questions has the binomial standard error
    ``sqrt(p (1 - p) / n)``; the quadrant, the mean of its ``k`` datasets, has
    ``sqrt(sum of their squares) / k``.
    """
    return f"{QUADRANT_STDERR_PREFIX}{quadrant}"


def delta_metric(quadrant: str) -> str:
    """Change of a quadrant's accuracy vs zero-shot, in percentage points: ``delta/q/<quadrant>``."""
    return f"{QUADRANT_DELTA_PREFIX}{quadrant}"


INTERPOLATION_PREFIX = "wiseft/"
"""First segment of a WiSE-FT blend's metric: ``wiseft/<alpha>/<suite metric>``."""
INTERPOLATION_METRIC = re.compile(r"^wiseft/(?P<alpha>[0-9.]+)/(?P<metric>.+)$")
"""How a blend's metric splits into its weight and the suite metric it blends."""


def interpolation_metric(alpha: float, metric: str) -> str:
    """``wiseft/0.25/acc/q/id_id``: suite metric ``metric`` of the blend with weight ``alpha``."""
    return f"{INTERPOLATION_PREFIX}{format_share(alpha)}/{metric}"


SEARCH_ID_GAIN = "search/id_gain"
"""Reported to Tune: the target quadrant's change vs zero-shot (pp), the searches' first objective."""
SEARCH_WORST_OOD_DROP = "search/worst_ood_drop"
"""Reported to Tune: how far the lowest OOD quadrant fell below zero-shot (pp), the second objective."""

SIGNALS = ("counting_bias", "classname_rate", "output_drift", "vision_probe")
"""Forgetting signals a trial can measure at its evaluations (``eval.signals``, ``jobs.evaluate.signals``)."""
SIGNAL_VALUES = {
    "counting_bias": ("counting_bias",),
    "classname_rate": ("classname_rate",),
    "output_drift": ("output_kl", "top1_agreement"),
    "vision_probe": ("vision_probe_acc",),
}
"""Signal -> the values it logs, each as ``signal_metric(value)``; ``early_stop.signal`` names one value."""
FALLING_SIGNAL_VALUES = ("top1_agreement", "vision_probe_acc")
"""Signal values that fall as a model forgets (a stop rule on them passes ``min``); the others rise (``max``)."""
SIGNAL_PREFIX = "signal/"
"""First segment of a signal's value: ``signal/<value>``."""
SIGNAL_TIME_PREFIX = "signal_time/"
"""First segment of a signal's cost: ``signal_time/<signal>``, seconds at that step."""


def signal_metric(value: str) -> str:
    """A forgetting signal's value at an evaluation: ``signal/output_kl``."""
    return f"{SIGNAL_PREFIX}{value}"


def signal_time_metric(signal: str) -> str:
    """Seconds one signal took at an evaluation: ``signal_time/output_drift``."""
    return f"{SIGNAL_TIME_PREFIX}{signal}"


TRAIN_LOSS = "train/loss"
"""Mean training loss over the steps since the last logged one."""
TRAIN_LR = "train/lr"
TRAIN_TOKENS_PER_S = "train/tokens_per_s"
TRAIN_SECONDS_PER_STEP = "train/seconds_per_step"
TRAIN_TRUNCATED_ROWS = "train/truncated_rows"
"""Training rows cut to ``max_seq_len`` so far, over all workers (``overlength: truncate`` only)."""
TIME_TRAIN_S = "time/train_s"
"""Seconds of training steps since the previous evaluation (logged at each evaluation step)."""
TIME_EVAL_S = "time/eval_s"
"""Seconds the evaluation at this step took, WiSE-FT blends and forgetting signals included (step 0: only the
signals on a zero-shot cache hit)."""
TIME_TRIAL_S = "time/trial_s"
"""Wall seconds of the trial's Ray Train run (start-up, training, evaluations, checkpoints, shutdown),
logged once at its last step; over the sum of ``time/train_s`` and ``time/eval_s`` it is the
sweep's overhead per trial (``benchmarks/sweep_overhead.py``)."""
TRAINABLE_PARAMETERS = "model/trainable_parameters"
TOTAL_PARAMETERS = "model/total_parameters"
FROZEN_TENSORS_CHANGED = "model/frozen_tensors_changed"
"""Frozen tensors that differ from the start of training, over all ranks (should be 0)."""

# -- continual learning ----------------------------------------------------------------------------

CONTINUAL_PREFIX = "cl/"
"""First segment of every continual-learning metric."""
CONTINUAL_TASK = "cl/task"
"""Index of the task being trained (logged with the training metrics)."""
CONTINUAL_TASKS_DONE = "cl/tasks_done"
CONTINUAL_LAST = "cl/last"
"""Mean accuracy over the tasks after the last one."""
CONTINUAL_AVERAGE = "cl/average"
"""Mean over stages of the accuracy on the tasks seen so far."""


def task_accuracy_metric(task: str) -> str:
    """Accuracy on a continual task's test set (a column of the accuracy matrix): ``cl/acc/<task>``."""
    return f"{CONTINUAL_PREFIX}acc/{task}"


def task_last_metric(task: str) -> str:
    """A task's accuracy after the last task: ``cl/last/<task>``."""
    return f"{CONTINUAL_PREFIX}last/{task}"


def task_average_metric(task: str) -> str:
    """Mean accuracy on tasks 0..k right after learning task k: ``cl/average_at/<task>``."""
    return f"{CONTINUAL_PREFIX}average_at/{task}"


# -- artifacts -------------------------------------------------------------------------------------

GRID_ARTIFACT = "grid.yaml"
"""On a sweep run: the grid file as the sweep read it, credentials redacted."""
TRIALS_ARTIFACT = "trials.csv"
"""On a sweep run: one row per trial of the grid (``TRIALS_COLUMNS``)."""
REPORT_ARTIFACT_DIR = "report"
"""On a sweep run: the report's files (``analysis.report``), figures under ``report/figures/``."""
MATRIX_ARTIFACT = "continual/matrix.json"
"""A continual trial's tasks, the step after each task, and its accuracy matrix."""


def predictions_artifact(step: int, continual: bool = False) -> str:
    """Per-question predictions of a checkpoint evaluation (parquet)."""
    folder = "continual/predictions" if continual else "predictions"
    return f"{folder}/step_{step:06d}.parquet"


# -- params ----------------------------------------------------------------------------------------
# A trial run's params are its settings (``jobs.finetune.config.TrialConfig``): every setting that
# changes its result under the setting's own name (``model``, ``steps``, ``zero_stage``, ...), plus
# the derived ones below. Code that reads params back names them with these constants.

PARAM_MODEL = "model"
PARAM_PARTS = "parts"
PARAM_METHOD = "method"
PARAM_LR = "lr"
"""The learning rate as ``format_lr`` writes it."""
PARAM_LORA_R = "lora_r"
PARAM_SEED = "seed"
PARAM_DATA_FRACTION = "data_fraction"
"""As ``format_share`` writes it."""
PARAM_MIX = "mix"
"""The mixed-in datasets as JSON: ``[{"dataset": ..., "ratio": ...}]``."""
PARAM_MIX_RATIO = "mix_ratio"
"""Their summed share, as ``format_share`` writes it."""
PARAM_DEEPSPEED = "deepspeed"
"""The user's DeepSpeed JSON, or ``zero_stage=<n>``."""
PARAM_SUITE = "suite"
PARAM_RECIPE = "recipe"
"""``recipe_label`` or ``continual_recipe_label``."""
PARAM_TRIAL_ID = "trial_id"
PARAM_TRIAL_NAME = "trial_name"
PARAM_REPLAY_PER_TASK = "replay_per_task"
PARAM_CONTINUAL_METHOD = "continual_method"
"""``inclora`` or ``seqfull``; only continual trials have it."""
PARAM_CONTINUAL_TASKS = "continual_tasks"
"""The continual tasks' names in training order, as JSON."""
PARAM_CONTINUAL_EPOCHS = "continual_epochs"
"""Epochs per continual task, as JSON."""
DERIVED_PARAMS = (
    PARAM_LR,
    PARAM_MIX,
    PARAM_MIX_RATIO,
    PARAM_DATA_FRACTION,
    PARAM_DEEPSPEED,
    PARAM_SUITE,
    PARAM_RECIPE,
    PARAM_TRIAL_ID,
    PARAM_TRIAL_NAME,
    PARAM_CONTINUAL_METHOD,
    PARAM_CONTINUAL_TASKS,
    PARAM_CONTINUAL_EPOCHS,
)
"""The params a trial run carries that are not one of its settings as it is (or are written differently)."""
TRIALS_COLUMNS = (
    PARAM_TRIAL_ID,
    "name",
    PARAM_PARTS,
    PARAM_METHOD,
    PARAM_LR,
    PARAM_DATA_FRACTION,
    PARAM_SEED,
    PARAM_MIX_RATIO,
    PARAM_RECIPE,
)
"""Columns of ``TRIALS_ARTIFACT``: ``name`` is the trial's name, the rest its params."""


def format_lr(lr: float) -> str:
    """The ``lr`` param: ``1e-05`` style, exact to 7 digits (``1.5e-05``, never ``2e-05``)."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def format_share(value: float) -> str:
    """The ``data_fraction`` and ``mix_ratio`` params: short exact text, ``1.0``, ``0.025``, ``0.3``."""
    return repr(round(float(value), 6))


def recipe_label(parts: str, method: str, lr: str) -> str:
    """The ``recipe`` param of a single-task trial: ``llm · full · lr 1e-05``."""
    return f"{parts} · {method} · lr {lr}"


def continual_recipe_label(strategy: str, parts: str, lr: str, replay: int = 0) -> str:
    """The ``recipe`` param of a continual trial: ``seqfull · llm · lr 1e-06 · replay 20``."""
    label = f"{strategy} · {parts} · lr {lr}"
    return f"{label} · replay {replay}" if replay else label
