"""WiSE-FT at a trial's last checkpoint: evaluate blends of its zero-shot and fine-tuned weights.

Weight-space ensembling (Wortsman et al., 2022) trades target-task gain for OOD accuracy
without training: for each weight ``alpha`` of ``trial.interpolate`` the tuned parameters are
set to ``(1 - alpha) * zero-shot + alpha * fine-tuned`` (0 = the zero-shot model, 1 = the
fine-tuned one, exactly), the 2x2 suite is evaluated, and the fine-tuned values are put back
before the checkpoint is saved. Only the trainable tensors are blended (for LoRA: the adapters,
whose zero-shot values are their initialisation, B = 0); frozen weights are the base model's in
both. Every worker takes part (each evaluates its shard); rank 0 logs, at the trial's last step:

    wiseft/<alpha>/acc/q/<quadrant>     accuracy of the blend per quadrant (percent)
    wiseft/<alpha>/delta/q/<quadrant>   its change vs zero-shot (pp)
    wiseft/<alpha>/acc/<dataset>        accuracy per suite dataset (percent)

with ``<alpha>`` written as trial names write shares (``0.25``, ``0.5``, ``1.0``):

    metrics = evaluate_interpolations(worker, step)     # inside TrialWorker.run, all ranks
"""

from __future__ import annotations

import torch

from contract.layout import interpolation_metric
from jobs.evaluate.suite_eval import delta_metrics
from jobs.finetune.trial_model import load_trial_model
from recipes.methods import apply_method


def blend(zero_shot: torch.Tensor, tuned: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * zero_shot + alpha * tuned``: exactly ``zero_shot`` at 0 and ``tuned`` at 1."""
    return (1 - alpha) * zero_shot + alpha * tuned


def zero_shot_weights(worker) -> dict[str, torch.Tensor]:
    """The trial's trainable tensors as they were before training (a fresh build of model and method)."""
    trial = worker.trial
    with torch.random.fork_rng():
        torch.manual_seed(trial.seed)  # the LoRA initialisation ``build_engine`` drew
        model, _ = apply_method(load_trial_model(trial).model, worker.loaded.family, trial.parts, trial.method_config)
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def evaluate_interpolations(worker, step: int) -> dict[str, float]:
    """Evaluate every blend of ``worker.trial.interpolate`` (all ranks); rank 0 logs and returns the metrics."""
    module = worker.engine.module
    trainable = {name: param for name, param in module.named_parameters() if param.requires_grad}
    tuned = {name: param.detach().clone() for name, param in trainable.items()}
    zero_shot = zero_shot_weights(worker)
    metrics: dict[str, float] = {}
    try:
        for alpha in worker.trial.interpolate:
            with torch.no_grad():
                for name, param in trainable.items():
                    param.copy_(blend(zero_shot[name].to(param.device, param.dtype), tuned[name], alpha))
            result = worker.evaluate(step)
            if result is not None:
                blended = {**result.metrics, **delta_metrics(result.metrics, worker.zero_shot)}
                metrics.update({interpolation_metric(alpha, key): value for key, value in blended.items()})
    finally:
        with torch.no_grad():
            for name, param in trainable.items():
                param.copy_(tuned[name])
    if worker.tracker and metrics:
        worker.tracker.log(metrics, step)
    return metrics
