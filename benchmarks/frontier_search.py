"""python benchmarks/frontier_search.py [--grid grids/demo-search.yaml] [--quick] [--out DIR]

How much of the no-forgetting frontier the adaptive searches find for how much compute: runs
the grid's sweep three times, as the full grid, as ASHA and as Optuna (each in its own MLflow
store and storage under ``--out``, a fresh local Ray each), then prints per search the trials,
the trial-steps spent (training steps of every trial, to its last evaluation), their share of
the full grid's, and the hypervolume of its (ID gain, worst OOD drop) points relative to the
full grid's, with and without the WiSE-FT blends. Same budget rules for all: the grid's steps,
evaluations and rungs; Optuna samples half as many trials as the grid has cells. All three
share one hypervolume reference: no ID gain, and the largest worst OOD drop any of them saw.
The goal: >= 90% of the full grid's hypervolume for <= 50% of its trial-steps.

``--quick`` is a smaller scale for a busy machine: the random-weight toy model on the small
toy world (``FORGETLESS_TOY_SIZE=small``), 12 steps with evaluations every 4, six cells (the
LLM and its attention projections at three learning rates); nothing to pre-train.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SEARCHES = ("grid", "asha", "optuna")
QUICK = {
    "model": "toy-qwen2.5-vl-init",
    "train": {"steps": 12, "eval_every": 4, "batch_size": 8, "warmup_ratio": 0.0, "deepspeed": {"zero_stage": 0}},
    "grid": {"parts": ["llm", "llm.attn"], "method": ["full"], "lr": [1.0e-2, 3.0e-3, 1.0e-3]},
    "search": {"grace_steps": 4, "space": {"lr": {"low": 1.0e-3, "high": 1.0e-2}}},
}
"""What ``--quick`` changes in the grid (merged one level deep)."""


def variant(grid: dict, search: str, out: Path, quick: bool) -> dict:
    """The grid as one search of the benchmark: its own name, store and storage, no report."""
    changes = QUICK if quick else {}
    grid = {**grid, **{k: {**grid.get(k, {}), **v} if isinstance(v, dict) else v for k, v in changes.items()}}
    cells = 1
    for values in grid["grid"].values():
        cells *= len(values) if isinstance(values, list) else 1
    grid.update(
        name=f"bench-{search}",
        storage=str(out / "storage"),
        tracking={"uri": f"sqlite:///{out / search}.db"},
        report={"enabled": False},
        search={**grid.get("search", {}), "method": search, "num_samples": max(1, cells // 2)},
    )
    return grid


def run_search(grid: dict, out: Path, env: dict) -> float:
    """Run one variant's sweep; returns its wall time in seconds."""
    path = out / f"{grid['name']}.yaml"
    path.write_text(yaml.safe_dump(grid))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(path), "--no-report"],
        check=True,
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def measure(grid: dict) -> tuple[list, int, int | None]:
    """(frontier points, trial-steps spent, full grid's trial-steps) of a finished variant, from MLflow."""
    from analysis.mlflow_reader import load_sweep
    from analysis.search_frontier import frontier_points, search_compute

    sweep = load_sweep(grid["name"], grid["tracking"]["uri"])
    compute = search_compute(sweep)
    return frontier_points(sweep), compute.spent, compute.full_grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/frontier_search.py", description=__doc__.splitlines()[2])
    parser.add_argument("--grid", default=str(REPO / "grids" / "demo-search.yaml"))
    parser.add_argument("--quick", action="store_true", help="random toy model, small toy world, 12 steps, 6 cells")
    parser.add_argument("--out", type=Path, default=None, help="where the stores go (default: a temporary folder)")
    args = parser.parse_args(argv)
    from analysis.search_frontier import frontier_hypervolume

    out = args.out or Path(tempfile.mkdtemp(prefix="frontier-search-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), **({"FORGETLESS_TOY_SIZE": "small"} if args.quick else {})}
    os.environ.update(env)
    base = yaml.safe_load(Path(args.grid).read_text())
    results = {}
    for search in SEARCHES:
        grid = variant(base, search, out, args.quick)
        seconds = run_search(grid, out, env)
        results[search] = (*measure(grid), seconds)
        print(f"{search}: done in {seconds:.0f} s", flush=True)
    reference = max(p.worst_ood_drop for points, *_ in results.values() for p in points)
    reference = max(reference, 0.0) + 1.0  # every point inside the box, the worst one by 1 pp
    trained = lambda points: [p for p in points if p.alpha is None]  # noqa: E731
    full_points = results["grid"][0]
    full_trained, full_all = (
        frontier_hypervolume(trained(full_points), reference),
        frontier_hypervolume(full_points, reference),
    )
    print(
        f"\nreference: ID gain 0, worst OOD drop {reference:.1f} pp; full grid hypervolume "
        f"{full_trained:.1f} pp² (trials), {full_all:.1f} pp² (with WiSE-FT blends)\n"
    )
    header = ("search", "trials", "trial-steps", "vs full grid", "HV trials", "HV with blends", "wall s")
    print("  ".join(f"{h:>14}" for h in header))
    for search, (points, spent, full, seconds) in results.items():
        row = (
            search,
            str(len(trained(points))),
            str(spent),
            f"{spent / full:.0%}" if full else "-",
            f"{frontier_hypervolume(trained(points), reference) / full_trained:.0%}" if full_trained else "-",
            f"{frontier_hypervolume(points, reference) / full_all:.0%}" if full_all else "-",
            f"{seconds:.0f}",
        )
        print("  ".join(f"{v:>14}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
