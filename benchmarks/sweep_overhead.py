"""python benchmarks/sweep_overhead.py [--grid grids/demo.yaml] [--set grid.parts=[llm]] [--out DIR] [--noop-fits 3]
python benchmarks/sweep_overhead.py --tracking-uri sqlite:///mlflow.db --experiment demo-forgetting

How much of a trial's time a sweep spends training and evaluating. Runs the grid's sweep in its
own MLflow store and storage under ``--out`` (``--set`` changes the grid first, e.g. fewer cells),
or with ``--tracking-uri`` and ``--experiment`` reads a sweep that already ran, then prints per
trial the wall seconds of its Ray Train run (``time/trial_s``: start-up, training, evaluations,
checkpoints, shutdown), its training seconds (the sum of ``time/train_s``), its evaluation seconds
(the sum of ``time/eval_s``) and the overhead, wall / (training + evaluation); the last row is
the whole sweep's. The goal is at most 1.10x.

Then it times ``--noop-fits`` Ray Train runs of a train function that does nothing, on the grid's
worker shape (``resources``: workers per trial, CPUs per worker, gloo): what every trial pays for
Ray Train's controller, worker group and process group before and after its own code runs. It
prints their seconds and the overhead a trial of the sweep's mean training + evaluation time would
have if that were all it spent outside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml
from mlflow.tracking import MlflowClient
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from contract.layout import KIND_TAG, TIME_EVAL_S, TIME_TRAIN_S, TIME_TRIAL_S, TRIAL_KIND
from orchestrator.grid import GridError, parse_grid, read_grid_file
from orchestrator.grid_schema import Resources
from recipes.common.input_errors import input_boundary
from recipes.common.yaml_loading import YamlError, load_yaml_text

REPO = Path(__file__).resolve().parents[1]


def with_setting(grid: dict, assignment: str) -> dict:
    """The grid with one ``dotted.key=YAML value`` assignment applied."""
    key, separator, value = assignment.partition("=")
    if not separator or not key:
        raise SystemExit(f"--set: expected KEY=VALUE such as grid.parts=[llm]; got {assignment!r}")
    node = grid
    *parents, leaf = key.split(".")
    for depth, part in enumerate(parents, start=1):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parents[:depth])
            raise GridError("--set", [f"{key}: {where} is a {type(node).__name__}, not a section with fields"])
    try:
        node[leaf] = load_yaml_text(value)
    except YamlError as error:
        raise GridError("--set", [f"{key}: {error}"]) from None
    return grid


def run_sweep(grid: dict, out: Path) -> tuple[str, str]:
    """Run the grid's sweep in a store of its own under ``out``; returns (tracking URI, experiment)."""
    uri = f"sqlite:///{out / 'mlflow.db'}"
    grid.update(storage=str(out / "storage"), tracking={"uri": uri}, report={"enabled": False})
    path = out / f"{grid['name']}.yaml"
    path.write_text(yaml.safe_dump(grid))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "orchestrator.sweep", str(path), "--no-report"], env=env, cwd=REPO)
    if done.returncode:  # the sweep printed why (a bad --set names the field)
        raise SystemExit(done.returncode)
    return uri, grid["name"]


def trial_times(uri: str, experiment: str) -> list[tuple[str, float, float, float]]:
    """(trial name, wall s, training s, evaluation s) of every trial run that logged its wall time."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in {uri}")
    rows = []
    for run in client.search_runs([found.experiment_id], f"tags.`{KIND_TAG}` = '{TRIAL_KIND}'", max_results=10_000):
        total = {
            key: sum(m.value for m in client.get_metric_history(run.info.run_id, key))
            for key in (TIME_TRIAL_S, TIME_TRAIN_S, TIME_EVAL_S)
        }
        if total[TIME_TRIAL_S]:
            rows.append((run.info.run_name, total[TIME_TRIAL_S], total[TIME_TRAIN_S], total[TIME_EVAL_S]))
    return sorted(rows)


def noop(config: dict) -> None:
    """A Ray Train function that does nothing: what is left of a fit is Ray Train's own cost."""


def noop_fit_seconds(resources: Resources, fits: int, out: Path) -> list[float]:
    """Wall seconds of ``fits`` Ray Train fits of ``noop`` on a local Ray with the grid's worker shape."""
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    scaling = ScalingConfig(
        num_workers=resources.workers_per_trial, resources_per_worker={"CPU": resources.cpus_per_worker}
    )
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        seconds = []
        for index in range(fits):
            trainer = TorchTrainer(
                noop,
                torch_config=TorchConfig(backend="gloo"),
                scaling_config=scaling,
                run_config=RunConfig(name=f"noop-{index}", storage_path=str(out / "noop-fits")),
            )
            started = time.perf_counter()
            trainer.fit()
            seconds.append(time.perf_counter() - started)
        return seconds
    finally:
        ray.shutdown()


@input_boundary
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/sweep_overhead.py", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--grid",
        default=str(REPO / "grids" / "demo.yaml"),
        help="the sweep to run (with --tracking-uri: only its resources, for the no-op fits)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change the grid (repeatable)")
    parser.add_argument("--out", type=Path, help="where the sweep's store goes (default: a temporary folder)")
    parser.add_argument("--tracking-uri", help="read this store's sweep instead of running one")
    parser.add_argument("--experiment", help="the sweep (grid name) to read with --tracking-uri")
    parser.add_argument("--noop-fits", type=int, default=3, help="Ray Train fits of a no-op function to time (0: none)")
    args = parser.parse_args(argv)
    if bool(args.tracking_uri) != bool(args.experiment):
        parser.error("--tracking-uri and --experiment go together")
    if args.noop_fits < 0:
        parser.error(f"--noop-fits must be >= 0, got {args.noop_fits}")
    try:  # checked as the sweep checks it, before anything runs
        grid = read_grid_file(args.grid)
        for assignment in args.set:
            grid = with_setting(grid, assignment)
        resources = parse_grid(grid, source=args.grid).resources  # the worker shape of the no-op fits
    except GridError as error:
        parser.error(str(error))
    out = args.out or Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.tracking_uri:
        uri, experiment = args.tracking_uri, args.experiment
    else:
        uri, experiment = run_sweep(grid, out)
    rows = trial_times(uri, experiment)
    if not rows:
        raise SystemExit(f"no trial of {experiment!r} logged {TIME_TRIAL_S}")
    total = ("all trials", *(sum(row[i] for row in rows) for i in (1, 2, 3)))
    print("| trial | wall s | training s | evaluation s | overhead |")
    print("|---|---:|---:|---:|---:|")
    for name, wall, training, evaluation in [*rows, total]:
        print(f"| {name} | {wall:.1f} | {training:.1f} | {evaluation:.1f} | {wall / (training + evaluation):.2f}x |")
    if args.noop_fits:
        seconds = noop_fit_seconds(resources, args.noop_fits, out)
        useful = (total[2] + total[3]) / len(rows)
        floor = (useful + statistics.median(seconds)) / useful
        print(
            f"\nRay Train fit of a no-op function, {resources.workers_per_trial} worker(s) x "
            f"{resources.cpus_per_worker:g} CPU(s), gloo: {', '.join(f'{s:.1f}' for s in seconds)} s; "
            f"a trial of the mean {useful:.1f} s of training + evaluation spending only the median of "
            f"those outside them would be at {floor:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
