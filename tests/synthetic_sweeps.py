"""python -m tests.synthetic_sweeps --experiment NAME [--tracking-uri URI] [--kind table1|fraction|mix] [--seeds N]

Logs a synthetic sweep to MLflow in exactly the layout the orchestrator writes (a parent run
tagged forgetless.kind=sweep; one child run per trial with the contract's tags, params and
per-checkpoint metrics, step 0 = zero-shot). The numbers follow the paper: `table1` has the
seven recipes of its Table 1, `fraction` the data fractions of Table 2c, `mix` the mixing
ratios of Figure 4b. Use it to try `python -m analysis.report` without running a sweep; the
analysis tests use `log_sweep` to write runs with known numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisError
from contract.defaults import DEFAULT_TRACKING_URI
from contract.layout import (
    EARLY_STOP_TAG,
    KIND_TAG,
    LAYOUT_TAG,
    LAYOUT_VERSION,
    PARENT_TAG,
    QUADRANTS,
    SIGNAL_VALUES,
    STATUS_TAG,
    STATUSES,
    SWEEP_KIND,
    SWEEP_TAG,
    TARGET_QUADRANT,
    TIME_EVAL_S,
    TRAIN_LOSS,
    TRIAL_ID_TAG,
    TRIAL_KIND,
    accuracy_metric,
    dataset_metric,
    delta_metric,
    recipe_label,
    signal_metric,
    signal_time_metric,
    stderr_metric,
)

SUITE_DATASETS = {
    "id_id": ("toy-target-val",),
    "id_ood": ("toy-styles", "digits"),
    "ood_id": ("toy-questions",),
    "ood_ood": ("toy-text-qa",),
}
"""Dataset names per quadrant logged as acc/<dataset> (each equals its quadrant's accuracy)."""
_MLFLOW_STATUS = {"finished": "FINISHED", "early_stopped": "FINISHED", "failed": "FAILED"}


@dataclass(frozen=True)
class SyntheticTrial:
    """One trial to log: its settings and its accuracy per checkpoint."""

    parts: str
    """Trainable parts, e.g. `llm`."""
    method: str
    """`full` or `lora`."""
    lr: str
    """Learning rate as the orchestrator logs it, e.g. `1e-05`."""
    accuracy: Mapping[str, Sequence[float]]
    """Quadrant -> accuracy (percent) per checkpoint; index 0 is the zero-shot model. A quadrant
    may be left out (a run with missing metrics)."""
    seed: int = 0
    """Seed param."""
    data_fraction: float = 1.0
    """Share of target data."""
    mix_ratio: float = 0.0
    """Share of samples from mixed-in sources."""
    mix: tuple[str, ...] = ()
    """Mixed-in dataset names."""
    status: str = "finished"
    """forgetless.status tag: running, finished, early_stopped or failed."""
    eval_every: int = 50
    """Training steps between checkpoints."""
    early_stop_reason: str = "OOD accuracy fell more than max_ood_drop_pp"
    """forgetless.early_stop_reason tag (logged only when status is early_stopped)."""
    trial_id: str = field(default="")
    """12-hex id; derived from the name when empty."""
    questions: int | None = None
    """Questions per quadrant: when given, ``stderr/q/<quadrant>`` is logged as the binomial
    standard error of each accuracy over that many questions."""
    signals: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Forgetting signal value (``output_kl``, ...) -> its value per checkpoint, logged as ``signal/<value>``
    with 0.5 s of cost per signal (``signal_time/<signal>``) and 10 s of evaluation (``time/eval_s``)."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise AnalysisError(f"trial {self.name}: status must be one of {STATUSES}, got {self.status!r}")
        unknown = set(self.accuracy) - set(QUADRANTS)
        if unknown:
            raise AnalysisError(f"trial {self.name}: accuracy has unknown quadrants {sorted(unknown)}")
        lengths = {len(values) for values in self.accuracy.values()}
        if len(lengths) > 1 or 0 in lengths:
            raise AnalysisError(f"trial {self.name}: every quadrant needs the same number (>= 1) of checkpoints")
        if self.eval_every <= 0:
            raise AnalysisError(f"trial {self.name}: eval_every must be > 0, got {self.eval_every}")

    @property
    def name(self) -> str:
        """Trial name in the orchestrator's pattern, e.g. `llm-full-lr1e-05-f1.0-s0`."""
        mix = f"-m{self.mix_ratio}" if self.mix_ratio else ""
        return f"{self.parts}-{self.method}-lr{self.lr}-f{self.data_fraction}{mix}-s{self.seed}"

    @property
    def checkpoints(self) -> int:
        """Number of evaluated checkpoints (zero-shot included)."""
        return len(next(iter(self.accuracy.values()), ()))

    def params(self, model: str) -> dict[str, str]:
        """The run params, as strings, with the contract's keys."""
        steps = (self.checkpoints - 1) * self.eval_every
        params = {
            "model": model,
            "parts": self.parts,
            "method": self.method,
            "lr": self.lr,
            "data_fraction": str(self.data_fraction),
            "seed": str(self.seed),
            "mix": json.dumps([{"dataset": name, "ratio": self.mix_ratio} for name in self.mix]),
            "mix_ratio": str(self.mix_ratio),
            "dataset": "toy-imagenet-vqa",
            "steps": str(steps),
            "batch_size": "16",
            "warmup_ratio": "0.1",
            "schedule": "cosine",
            "zero_stage": "2",
            "workers": "2",
            "eval_mode": "logits",
            "suite": "toy",
            "recipe": recipe_label(self.parts, self.method, self.lr),
            "trial_id": self.resolved_trial_id,
            "trial_name": self.name,
        }
        if self.method == "lora":
            params.update(lora_r="8", lora_alpha="16", lora_dropout="0.05")
        return params

    @property
    def resolved_trial_id(self) -> str:
        """The trial id, or a stable 12-hex id derived from the name."""
        return self.trial_id or f"{zlib.crc32(self.name.encode()):08x}{len(self.name):04x}"

    def metrics(self, timestamp_ms: int) -> list[Metric]:
        """acc/<dataset>, acc/q/<quadrant>, delta/q/<quadrant> (and stderr/q/<quadrant> with
        ``questions``) per checkpoint; train/loss between."""
        logged = []
        for index in range(self.checkpoints):
            step = index * self.eval_every
            for quadrant, values in self.accuracy.items():
                logged.append(Metric(accuracy_metric(quadrant), values[index], timestamp_ms, step))
                logged.append(Metric(delta_metric(quadrant), values[index] - values[0], timestamp_ms, step))
                if self.questions:
                    share = values[index] / 100
                    error = 100 * math.sqrt(share * (1 - share) / self.questions)
                    logged.append(Metric(stderr_metric(quadrant), error, timestamp_ms, step))
                logged.extend(
                    Metric(dataset_metric(dataset), values[index], timestamp_ms, step)
                    for dataset in SUITE_DATASETS[quadrant]
                )
            for value, series in self.signals.items():
                logged.append(Metric(signal_metric(value), series[index], timestamp_ms, step))
            measured = {name for name, values in SIGNAL_VALUES.items() if set(values) & set(self.signals)}
            logged.extend(Metric(signal_time_metric(name), 0.5, timestamp_ms, step) for name in sorted(measured))
            if self.signals:
                logged.append(Metric(TIME_EVAL_S, 10.0, timestamp_ms, step))
            if step:
                logged.append(Metric(TRAIN_LOSS, 2.0 / math.sqrt(step), timestamp_ms, step))
        return logged


def log_sweep(
    tracking_uri: str,
    experiment: str,
    trials: Iterable[SyntheticTrial],
    *,
    sweep_name: str | None = None,
    model: str = "toy-qwen2.5-vl",
    artifact_location: str | None = None,
    start_time_ms: int | None = None,
) -> str:
    """Log a parent run and one child run per trial; returns the parent run id."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found is not None
        else client.create_experiment(experiment, artifact_location=artifact_location)
    )
    name = sweep_name or experiment
    start = start_time_ms if start_time_ms is not None else int(time.time() * 1000)
    parent = client.create_run(
        experiment_id,
        start_time=start,
        run_name=name,
        tags={SWEEP_TAG: name, KIND_TAG: SWEEP_KIND, LAYOUT_TAG: str(LAYOUT_VERSION)},
    )
    parent_id = parent.info.run_id
    for offset, trial in enumerate(trials, start=1):
        tags = {
            SWEEP_TAG: name,
            TRIAL_ID_TAG: trial.resolved_trial_id,
            PARENT_TAG: parent_id,
            KIND_TAG: TRIAL_KIND,
            STATUS_TAG: trial.status,
            LAYOUT_TAG: str(LAYOUT_VERSION),
        }
        if trial.status == "early_stopped":
            tags[EARLY_STOP_TAG] = trial.early_stop_reason
        run = client.create_run(experiment_id, start_time=start + offset, run_name=trial.name, tags=tags)
        params = [Param(key, value) for key, value in trial.params(model).items()]
        client.log_batch(run.info.run_id, metrics=trial.metrics(start + offset), params=params)
        if trial.status in _MLFLOW_STATUS:
            client.set_terminated(run.info.run_id, _MLFLOW_STATUS[trial.status])
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


ZERO_SHOT = {"id_id": 80.11, "id_ood": 86.80, "ood_id": 53.35, "ood_ood": 61.82}
"""Zero-shot accuracies of Qwen2.5-VL-3B in the paper (ImageWikiQA for OOD^T-ID^I)."""

PAPER_TABLE1 = (
    # parts, method, lr, final ID, (delta id_ood, delta ood_id, delta ood_ood), speed
    ("llm", "full", "1e-05", 91.56, (-8.10, -16.56, -33.64), 3.5),
    ("llm", "lora", "1e-04", 91.08, (1.20, 0.46, -2.97), 2.5),
    ("llm", "full", "1e-06", 91.37, (1.07, 1.06, -1.51), 2.0),
    ("vision", "full", "1e-06", 90.96, (0.60, -1.36, 0.49), 2.0),
    ("vision", "full", "1e-05", 91.08, (-4.30, -9.90, -2.76), 3.5),
    ("projector", "full", "1e-06", 86.86, (0.30, 0.26, 0.05), 1.2),
    ("projector", "full", "1e-05", 89.68, (-0.80, -0.64, -0.26), 2.5),
)
"""The seven recipes of the paper's Table 1 (deltas on ID^T-OOD^I are not in the paper: made up)."""


def curve(
    start: float, end: float, checkpoints: int, speed: float, wobble_pp: float, rng: random.Random
) -> list[float]:
    """Saturating path from start to end (exact at both ends) with a little noise between."""
    if checkpoints < 2:
        return [start] * checkpoints
    scale = 1.0 - math.exp(-speed)
    path = [
        start + (end - start) * (1.0 - math.exp(-speed * k / (checkpoints - 1))) / scale for k in range(checkpoints)
    ]
    return [
        value + (rng.uniform(-wobble_pp, wobble_pp) if 0 < k < checkpoints - 1 else 0.0) for k, value in enumerate(path)
    ]


def trajectory(
    final_id: float, ood_deltas: Sequence[float], *, checkpoints: int, speed: float, seed: int, key: str
) -> dict[str, list[float]]:
    """Accuracy per checkpoint for all quadrants: ID saturates fast, OOD changes follow later."""
    rng = random.Random(zlib.crc32(f"{key}/{seed}".encode()))
    seed_shift = 0.25 * seed
    paths = {TARGET_QUADRANT: curve(ZERO_SHOT[TARGET_QUADRANT], final_id - seed_shift, checkpoints, speed, 0.12, rng)}
    for quadrant, delta in zip(QUADRANTS[1:], ood_deltas):
        paths[quadrant] = curve(
            ZERO_SHOT[quadrant], ZERO_SHOT[quadrant] + delta + seed_shift, checkpoints, speed * 0.6, 0.2, rng
        )
    return paths


def paper_table1_trials(seeds: Sequence[int] = (0,), checkpoints: int = 9) -> list[SyntheticTrial]:
    """The seven recipes of Table 1, one trial per seed."""
    return [
        SyntheticTrial(
            parts,
            method,
            lr,
            seed=seed,
            accuracy=trajectory(
                final, deltas, checkpoints=checkpoints, speed=speed, seed=seed, key=f"{parts}{method}{lr}"
            ),
        )
        for parts, method, lr, final, deltas, speed in PAPER_TABLE1
        for seed in seeds
    ]


PAPER_FRACTIONS = {"1e-06": (91.42, 90.18, 86.99, 82.03), "1e-05": (91.60, 89.08, 87.46, 81.82)}
"""Table 2c: final ID accuracy at data fractions 100%, 25%, 2.5%, 0.25% per lr."""
FRACTIONS = (1.0, 0.25, 0.025, 0.0025)


def paper_fraction_trials(seeds: Sequence[int] = (0,), checkpoints: int = 6) -> list[SyntheticTrial]:
    """LLM full fine-tuning at two lrs and four data fractions (Table 2c)."""
    trials = []
    for lr, finals in PAPER_FRACTIONS.items():
        forgetting = 1.0 if lr == "1e-06" else 6.0
        for fraction, final in zip(FRACTIONS, finals):
            deltas = tuple(-forgetting * (0.5 + fraction) * k for k in (0.6, 1.0, 1.4))
            trials.extend(
                SyntheticTrial(
                    "llm",
                    "full",
                    lr,
                    seed=seed,
                    data_fraction=fraction,
                    accuracy=trajectory(
                        final, deltas, checkpoints=checkpoints, speed=3.0, seed=seed, key=f"{lr}{fraction}"
                    ),
                )
                for seed in seeds
            )
    return trials


PAPER_MIX = {0.0: (91.42, -10.40), 0.1: (91.30, -6.10), 0.3: (91.05, -3.20), 0.5: (90.50, -1.00), 0.7: (90.20, -1.10)}
"""Figure 4b (shape only): mix ratio -> (final ID accuracy, delta OOD^T-ID^I)."""


def paper_mix_trials(seeds: Sequence[int] = (0,), checkpoints: int = 6) -> list[SyntheticTrial]:
    """LLM full fine-tuning at lr 1e-06 mixed with a broad instruction set at five ratios (Figure 4b)."""
    return [
        SyntheticTrial(
            "llm",
            "full",
            "1e-06",
            seed=seed,
            mix_ratio=ratio,
            mix=("llava-665k",) if ratio else (),
            accuracy=trajectory(
                final, (0.8, ood_id, -1.2), checkpoints=checkpoints, speed=3.0, seed=seed, key=f"mix{ratio}"
            ),
        )
        for ratio, (final, ood_id) in PAPER_MIX.items()
        for seed in seeds
    ]


KINDS = {"table1": paper_table1_trials, "fraction": paper_fraction_trials, "mix": paper_mix_trials}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.synthetic_sweeps", description=__doc__.split("\n\n")[1])
    parser.add_argument("--experiment", required=True, help="MLflow experiment to log into")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    parser.add_argument("--kind", choices=sorted(KINDS), default="table1", help="which paper result to imitate")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per setting")
    args = parser.parse_args(argv)
    trials = KINDS[args.kind](seeds=tuple(range(args.seeds)))
    parent_id = log_sweep(args.tracking_uri, args.experiment, trials)
    print(
        f"logged {len(trials)} trials under parent run {parent_id} in {args.tracking_uri} "
        f"(experiment {args.experiment})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
