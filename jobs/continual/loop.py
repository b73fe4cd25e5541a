"""What every Ray Train worker of a continual-learning trial runs: tasks one after another.

A continual trial (``TrialConfig.continual_tasks``) trains on task 0, then task 1, ... with the
single-task trial's machinery (``jobs.finetune.loop.TrialWorker``: collator, DeepSpeed engine,
data-parallel steps, suite evaluation, MLflow tracker). Per task it builds a fresh engine (AdamW
and a warm-up + decay schedule over that task's steps; steps = epochs x rows / batch, rows
including the replayed samples of earlier tasks), and after the task:

- **IncLoRA** (method ``lora``): the task's LoRA adapters are merged into the weights
  (``merge_and_unload``), and the next task gets new adapters on the merged model.
- **SeqFull** (method ``full``): the tuned parts simply carry over to the next task.

Then every rank evaluates the model on every task's test set (one row of the accuracy matrix,
``cl/acc/<task>``) and on the 2x2 suite; rank 0 logs them at the trial's global step and, after
the last task, ``cl/last/<task>``, ``cl/average_at/<task>``, ``cl/last`` and ``cl/average``
(``jobs.continual.metrics``) plus the matrix as ``continual/matrix.json``. Step 0 is the
zero-shot row. A checkpoint (the tensors the tasks can change, after the task, with the matrix
so far and the base's identity) is reported after every task, so a restarted trial resumes after
its last finished task: base + those tensors is the model after the task.

    ContinualWorker(trial).run()     # on every worker, from jobs.worker.trial_worker
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from contract.layout import (
    CONTINUAL_TASK,
    CONTINUAL_TASKS_DONE,
    MATRIX_ARTIFACT,
    RESUMED_TAG,
    dataset_metric,
    predictions_artifact,
    task_accuracy_metric,
)
from contract.reports import STEP
from jobs.checkpoints import BASE_KEY, TRAINER_STATE
from jobs.continual.metrics import continual_scores
from jobs.evaluate.suite_eval import DatasetEvaluator
from jobs.finetune.config import TrialConfig
from jobs.finetune.engine import build_engine, current_lr
from jobs.finetune.loop import TrialWorker, WindowStats
from recipes.data.continual import stage_training_table, task_names
from recipes.data.registry import dataset_name
from recipes.data.stream import TrainingStream
from recipes.methods import lora_target_modules, merge_lora
from recipes.parts import resolve_parts

log = logging.getLogger("forgetless.continual")

MODEL_STATE = "model_state.safetensors"
"""The tensors the tasks can change, after a task, inside a continual checkpoint (rank 0 writes it)."""


def stage_steps(rows: int, epochs: float, batch_size: int) -> int:
    """Optimizer steps of one task: ``epochs`` passes over ``rows`` questions (at least 1)."""
    return max(1, math.ceil(epochs * rows / batch_size))


class ContinualWorker(TrialWorker):
    """State of one worker of a running continual-learning trial."""

    def __init__(self, trial: TrialConfig) -> None:
        self.setup(trial)
        self.tasks = list(trial.continual_tasks)
        self.names = task_names(self.tasks)
        tests = [task.test for task in self.tasks]
        self.test_names = [dataset_name(test) for test in tests]
        if len(set(self.test_names)) != len(self.test_names):
            raise ValueError(f"continual tasks need test sets with distinct file names, got {self.test_names}")
        self.task_evaluator = DatasetEvaluator(tests, self.loaded.processor, **self.eval_settings())
        self.model = self.loaded.model
        self.matrix: list[list[float]] = []
        self.stage_ends: list[int] = []
        self.zero_shot_row: list[float] | None = None

    # -- training ---------------------------------------------------------------------------
    def train_task(self, stage: int, first_step: int) -> int:
        """Train on task ``stage`` (with replay); returns its number of optimizer steps."""
        trial = self.trial
        table = stage_training_table(self.tasks, stage, trial.replay_per_task, trial.seed)
        steps = stage_steps(table.num_rows, trial.continual_epochs[stage], trial.batch_size)
        self.stream = TrainingStream([(self.names[stage], table)], [1.0], seed=trial.seed + stage)
        self.loaded.model = self.model
        torch.manual_seed(trial.seed * 1000 + stage)
        self.engine, self.trainable = build_engine(trial.changed(steps=steps), self.loaded, self.world, self.use_gpu)
        if self.rank == 0:
            log.info(
                "task %d/%d %s: %d rows, %d steps", stage + 1, len(self.tasks), self.names[stage], table.num_rows, steps
            )
        window = WindowStats()
        for step in range(steps):
            started = time.perf_counter()
            loss, tokens = self.train_step(step)
            window.losses.append(loss)
            window.tokens += tokens
            window.seconds += time.perf_counter() - started
            if self.tracker and ((step + 1) % trial.log_every == 0 or step + 1 == steps):
                self.tracker.log(
                    {**window.metrics(current_lr(self.engine)), CONTINUAL_TASK: stage}, first_step + step + 1
                )
                window = WindowStats()
        module = self.engine.module
        self.engine.destroy()  # removes ZeRO's gradient hooks before the next task's engine adds its own
        self.model = merge_lora(module) if trial.method == "lora" else module
        self.engine = None
        return steps

    # -- evaluation -------------------------------------------------------------------------
    def task_accuracies(self) -> list[float] | None:
        """Rank 0: accuracy on every task's test set (one matrix row); other ranks: None."""
        result = self.task_evaluator.evaluate(self.model, self.rank, self.world)
        if result is None:
            return None
        if self.tracker:
            step = self.stage_ends[-1] if self.stage_ends else 0
            self.tracker.log_table(result.predictions, predictions_artifact(step, continual=True))
        return [result.metrics[dataset_metric(name)] for name in self.test_names]

    def log_row(self, step: int, row: list[float] | None, suite_result) -> dict[str, float]:
        """Rank 0: log one matrix row with the suite's metrics at ``step``; returns what was logged."""
        if self.rank != 0:
            return {}
        extra = {task_accuracy_metric(name): value for name, value in zip(self.names, row)}
        metrics, _ = self.checkpoint_metrics(step, suite_result, extra)
        return metrics

    def log_scores(self, step: int) -> dict[str, float]:
        """Rank 0, after the last task: Last, Average and the matrix artifact."""
        scores = continual_scores(self.matrix, self.names).metrics()
        if self.tracker:
            self.tracker.log(scores, step)
            record = {
                "tasks": self.names,
                "steps": self.stage_ends,
                "zero_shot": self.zero_shot_row,
                "matrix": self.matrix,
            }
            self.tracker.log_json(record, MATRIX_ARTIFACT)
        return scores

    # -- checkpoints ------------------------------------------------------------------------
    def changeable_names(self) -> list[str]:
        """Parameters a task can change: the trial's parts (SeqFull), the weights its adapters merge into (IncLoRA)."""
        trial, family = self.trial, self.loaded.family
        if trial.method == "lora":
            return [f"{name}.weight" for name in lora_target_modules(self.model, family, trial.parts)]
        return resolve_parts(self.model, family, trial.parts)

    def save(self, directory: Path, step: int) -> None:
        """Rank 0 writes the changeable tensors after the task and the matrix so far; other ranks nothing."""
        if self.rank != 0:
            return
        tensors = {name: self.model.get_parameter(name).detach().contiguous() for name in self.changeable_names()}
        save_file(tensors, directory / MODEL_STATE)
        state = {
            BASE_KEY: self.base_record(),
            STEP: step,
            "stage_ends": self.stage_ends,
            "matrix": self.matrix,
            "zero_shot_row": self.zero_shot_row,
            "trial": self.trial.to_dict(),
        }
        (directory / TRAINER_STATE).write_text(json.dumps(state))

    def load_state(self, directory: Path, state: dict) -> None:
        """Load the model after the checkpoint's last task (base + its tensors) and the matrix so far."""
        tensors = load_file(directory / MODEL_STATE)
        unknown = set(tensors) - set(self.changeable_names())
        if unknown:
            raise ValueError(f"{directory}: tensors the trial cannot change: {sorted(unknown)[:5]}")
        self.model.load_state_dict(tensors, strict=False)
        self.matrix, self.stage_ends = state["matrix"], state["stage_ends"]
        self.zero_shot_row = state["zero_shot_row"]

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        zero_shot = self.evaluate(0, self.model)  # the base model's suite result (shared cache)
        self.zero_shot = zero_shot.metrics if zero_shot else {}
        step = self.restore()
        if step > 0:
            if self.tracker:
                self.tracker.set_tags({RESUMED_TAG: str(step)})
        else:
            self.zero_shot_row = self.task_accuracies()
            metrics = self.log_row(0, self.zero_shot_row, zero_shot)
            self.report(0, {**metrics, STEP: 0}, checkpoint=False)
        for stage in range(len(self.stage_ends), len(self.tasks)):
            step += self.train_task(stage, step)
            self.stage_ends.append(step)
            suite_result = self.evaluate(step, self.model)
            row = self.task_accuracies()
            metrics = self.log_row(step, row, suite_result)
            if self.rank == 0:
                self.matrix.append(row)
                if stage + 1 == len(self.tasks):
                    metrics.update(self.log_scores(step))
            self.report(step, {**metrics, STEP: step, CONTINUAL_TASKS_DONE: float(stage + 1)}, checkpoint=True)
