"""What every Ray Train worker of a trial runs: the DeepSpeed fine-tune with checkpoint evaluation.

Each worker builds the model from the recipe, the training stream from the data recipe and a
DeepSpeed engine; it resumes from Ray Train's latest checkpoint when there is one. Step s of
the stream covers samples [s * batch, (s + 1) * batch) whatever the number of workers, so a
resumed or re-scaled trial sees the same data. At step 0, every ``eval_every`` steps and the
last step, all workers evaluate a shard of the 2x2 suite, rank 0 logs to MLflow, and every
worker reports the metrics to Ray Train, with its part of a checkpoint every
``checkpoint_every`` steps (default: at every evaluation), at the last step and on an early stop.
In an adaptive search (ASHA), rank 0 then waits for the search's decision on the evaluation
(``jobs.search_decisions``), and a trial the search stopped ends there like an early stop:

    TrialWorker(trial).run()     # on every worker, from jobs.worker.trial_worker

Between evaluations, every ``log_every`` steps, every worker reports just the step to Ray Train
(``TOTAL_STEPS``), which the sweep prints as the trial's progress.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist

from contract.layout import (
    FROZEN_TENSORS_CHANGED,
    OOD_QUADRANTS,
    RESUMED_TAG,
    TIME_EVAL_S,
    TIME_TRAIN_S,
    TOTAL_PARAMETERS,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_SECONDS_PER_STEP,
    TRAIN_TOKENS_PER_S,
    TRAIN_TRUNCATED_ROWS,
    TRAINABLE_PARAMETERS,
    delta_metric,
    predictions_artifact,
    signal_metric,
)
from contract.reports import EARLY_STOPPED, STEP, TOTAL_STEPS
from jobs.checkpoints import (
    BASE_KEY,
    TRAINER_STATE,
    base_record,
    check_base,
    load_trainable_state,
    read_trainer_state,
    save_trainable_state,
)
from jobs.evaluate.image_features import FrozenImageFeatures
from jobs.evaluate.signals import TrialSignals
from jobs.evaluate.suite_eval import SuiteEvaluator, SuiteResult, delta_metrics
from jobs.evaluate.zero_shot import ZeroShotCache, zero_shot_key
from jobs.finetune.config import TrialConfig
from jobs.finetune.engine import build_engine, current_lr
from jobs.finetune.interpolate import evaluate_interpolations
from jobs.finetune.loss import supervised_loss
from jobs.finetune.tracking import TrialTracker
from jobs.finetune.trial_model import load_trial_model
from jobs.search_decisions import find_board, wait_for_decision
from recipes.common import storage
from recipes.data.collate import RecordCollator
from recipes.data.encoded_store import DEFAULT_STORE_BYTES
from recipes.data.stream import build_train_stream
from recipes.data.suites import load_suite

log = logging.getLogger("forgetless.finetune")


def eval_steps(trial: TrialConfig) -> list[int]:
    """Steps after which the suite is evaluated: 0, every eval_every, and the last step."""
    return sorted({0, *range(trial.eval_every, trial.steps, trial.eval_every), trial.steps})


def checkpoint_steps(trial: TrialConfig) -> set[int]:
    """Evaluation steps that also save a checkpoint: every ``checkpoint_every`` steps and the last."""
    every = trial.checkpoint_every or trial.eval_every
    return {step for step in eval_steps(trial) if step > 0 and (step % every == 0 or step == trial.steps)}


def early_stop_reason(deltas: dict[str, float], threshold: float | None) -> str | None:
    """Why a trial must stop (an OOD quadrant fell more than ``threshold`` points), or None."""
    if threshold is None:
        return None
    fallen = [f"{q} {deltas[delta_metric(q)]:+.1f} pp" for q in OOD_QUADRANTS if deltas[delta_metric(q)] < -threshold]
    return f"OOD drop beyond {threshold:g} pp vs zero-shot: {', '.join(fallen)}" if fallen else None


def signal_stop_reason(metrics: dict[str, float], trial: TrialConfig) -> str | None:
    """Why a trial must stop (its ``early_stop_signal`` passed a bound), or None."""
    name = trial.early_stop_signal
    value = metrics.get(signal_metric(name)) if name else None
    if value is None:
        return None
    if trial.early_stop_signal_max is not None and value > trial.early_stop_signal_max:
        return f"signal {name} {value:.4g} above its max {trial.early_stop_signal_max:g}"
    if trial.early_stop_signal_min is not None and value < trial.early_stop_signal_min:
        return f"signal {name} {value:.4g} below its min {trial.early_stop_signal_min:g}"
    return None


def signal_steps(trial: TrialConfig) -> set[int]:
    """Steps between evaluations where the signals alone are measured (every ``signal_every`` steps)."""
    if not trial.signal_every or not trial.signals:
        return set()
    return set(range(trial.signal_every, trial.steps, trial.signal_every)) - set(eval_steps(trial))


def frozen_fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """Per frozen tensor, (sum, sum of squares) in float64 of this rank's data (its ZeRO-3 shard).

    Compared at the start and the end of training, it shows whether anything touched weights
    that the recipe froze, without keeping a copy of them.
    """
    rows = [
        torch.stack([data.double().sum(), data.double().square().sum()])
        for data in (getattr(p, "ds_tensor", p.data) for p in module.parameters() if not p.requires_grad)
    ]
    return torch.stack(rows).cpu() if rows else torch.zeros(0, 2, dtype=torch.float64)


@dataclass
class WindowStats:
    """Training statistics accumulated between two logging points."""

    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    def metrics(self, lr: float) -> dict[str, float]:
        steps = max(1, len(self.losses))
        return {
            TRAIN_LOSS: sum(self.losses) / steps,
            TRAIN_LR: lr,
            TRAIN_TOKENS_PER_S: self.tokens / self.seconds if self.seconds else 0.0,
            TRAIN_SECONDS_PER_STEP: self.seconds / steps,
        }


@dataclass
class PhaseClock:
    """Seconds spent in each phase of the training steps (collate, forward, backward, optimizer).

    Off in trials; ``benchmarks/train_throughput.py`` sets ``TrialWorker.phases`` to one. On a GPU
    it synchronizes around each phase, so the figures are the phases' own time, not launch time.
    """

    synchronize: bool = False
    """Wait for the device's queued work at each phase boundary (GPU)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Phase name -> accumulated seconds."""

    @contextmanager
    def timed(self, phase: str):
        if self.synchronize:
            torch.cuda.synchronize()
        started = time.perf_counter()
        yield
        if self.synchronize:
            torch.cuda.synchronize()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started


class TrialWorker:
    """State of one worker of a running trial."""

    phases: PhaseClock | None = None
    """Where ``train_step`` times its phases, when set (benchmarks)."""
    image_features: FrozenImageFeatures | None = None
    """The suite's image features, kept between evaluations when the trial trains no part of the image path."""

    def __init__(self, trial: TrialConfig) -> None:
        self.setup(trial)
        self.stream = build_train_stream(trial.dataset, trial.data_fraction, list(trial.mix), trial.seed)
        self.engine, self.trainable = build_engine(trial, self.loaded, self.world, self.use_gpu)
        self.frozen_at_start = frozen_fingerprint(self.engine.module)
        if not self.sharded:
            self.image_features = FrozenImageFeatures.for_model(self.loaded.model, self.loaded.family)
        self.signals = self.trial_signals()
        self.search_board = find_board(trial.sweep)  # set in an adaptive search: it decides after each evaluation
        torch.manual_seed(trial.seed * 1000 + self.rank)

    def setup(self, trial: TrialConfig) -> None:
        """What every kind of trial worker needs: rank, base model, collator, suite evaluator, tracker."""
        context = ray.train.get_context()
        self.trial = trial
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.use_gpu = trial.gpus_per_worker > 0
        self.loaded = load_trial_model(trial)  # its precision, attention kernel and pixel bounds
        self.fingerprint = self.loaded.fingerprint
        self.sharded = trial.zero_stage == 3 and self.world > 1  # every rank must run the same modules
        self.collate = RecordCollator(
            self.loaded.processor,
            with_answers=True,
            always_image=self.sharded,
            store_bytes=DEFAULT_STORE_BYTES,
            max_length=trial.max_seq_len,
            overlength=trial.overlength,
        )
        self.truncated_rows = 0  # rows cut to max_seq_len so far, all ranks (``train_step``)
        self.evaluator = SuiteEvaluator(load_suite(trial.eval_suite), self.loaded.processor, **self.eval_settings())
        self.tracker = TrialTracker(trial.tracking_uri, trial.run_id) if self.rank == 0 and trial.run_id else None
        self.zero_shot: dict[str, float] = {}

    def eval_settings(self) -> dict:
        """Keyword settings of the trial's evaluators."""
        trial = self.trial
        return {
            "mode": trial.eval_mode,
            "batch_size": trial.eval_batch_size,
            "max_new_tokens": trial.max_new_tokens,
            "synced_gpus": self.sharded,
            "store_bytes": DEFAULT_STORE_BYTES,
        }

    def trial_signals(self) -> TrialSignals | None:
        """Rank 0's forgetting signals (``trial.signals``), the base's drift reference cached under the storage."""
        if self.rank != 0 or not self.trial.signals:
            return None
        return TrialSignals(
            self.trial.signals,
            self.evaluator.suite,
            self.loaded.processor,
            self.fingerprint,
            storage.join(self.trial.storage, "signal-base"),
            batch_size=self.trial.eval_batch_size,
            load_base=lambda: load_trial_model(self.trial).model,
        )

    def measure_signals(self, step: int) -> dict[str, float]:
        """Rank 0: the signals of the engine's model at ``step`` (step 0: the base, which builds the drift reference)."""
        if self.signals is None:
            return {}
        model = self.engine.module
        return self.signals.measure(model, base_model=model if step == 0 else None)

    def signal_check(self, step: int) -> tuple[dict[str, float], bool]:
        """Signals alone at ``step`` (rank 0 measures and logs them); returns (values, whether to stop), all ranks agree."""
        values = self.measure_signals(step)
        decision = [signal_stop_reason(values, self.trial) if self.rank == 0 else None]
        if self.tracker and values:
            self.tracker.log(values, step)
        if self.world > 1:
            dist.broadcast_object_list(decision, src=0)
        return values, decision[0] is not None

    # -- data -------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[list[dict]]:
        """This rank's micro-batches of optimizer step ``step`` (0-based)."""
        trial, size = self.trial, self.trial.micro_batch_size
        start = step * trial.batch_size
        return [
            self.stream.rows(start + micro * self.world * size + self.rank * size, size)
            for micro in range(trial.grad_accumulation)
        ]

    # -- training ---------------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[float, int]:
        """One optimizer step; returns (mean loss over all ranks, tokens over all ranks)."""
        losses, tokens = [], 0
        for rows in self.micro_batches(step):
            with self.timed("collate"):
                batch = {k: v.to(self.engine.device) for k, v in self.collate(rows).items()}
                if self.trial.bf16 and "pixel_values" in batch:
                    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
            with self.timed("forward"):
                loss = supervised_loss(self.engine, batch)
            with self.timed("backward"):
                self.engine.backward(loss)
            with self.timed("optimizer"):
                self.engine.step()
            losses.append(loss.detach().float())
            tokens += int(batch["attention_mask"].sum())
        counts = torch.tensor([float(tokens), float(self.collate.truncated)])
        totals = torch.cat([torch.stack(losses).mean().reshape(1).cpu(), counts]).to(self.engine.device)
        if self.world > 1:
            dist.all_reduce(totals)
        self.truncated_rows = int(totals[2].item())
        return totals[0].item() / self.world, int(totals[1].item())

    def timed(self, phase: str):
        """A context that adds its time to ``phases`` under ``phase`` (nothing when ``phases`` is unset)."""
        return self.phases.timed(phase) if self.phases is not None else nullcontext()

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, step: int, model: torch.nn.Module | None = None) -> SuiteResult | None:
        """Evaluate ``model`` (default: the engine's) on the suite (all ranks); step 0 comes from the cache."""
        model = self.engine.module if model is None else model
        if step > 0:
            return self.evaluator.evaluate(model, self.rank, self.world, self.image_features)
        cache = ZeroShotCache(storage.join(self.trial.storage, "zero-shot"))
        key = zero_shot_key(self.fingerprint, self.evaluator.suite, self.evaluator)
        cached = [cache.get(key) if self.rank == 0 else None]
        if self.world > 1:
            flag = [cached[0] is not None]
            dist.broadcast_object_list(flag, src=0)
            if flag[0]:
                return cached[0]
        elif cached[0] is not None:
            return cached[0]
        result = self.evaluator.evaluate(model, self.rank, self.world, self.image_features)
        return cache.put(key, result) if self.rank == 0 else None

    def frozen_tensors_changed(self) -> float:
        """How many frozen tensors differ from the start of training, over all ranks (should be 0)."""
        changed = (frozen_fingerprint(self.engine.module) != self.frozen_at_start).any(dim=1).sum().double()
        if self.world > 1:
            changed = changed.to(self.engine.device)
            dist.all_reduce(changed)
        return float(changed)

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, directory: Path, step: int) -> None:
        """Write this rank's share of the resumable state: trainable tensors, their optimizer and schedule.

        Frozen weights are the base's and are not saved, under any of their names (a frozen output
        head tied to the embedding included: ``trainable_state_only``); ``trainer_state.json`` names
        the base (``base_record``), which every reader checks.
        """
        save_trainable_state(self.engine, directory)
        torch.save(torch.get_rng_state(), directory / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            state = {
                "step": step,
                "data_position": step * self.trial.batch_size,
                "trial": self.trial.to_dict(),
                BASE_KEY: self.base_record(),
            }
            (directory / TRAINER_STATE).write_text(json.dumps(state))

    def restore(self) -> int:
        """Load Ray Train's latest checkpoint, if any (``load_state``); returns the step to continue after."""
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as directory:
            state = read_trainer_state(directory)
            found = TrialConfig.from_dict(state["trial"]).trial_id
            if found != self.trial.trial_id:
                raise RuntimeError(f"checkpoint {checkpoint.path} belongs to trial {found}, not {self.trial.trial_id}")
            check_base(checkpoint.path, state, self.loaded)
            self.load_state(Path(directory), state)
        log.info("trial %s resumed after step %d", self.trial.name, state["step"])
        return state["step"]

    def base_record(self) -> dict[str, str]:
        """The base model's identity (name, content hash), hashed on first use."""
        if not hasattr(self, "_base_record"):
            self._base_record = base_record(self.loaded.name, self.loaded.path)
        return self._base_record

    def load_state(self, directory: Path, state: dict) -> None:
        """Load this rank's share of a checkpoint written by ``save`` (its ``trainer_state.json`` is ``state``)."""
        load_trainable_state(self.engine, directory)
        rng = directory / f"rng_rank{self.rank}.pt"
        if rng.is_file():
            torch.set_rng_state(torch.load(rng, weights_only=True))

    def stopped_by_search(self, step: int) -> bool:
        """Whether the sweep's search stopped the trial at evaluation ``step`` (rank 0 waits for it; all ranks agree)."""
        if self.search_board is None:
            return False
        decision = [wait_for_decision(self.search_board, self.trial.trial_id, step) if self.rank == 0 else None]
        if self.world > 1:
            dist.broadcast_object_list(decision, src=0)
        return bool(decision[0])

    def report(self, step: int, metrics: dict[str, float], checkpoint: bool) -> None:
        """Report metrics (and this rank's checkpoint files) to Ray Train; every rank calls it."""
        if not checkpoint:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="forgetless-ckpt-") as directory:
            self.save(Path(directory), step)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    # -- the loop ---------------------------------------------------------------------------
    def checkpoint_metrics(
        self, step: int, result: SuiteResult | None, extra: dict[str, float] | None = None
    ) -> tuple[dict[str, float], str | None]:
        """Rank 0: log an evaluation to MLflow; returns (metrics to report, early-stop reason)."""
        if self.rank != 0:
            return {}, None
        metrics = {**result.metrics, **delta_metrics(result.metrics, self.zero_shot), **(extra or {})}
        reason = (
            early_stop_reason(metrics, self.trial.max_ood_drop_pp) or signal_stop_reason(metrics, self.trial)
            if step > 0
            else None
        )
        if self.tracker:
            self.tracker.log(metrics, step)
            self.tracker.log_table(result.predictions, predictions_artifact(step))
            if reason:
                self.tracker.set_status("early_stopped", reason)
        return metrics, reason

    def run(self) -> None:
        trial = self.trial
        start = self.restore()
        if self.tracker and start > 0:
            self.tracker.set_tags({RESUMED_TAG: str(start)})
        if self.tracker and start == 0:
            self.tracker.log(
                {TRAINABLE_PARAMETERS: self.trainable.trainable, TOTAL_PARAMETERS: self.trainable.total}, step=0
            )
        evaluations, checkpoints, signal_only = eval_steps(trial), checkpoint_steps(trial), signal_steps(trial)
        evaluating = time.perf_counter()
        zero_shot = self.evaluate(0)  # every rank takes part; a cache hit after the first trial
        self.zero_shot = zero_shot.metrics if zero_shot else {}
        if start == 0:
            signals = self.measure_signals(0)
            metrics, _ = self.checkpoint_metrics(
                0, zero_shot, {**signals, TIME_EVAL_S: time.perf_counter() - evaluating}
            )
            self.report(0, {**metrics, STEP: 0}, checkpoint=False)
        window, training = WindowStats(), 0.0
        for step in range(start, trial.steps):
            started = time.perf_counter()
            loss, tokens = self.train_step(step)
            window.losses.append(loss)
            window.tokens += tokens
            window.seconds += time.perf_counter() - started
            training += time.perf_counter() - started
            done = step + 1
            if self.tracker and (done % trial.log_every == 0 or done in evaluations):
                truncation = {TRAIN_TRUNCATED_ROWS: self.truncated_rows} if trial.max_seq_len else {}
                self.tracker.log_soon({**window.metrics(current_lr(self.engine)), **truncation}, done)
                window = WindowStats()
            if done % trial.log_every == 0 and done not in evaluations:
                ray.train.report({STEP: done, TOTAL_STEPS: trial.steps})  # every rank: Ray Train syncs them
            signals, signal_stop = self.signal_check(done) if done in signal_only else ({}, False)
            if done in evaluations or signal_stop:  # a signal past its bound: evaluate the suite and stop here
                evaluating = time.perf_counter()
                result = self.evaluate(done)
                integrity = {FROZEN_TENSORS_CHANGED: self.frozen_tensors_changed()}
                signals = signals or self.measure_signals(done)
                metrics, reason = self.checkpoint_metrics(done, result, {**integrity, **signals})
                decision = [reason]
                if self.world > 1:
                    dist.broadcast_object_list(decision, src=0)
                stop = decision[0] is not None
                if trial.interpolate and (stop or done == trial.steps):
                    evaluate_interpolations(self, done)
                if self.tracker:
                    self.tracker.log({TIME_TRAIN_S: training, TIME_EVAL_S: time.perf_counter() - evaluating}, done)
                training = 0.0
                self.report(
                    done, {**metrics, STEP: done, EARLY_STOPPED: float(stop)}, checkpoint=stop or done in checkpoints
                )
                if stop:
                    return
                if done < trial.steps and self.stopped_by_search(done):  # tagged early_stopped by the search
                    self.report(done, {**metrics, STEP: done, EARLY_STOPPED: 1.0}, checkpoint=done not in checkpoints)
                    return
