"""The keys of what a trial reports to Ray Train and Tune, which the sweep's driver reads back.

A trial's workers report at every evaluation (``STEP``, the metrics of ``contract.layout``,
``EARLY_STOPPED``) and, between evaluations, every ``log_every`` steps, only their progress
(``STEP`` and ``TOTAL_STEPS``); the searches add ``TRIAL_NAME`` and ``TRIAL_STATUS``:

    from contract.reports import STEP, TOTAL_STEPS
    ray.train.report({STEP: done, TOTAL_STEPS: trial.steps})
"""

STEP = "step"
"""Optimizer steps done when the report was made (also Tune's time attribute for ASHA)."""
TOTAL_STEPS = "total_steps"
"""The trial's step count; only in step-progress reports, which carry no metrics."""
EARLY_STOPPED = "early_stopped"
"""1.0 when the trial stops at this report (early stopping or a search's decision), else 0.0."""
TRIAL_NAME = "trial_name"
"""The trial's readable name (``TrialConfig.name``), for the sweep's progress lines."""
TRIAL_STATUS = "trial_status"
"""How a searched trial ended: one of ``contract.layout.STATUSES``."""
