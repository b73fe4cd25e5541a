"""What ``python -m jobs.finetune`` checks of its flags before Ray starts, beyond each flag's own value.

A flag's type and range are checked where the trial's settings are defined; what needs the
machine is checked here, with the same texts as a grid's problems (``jobs.input_checks``): the
model is known (and its config says how deep ``vision.last<N>`` may go), the dataset, mixed-in
datasets, suite, DeepSpeed JSON and continual task files exist (a local data file's schema and a
sample of its rows are read, as a sweep reads them), and no URI has an unknown scheme or credentials:

    problems = trial_flag_problems(trial)   # ["--dataset: no such file 'x.jsonl' (relative to ...)", ...]
"""

from __future__ import annotations

from jobs.finetune.config import TrialConfig
from jobs.input_checks import dataset_problems, deepspeed_file_problems, model_problems, parts_problems, suite_problems
from recipes.common.reachability import tracking_scheme_problem
from recipes.common.redaction import credential_problem
from recipes.common.uri_checks import scheme_of


def _storage_problem(storage: str) -> str | None:
    if scheme_of(storage) not in (None, "s3"):
        return f"--storage: expected a local path or s3://bucket/prefix, got {scheme_of(storage)}://..."
    return credential_problem("--storage", storage)


def _tracking_problem(uri: str) -> str | None:
    scheme = tracking_scheme_problem(uri)
    return f"--tracking-uri: {scheme}" if scheme else credential_problem("--tracking-uri", uri)


def trial_flag_problems(trial: TrialConfig) -> list[str]:
    """Every problem of a trial's names, files and URIs on this machine (empty when it can start)."""
    problems = model_problems(trial.model, True, "--model") + parts_problems("--parts", trial.parts, trial.model, True)
    if not trial.continual:
        problems += dataset_problems("--dataset", trial.dataset, True)
    for mix in trial.mix:
        problems += dataset_problems("--mix", mix.dataset, True)
    for task in trial.continual_tasks:
        problems += dataset_problems(f"--continual-tasks {task.name}", task.train, True)
        problems += dataset_problems(f"--continual-tasks {task.name}", task.test, True)
    problems += suite_problems(trial.eval_suite, True, "--eval-suite")
    if trial.deepspeed_config:
        problems += deepspeed_file_problems(trial.deepspeed_config, "--deepspeed-config")
    problems += [text for text in (_storage_problem(trial.storage), _tracking_problem(trial.tracking_uri)) if text]
    return list(dict.fromkeys(problems))
