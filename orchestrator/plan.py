"""python -m orchestrator.plan GRID.yaml [--no-check-paths] [--max-trials N] [--gpu NAME] [--mfu SHARE]

What ``python -m orchestrator.sweep GRID.yaml --dry-run`` prints: the validated grid's trials and
the resources they need, with nothing started (this module's command prints the same).

    from orchestrator.plan import cluster_resources, render_plan
    print(render_plan(grid, expand_trials(grid), cluster_resources()))

A trial needs ``workers_per_trial`` x (``cpus_per_worker`` CPUs, ``gpus_per_worker`` GPUs): its
Ray Train workers. The Tune trial that drives them reserves nothing of its own here (Ray
Train's controller takes no CPU), so the sweep should give it none either, or a 2-worker trial
would not fit a 2-core laptop. The concurrency is how many such trials fit at once in the
cluster's resources, capped by the grid's ``resources.max_concurrent_trials``. A Hub model that
is not in this machine's Hugging Face cache gets a note: each node downloads it once, before its
workers load it (with ``HF_HUB_OFFLINE=1`` the grid is refused instead, exit status 2).

Cluster resources come from the Ray cluster ``RAY_ADDRESS`` names, or else from this machine
(``os.cpu_count()`` CPUs, ``torch.cuda.device_count()`` GPUs) without starting Ray. An
unreachable cluster, or a worker no node (or autoscaler node type) can ever hold, is an error
(exit status 2) before anything runs; with ``--no-check-paths`` this machine is not held
against the grid (it is meant for another one).

With a GPU kind (``--gpu NAME`` or the grid's ``resources.gpu``) the plan also prices every trial
kind on it (``orchestrator.grid_pricing``: memory per worker, seconds per step, GPU-hours,
checkpoint storage). A grid of GPU workers (``resources.gpus_per_worker`` > 0) whose trials do not
fit that GPU's memory is refused (exit status 2), one line per trial kind with what to change;
the sweep refuses it the same way before Ray starts.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping, Sequence

import ray
import torch

from contract.exits import EXIT_BAD_INPUT
from contract.layout import format_lr, format_share
from jobs.finetune.config import TrialConfig
from orchestrator.capacity import DEFAULT_MAX_TRIALS, capacity_problems, node_shapes
from orchestrator.expand import expand_trials
from orchestrator.gpus import GPUS, gpu_kind
from orchestrator.grid import GridError, load_grid
from orchestrator.grid_pricing import fit_problems, price_grid, render_prices
from orchestrator.grid_schema import Grid
from orchestrator.pricing import DEFAULT_MFU
from recipes.common.input_errors import input_boundary
from recipes.common.reachability import preflight_problem
from recipes.common.redaction import redact, redact_uri
from recipes.common.text_table import text_table
from recipes.models.catalog import TOY_BASE, TOY_INIT, ModelNotCachedError, resolve_model_dir

PATH_PROBLEMS = ("no such file", "no such dataset", "no such directory", "not in the local Hugging Face cache")
"""Texts of the problems that only say a file is missing on this machine."""

TABLE_COLUMNS = ("name", "id", "parts", "method", "lr", "data fraction", "seed", "mix ratio", "steps", "batch")
"""Columns of the trial table."""


def trial_resources(grid: Grid) -> dict[str, float]:
    """CPUs and GPUs one trial's workers take: ``{"CPU": c, "GPU": g}``."""
    workers = grid.resources.workers_per_trial
    return {"CPU": workers * grid.resources.cpus_per_worker, "GPU": workers * grid.resources.gpus_per_worker}


def trials_that_fit(needed: Mapping[str, float], available: Mapping[str, float]) -> int:
    """How many trials needing ``needed`` fit in ``available`` at once."""
    counts = [math.floor(available.get(kind, 0.0) / amount + 1e-9) for kind, amount in needed.items() if amount > 0]
    return max(0, min(counts)) if counts else 0


def max_concurrent_trials(grid: Grid, cluster: Mapping[str, float]) -> int:
    """Trials that run at once on ``cluster`` (``{"CPU": n, "GPU": m}``), capped by the grid's limit."""
    fit = trials_that_fit(trial_resources(grid), cluster)
    return min(fit, grid.max_concurrent_trials) if grid.max_concurrent_trials is not None else fit


def local_resources() -> dict[str, float]:
    """This machine's CPUs and GPUs, without starting Ray."""
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def cluster_resources() -> dict[str, float]:
    """The Ray cluster's resources when ``RAY_ADDRESS`` is set (connecting to it), else this machine's."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        return local_resources()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    return {key: float(value) for key, value in ray.cluster_resources().items()}


def add_max_trials_flag(parser: argparse.ArgumentParser) -> None:
    """``--max-trials N``: the most trials a grid may expand to."""
    parser.add_argument(
        "--max-trials",
        type=int,
        default=DEFAULT_MAX_TRIALS,
        metavar="N",
        help=f"refuse grids that expand to more than N trials (default {DEFAULT_MAX_TRIALS})",
    )


def cluster_problems(grid: Grid, *, check_local: bool = True, tracking: bool = False) -> list[str]:
    """Why the grid cannot run here: an unreachable Ray cluster (or tracking server, with ``tracking``),
    or a trial no node of the cluster can ever hold (checked on this machine only with ``check_local``)."""
    problem = preflight_problem(grid.tracking_uri if tracking else None)
    if problem:
        return [problem]
    cluster_resources()  # connects to the cluster RAY_ADDRESS names
    if not os.environ.get("RAY_ADDRESS") and not check_local:  # no cluster named: this machine is not the one
        return []
    return capacity_problems(grid.resources, node_shapes())


def trial_row(trial: TrialConfig) -> tuple[str, ...]:
    """One line of the trial table."""
    return (
        trial.name,
        trial.trial_id,
        trial.parts,
        f"lora r{trial.lora_r}" if trial.method == "lora" else trial.method,
        format_lr(trial.lr),
        format_share(trial.data_fraction),
        str(trial.seed),
        format_share(trial.mix_ratio),
        f"{len(trial.continual_tasks)} tasks" if trial.continual else str(trial.steps),
        str(trial.batch_size),
    )


def _amount(value: float, unit: str) -> str:
    number = f"{value:g}"
    return f"{number} {unit}" if value == 1 else f"{number} {unit}s"


def _cpus_gpus(resources: Mapping[str, float], times: float = 1) -> str:
    return f"{_amount(times * resources.get('CPU', 0.0), 'CPU')}, {_amount(times * resources.get('GPU', 0.0), 'GPU')}"


def resource_lines(grid: Grid, trial_count: int, cluster: Mapping[str, float]) -> list[str]:
    """What a trial needs, what all of them would, what the cluster has, and how many run at once."""
    workers = grid.resources
    needed = trial_resources(grid)
    per_worker = {"CPU": workers.cpus_per_worker, "GPU": workers.gpus_per_worker}
    concurrent = max_concurrent_trials(grid, cluster)
    lines = [
        f"per trial: {_amount(workers.workers_per_trial, 'worker')} x ({_cpus_gpus(per_worker)}) = {_cpus_gpus(needed)}",
        f"total: {trial_count} trials, {_cpus_gpus(needed, trial_count)} if all ran at once",
        f"cluster: {_cpus_gpus(cluster)}",
    ]
    if concurrent == 0:
        return lines + [
            "max concurrency: 0: one trial needs more than this cluster has; an autoscaling cluster adds "
            "nodes when the sweep asks, a fixed one never runs it"
        ]
    cap = f" (grid max_concurrent_trials {grid.max_concurrent_trials})" if grid.max_concurrent_trials else ""
    return lines + [f"max concurrency: {concurrent} trial{'s' if concurrent != 1 else ''} at once{cap}"]


def search_line(grid: Grid) -> str:
    """How the sweep picks its trials, in one line."""
    search = grid.search
    if search.method == "asha":
        threshold = search.max_ood_drop_pp if search.max_ood_drop_pp is not None else grid.max_ood_drop_pp
        stop = f"; a trial past {threshold:g} pp of OOD drop stops at its rung" if threshold is not None else ""
        return (
            f"search asha: rungs from step {search.grace_steps or grid.train.eval_every}, the best "
            f"1/{search.reduction_factor:g} by ID gain go on{stop}"
        )
    if search.method == "optuna":
        return f"search optuna: {search.num_samples} trials sampled over search.space (the grid's cells below)"
    return "search grid: every trial below"


def render_plan(grid: Grid, trials: Sequence[TrialConfig], cluster: Mapping[str, float]) -> str:
    """The dry-run text: the sweep, its trial table, and the resources the trials need."""
    train = grid.train
    mix = ", ".join(f"{item.dataset} {'(grid.mix_ratio)' if item.ratio is None else item.ratio}" for item in train.mix)
    if grid.continual is not None:
        continual = grid.continual
        sequence = " -> ".join(task if isinstance(task, str) else task.name for task in continual.tasks)
        epochs = "/".join(f"{epochs:g}" for epochs in continual.epoch_counts)
        replay = ", ".join(str(count) for count in continual.replay_per_task)
        data = f"continual learning on {sequence} (epochs {epochs}; replay per task {replay})"
    else:
        data = f"train on {train.dataset}" + (f" mixed with {mix}" if mix else "")
    lines = [
        f"sweep {grid.name} ({grid.source}): {len(trials)} trials",
        f"model {grid.model}; {data}",
        f"eval suite {grid.eval.suite} ({grid.eval.mode}); checkpoints in {grid.sweep_storage}",
        f"MLflow {redact_uri(grid.tracking_uri)}, experiment {grid.experiment}",
        search_line(grid),
        "",
        text_table(TABLE_COLUMNS, [trial_row(trial) for trial in trials]),
        "",
        *resource_lines(grid, len(trials), cluster),
        *download_lines(grid.model),
    ]
    return "\n".join(lines)


def download_lines(model: str) -> list[str]:
    """A note when ``model`` is a Hub model that is not in this machine's cache: the nodes download it."""
    if model in (TOY_BASE, TOY_INIT) or "@" in model:
        return []  # built on first use, never here
    try:
        resolve_model_dir(model)
    except ModelNotCachedError as error:
        return ["", f"note: {error} (unless HF_HUB_OFFLINE=1)"]
    except (OSError, ValueError):
        return []  # a missing local directory: grid validation reports it
    return []


def gpu_prices(
    grid: Grid, trials: Sequence[TrialConfig], gpu_name: str | None = None, mfu: float = DEFAULT_MFU
) -> tuple[str, list[str]]:
    """The price table on the GPU kind ``gpu_name`` (else the grid's ``resources.gpu``) and, for a grid of
    GPU workers, one problem per trial kind that does not fit it; ("", []) when no GPU kind is known."""
    name = gpu_name or grid.resources.gpu
    if name is None or not trials:
        return "", []
    try:
        kinds = price_grid(grid, trials, gpu_kind(name), mfu)
    except (FileNotFoundError, ValueError) as error:
        return f"price: not priced: {error}", []
    problems = fit_problems(kinds)
    if grid.resources.gpus_per_worker > 0:
        return render_prices(kinds), problems
    notes = [f"  (CPU workers; on {name}) {text}" for text in problems]
    return "\n".join([render_prices(kinds), *notes]), []


def add_price_flags(parser: argparse.ArgumentParser) -> None:
    """``--gpu NAME`` and ``--mfu SHARE``: price the trials on a GPU kind."""
    parser.add_argument(
        "--gpu",
        choices=tuple(GPUS),
        help="price every trial kind on this GPU (memory per worker, s/step, GPU-hours); default: resources.gpu",
    )
    parser.add_argument(
        "--mfu",
        type=float,
        default=DEFAULT_MFU,
        metavar="SHARE",
        help=f"model FLOPs utilisation the time estimate assumes, in (0, 1] (default {DEFAULT_MFU})",
    )


@input_boundary
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.plan", description="Validate a grid file and show its trials."
    )
    parser.add_argument("grid", help="grid YAML file (see grids/)")
    parser.add_argument(
        "--no-check-paths",
        action="store_true",
        help="do not look for the model, dataset, suite and DeepSpeed files on this machine (a grid for another one)",
    )
    add_max_trials_flag(parser)
    add_price_flags(parser)
    args = parser.parse_args(argv)
    if not 0 < args.mfu <= 1:
        print(f"error: --mfu must be in (0, 1], got {args.mfu:g}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        grid = load_grid(args.grid, check_paths=not args.no_check_paths, max_trials=args.max_trials)
    except GridError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        if not args.no_check_paths and any(text in problem for problem in error.problems for text in PATH_PROBLEMS):
            print("(a grid for another machine? --no-check-paths checks everything but its files)", file=sys.stderr)
        return EXIT_BAD_INPUT
    problems = cluster_problems(grid, check_local=not args.no_check_paths)
    if problems:
        print(f"error: {grid.source}:\n" + "\n".join(f"  {text}" for text in problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    trials = expand_trials(grid)
    print(render_plan(grid, trials, cluster_resources()))
    prices, unfit = gpu_prices(grid, trials, args.gpu, args.mfu)
    if prices:
        print("\n" + prices)
    if unfit:
        print(f"error: {grid.source}: trials do not fit:\n" + "\n".join(f"  {text}" for text in unfit), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
