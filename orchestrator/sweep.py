"""python -m orchestrator.sweep GRID.yaml [--dry-run] [--no-report] [--no-check-paths] [--max-trials N]

The product's front door: a grid file becomes validated trials, Ray Tune runs them (each trial a
Ray Train + DeepSpeed fine-tune evaluated on the 2x2 suite at every checkpoint), MLflow gets one
parent run per sweep and one child run per trial, and the analysis report is written at the end.

    python -m orchestrator.sweep grids/demo.yaml --dry-run      # the trial table and resources
    python -m orchestrator.sweep grids/demo.yaml                # local Ray, sqlite MLflow, ./sweeps
    ray job submit --working-dir . -- python -m orchestrator.sweep grids/paper-table1.yaml

It connects to the cluster in ``RAY_ADDRESS`` (or the one ``ray job submit`` runs it on) and
starts a local Ray otherwise. Each trial asks for ``workers_per_trial`` workers of
``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs, so as many trials run at once as the
cluster holds (``resources.max_concurrent_trials`` caps it; an autoscaling cluster grows to fit
the cap). Running the same grid again resumes: finished trials are skipped, unfinished ones
continue from their last checkpoint, and no MLflow run is duplicated. Ctrl-C stops cleanly.
Exit status: 0 when every trial finished (or stopped early by ``early_stop``), 1 when a trial
failed, 2 for an invalid grid (or an unreachable Ray cluster or MLflow server, trials no node
can ever hold, or trials whose estimated memory does not fit the grid's ``resources.gpu``
(``orchestrator.pricing``): all found before any trial or MLflow run is created), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pyarrow as pa
import ray
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisError
from analysis.report import write_report as write_analysis_report
from contract.defaults import DEFAULT_REPORTS_DIR
from contract.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from contract.layout import DONE_STATUSES, TARGET_QUADRANT, accuracy_metric, delta_metric
from jobs.finetune.config import TrialConfig
from jobs.trial import find_trial_run
from orchestrator.capacity import capacity_problems, node_shapes
from orchestrator.expand import expand_trials
from orchestrator.grid import Grid, GridError, load_grid
from orchestrator.grid_pricing import step_costs
from orchestrator.mlflow_bookkeeping import close_parent_run, open_parent_run, parent_experiment_id, runs_page_hint
from orchestrator.plan import (
    add_max_trials_flag,
    cluster_problems,
    cluster_resources,
    gpu_prices,
    max_concurrent_trials,
    render_plan,
)
from orchestrator.progress import SummaryRow, SweepProgress, summary_table, worst_ood
from orchestrator.search import plan_search, run_search, search_trials, tag_parent_run, trials_to_run
from recipes.common.input_errors import input_boundary
from recipes.common.reachability import preflight_problem
from recipes.common.redaction import install_log_redaction, redact, redact_uri
from recipes.data.continual import load_train_table
from recipes.data.readers import read_records_sample
from recipes.data.registry import resolve_dataset
from recipes.data.schema import RecordFormatError, image_count_problem
from recipes.data.suites import SuiteError, load_suite
from recipes.models import ModelNotCachedError, resolve_model_dir
from recipes.models.catalog import model_family

TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20, "node:__internal_head__": 0.001}
"""What a Tune trial itself holds: no CPU (its Ray Train workers ask for theirs), a little memory,
and a place on the head node. The trial driver and the Ray Train controller it starts (which Ray
puts on the driver's node) must outlive the worker nodes: when a spot GPU node is reclaimed, Ray
Train restarts the trial's workers from their last checkpoint, but only if the controller
survives. ``node:__internal_head__`` is the resource Ray gives the head node alone."""


def check_signal_rows(trials: list[TrialConfig]) -> None:
    """Raise SuiteError when a trial's suite has no rows for one of its ``eval.signals`` (the trial would
    fail on it after its start-up and zero-shot evaluation)."""
    from jobs.evaluate.signals import SignalRows  # torch: imported only when a grid is checked

    for name in sorted({trial.eval_suite for trial in trials}):
        signals = sorted({signal for trial in trials if trial.eval_suite == name for signal in trial.signals})
        if signals:
            try:
                SignalRows.of_suite(load_suite(name), signals)
            except ValueError as error:
                raise SuiteError(str(error)) from None


def check_data(trials: list[TrialConfig], every_row: bool = False) -> None:
    """Validate every dataset the trials use before any compute: its schema and a sample of its rows.

    A parquet file's sample is a few of its row groups (``readers.read_records_sample``), so the check
    stays cheap at ImageNet scale and on object storage; ``every_row`` reads and checks every row.

    Raises RecordFormatError (or SuiteError, FileNotFoundError) naming the file and its bad rows,
    also for a row with more images than the family of a trial's model takes (LLaVA-1.5: one), and
    SuiteError for a suite without the rows a trial's forgetting signal reads.
    """

    def checked(dataset: str) -> pa.Table:
        return read_records_sample(resolve_dataset(dataset), every_row=every_row)

    used: dict[str, list[tuple[str, pa.Table]]] = {}  # model -> (file, table) of every dataset it sees
    for trial in trials:
        used.setdefault(trial.model, [])
    for name in sorted({trial.eval_suite for trial in trials}):
        suite = load_suite(name)
        tables = [(str(dataset), checked(dataset)) for _, dataset in suite.entries()]
        for trial in trials:
            if trial.eval_suite == name:
                used[trial.model] += tables
    single = [trial for trial in trials if not trial.continual]
    check_signal_rows(single)
    training = {trial.dataset for trial in single} | {m.dataset for trial in single for m in trial.mix}
    loaded = {name: checked(name) for name in sorted(training)}
    for trial in single:
        used[trial.model] += [(name, loaded[name]) for name in (trial.dataset, *(m.dataset for m in trial.mix))]
    tasks = {task for trial in trials for task in trial.continual_tasks}
    task_tables = {}
    for task in sorted(tasks, key=lambda task: task.name):
        task_tables[task] = [(task.train, load_train_table(task)), (task.test, checked(task.test))]
    for trial in trials:
        used[trial.model] += [table for task in trial.continual_tasks for table in task_tables[task]]
    for model, tables in used.items():
        family = model_family(model)
        if family is None or family.max_images_per_row is None:
            continue
        for path, table in tables:
            problem = image_count_problem(table, family.max_images_per_row)
            if problem:
                raise RecordFormatError(path, problem=f"{problem}, but model {model!r} ({family.name}) takes at most "
                                                   f"{family.max_images_per_row} per row")  # fmt: skip


def prepare_shared_inputs(trials: list[TrialConfig], cpu_workers: bool) -> None:
    """Build what every trial shares (toy and shape models; for ``cpu_workers``, DeepSpeed's CPU
    collective op) once, here, before trials start.

    A Hub model that is not cached here is left to the workers' nodes: each downloads it once.
    """
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    if cpu_workers and not Path(extensions).is_dir():
        print("building DeepSpeed's CPU collective op (once per machine, about 30 s on 2 cores) ...", flush=True)
    if cpu_workers:
        from jobs.finetune.engine import build_cpu_comm_op  # DeepSpeed: imported only when trials run

        build_cpu_comm_op()
    for model in sorted({trial.model for trial in trials}):
        try:
            resolve_model_dir(model)
        except ModelNotCachedError as error:
            print(f"note: {error}", file=sys.stderr)


def summary_rows(tracking_uri: str, trials: list[TrialConfig]) -> list[SummaryRow]:
    """Each trial's final state, read back from MLflow."""
    client = MlflowClient(tracking_uri=tracking_uri)
    rows = []
    for trial in trials:
        found = find_trial_run(trial)
        if not found:
            rows.append(SummaryRow(trial.name, "not started", None, None, None, "-"))
            continue
        run = client.get_run(found[0])
        metrics = run.data.metrics
        rows.append(
            SummaryRow(
                trial.name,
                found[1],
                metrics.get(accuracy_metric(TARGET_QUADRANT)),
                metrics.get(delta_metric(TARGET_QUADRANT)),
                worst_ood(metrics),
                found[0],
            )
        )
    return rows


def write_report(grid: Grid, parent_run_id: str) -> None:
    """The analysis report of the sweep, logged on its parent run; problems are warnings here."""
    out_dir = Path(DEFAULT_REPORTS_DIR) / grid.name
    try:
        paths = write_analysis_report(grid.name, grid.tracking_uri, out_dir, parent_run_id=parent_run_id)
    except AnalysisError as error:
        print(f"report skipped: {redact(str(error))}", file=sys.stderr)
        return
    print(f"report: {paths.report_html} (also on the parent run in MLflow under report/)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.sweep",
        description="Run a grid of fine-tuning trials with Ray Tune and evaluate every checkpoint on the 2x2 suite.",
    )
    parser.add_argument("grid", help="grid YAML file (see grids/demo.yaml)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the trials and the resources they need, run nothing"
    )
    parser.add_argument("--no-report", action="store_true", help="do not write the analysis report at the end")
    parser.add_argument(
        "--no-check-paths",
        action="store_true",
        help="validate names and path shapes only (for a grid meant for another machine)",
    )
    parser.add_argument(
        "--check-all-rows",
        action="store_true",
        help="validate every row of every dataset before starting (default: the schema and a "
        "sample of each parquet file's row groups)",
    )
    add_max_trials_flag(parser)
    return parser


def invalid(source: str, problems: list[str]) -> int:
    """Print ``problems`` of ``source`` as one error (redacted); the exit status of invalid input."""
    lines = (
        [f"error: {source}:", *(f"  {text}" for text in problems)] if len(problems) > 1 else [f"error: {problems[0]}"]
    )
    print(redact("\n".join(lines)), file=sys.stderr)
    return EXIT_BAD_INPUT


@input_boundary
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    install_log_redaction()
    try:
        grid = load_grid(args.grid, check_paths=not args.no_check_paths, max_trials=args.max_trials)
    except GridError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    prices, unfit = gpu_prices(grid, expand_trials(grid))
    if args.dry_run:
        problems = cluster_problems(grid, check_local=not args.no_check_paths)
        if problems:
            return invalid(grid.source, problems)
        print(render_plan(grid, expand_trials(grid), cluster_resources()))
        if prices:
            print("\n" + prices)
    if unfit:
        return invalid(grid.source, [f"trials do not fit resources.gpu {grid.resources.gpu}:", *unfit])
    if args.dry_run:
        return 0
    unreachable = preflight_problem(grid.tracking_uri)
    if unreachable:
        return invalid(grid.source, [unreachable])
    trials = expand_trials(grid)
    if not args.no_check_paths:
        try:
            check_data(trials, every_row=args.check_all_rows)
        except (RecordFormatError, SuiteError, FileNotFoundError) as error:
            return invalid(grid.source, [str(error)])

    ray.init(ignore_reinit_error=True, log_to_driver=False)
    capacity = capacity_problems(grid.resources, node_shapes())
    if capacity:
        return invalid(grid.source, capacity)
    cluster = {key: value for key, value in ray.cluster_resources().items() if key in ("CPU", "GPU")}
    concurrency = max(1, max_concurrent_trials(grid, cluster))
    parent = open_parent_run(grid.tracking_uri, grid.name, str(args.grid), trials)
    tag_parent_run(grid, trials, parent)
    plan = plan_search(grid, trials, parent)
    to_run = trials_to_run(grid, plan)
    print(
        f"sweep {grid.name} ({grid.search.method} search): {len(plan.done) + to_run} trials "
        f"({len(plan.done)} already finished, {to_run} to run), "
        f"up to {concurrency} at once on {cluster}; MLflow {redact_uri(grid.tracking_uri)} (parent run {parent[:12]})"
    )
    failed = 0
    try:
        if to_run:
            prepare_shared_inputs(plan.pending or trials, cpu_workers=grid.resources.gpus_per_worker == 0)
            progress = SweepProgress(
                total=to_run + len(plan.done),
                already_done=len(plan.done),
                concurrency=concurrency,
                step_costs=step_costs(grid, plan.pending),
            )
            failed = run_search(grid, plan, concurrency, parent, [progress], TRIAL_DRIVER_RESOURCES)
    except KeyboardInterrupt:
        pass  # Tune stops its trials on Ctrl-C; what finished is in MLflow
    rows = summary_rows(grid.tracking_uri, search_trials(grid, parent))
    print()
    print(summary_table(rows))
    print(runs_page_hint(redact_uri(grid.tracking_uri), parent_experiment_id(grid.tracking_uri, parent)))
    unfinished = [row.name for row in rows if row.status not in DONE_STATUSES + ("failed",)]
    if unfinished:
        close_parent_run(grid.tracking_uri, parent, "KILLED")
        print(
            f"\ninterrupted: {len(unfinished)} trial(s) unfinished; finished ones are kept. "
            f"Resume with: python -m orchestrator.sweep {args.grid}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if failed:
        print(f"\n{failed} trial(s) failed; rerun the same command to resume them.", file=sys.stderr)
    close_parent_run(grid.tracking_uri, parent, "FAILED" if failed else "FINISHED")
    if grid.report_enabled and not args.no_report:
        write_report(grid, parent)
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
