"""python benchmarks/real_width_sweep.py [--model qwen2.5-vl-3b] [--layers 2] [--steps 2] [--rows-per-quadrant 4]
       [--image-side 448] [--keep DIR]

A whole sweep from a grid file at a real model's widths on the CPU: the grid below, two trials of
the shape model ``<model>@layers=N`` (LoRA on the LLM and the whole LLM, ``--steps`` steps each,
one trial at a time), run by ``python -m orchestrator.sweep`` exactly as a user runs it: Ray Tune,
Ray Train, DeepSpeed (gloo), the 2x2 evaluation on a small suite (``--rows-per-quadrant`` rows of
each quadrant's first toy dataset), MLflow (a sqlite file) and the report. Images are resized to
``--image-side`` pixels square (448: 256 visual tokens). It prints the sweep's own output, then per
trial its status, ID accuracy, the steps it was evaluated at, checkpoint bytes on disk and its
``time/trial_s`` (its Ray Train run), and the sweep's wall time. Exit status: the sweep's.

Everything (the grid, the suite, MLflow, checkpoints, the report) is written under a temporary
folder (``--keep DIR``: under DIR, kept), the sweep's working directory, so the user's
``./mlflow.db``, ``./sweeps`` and ``./reports`` are not touched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from benchmarks.real_widths import small_suite  # noqa: E402
from contract.layout import PARAM_TRIAL_NAME, TARGET_QUADRANT, TIME_TRIAL_S, accuracy_metric  # noqa: E402
from recipes.common.text_table import markdown_table  # noqa: E402


def grid_for(args: argparse.Namespace, suite: str, folder: Path) -> dict:
    """The grid file's content: two trials of the shape model, one at a time."""
    pixels = args.image_side * args.image_side
    return {
        "name": "real-width-sweep",
        "model": f"{args.model}@layers={args.layers}",
        "train": {
            "dataset": "toy-imagenet-vqa",
            "steps": args.steps,
            "batch_size": 2,
            "warmup_ratio": 0.0,
            "eval_every": args.steps,
            "keep_last": 1,
            "min_pixels": pixels,
            "max_pixels": pixels,
        },
        "eval": {"mode": "logits", "suite": suite, "batch_size": 8, "signals": []},
        "grid": {"parts": ["llm"], "method": ["lora", "full"], "lr": [1.0e-5]},
        "methods": {"lora": {"r": 8, "alpha": 16}},
        "resources": {
            "workers_per_trial": 1,
            "cpus_per_worker": 1,
            "gpus_per_worker": 0,
            "max_concurrent_trials": 1,  # a whole-LLM trial at 3B widths takes about 15 GB
        },
        "storage": str(folder / "sweeps"),
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
        "report": {"enabled": True},
    }


def folder_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def trial_rows(folder: Path) -> list[tuple[str, ...]]:
    """One row per trial run of the sweep: name, status, ID accuracy, steps, checkpoint bytes, time/trial_s."""
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("real-width-sweep")
    rows = []
    for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]):
        name = run.data.params.get(PARAM_TRIAL_NAME)
        if name is None:
            continue  # the parent run
        checkpoints = [path for path in (folder / "sweeps").rglob("*") if path.is_dir() and name in path.name]
        wall = run.data.metrics.get(TIME_TRIAL_S)
        accuracy = run.data.metrics.get(accuracy_metric(TARGET_QUADRANT))
        history = client.get_metric_history(run.info.run_id, accuracy_metric(TARGET_QUADRANT))
        rows.append(
            (
                name,
                run.info.status,
                "-" if accuracy is None else f"{accuracy:.1f}",
                ", ".join(str(point.step) for point in sorted(history, key=lambda point: point.step)),
                f"{sum(folder_bytes(path) for path in checkpoints):,}",
                "-" if wall is None else f"{wall:.0f}",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-vl-3b", help="a registered shape model (default qwen2.5-vl-3b)")
    parser.add_argument("--layers", type=int, default=2, help="text layers of the shape model (default 2)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per trial (default 2)")
    parser.add_argument("--rows-per-quadrant", type=int, default=4, help="suite rows per quadrant (default 4)")
    parser.add_argument("--image-side", type=int, default=448, help="image side in pixels (default 448)")
    parser.add_argument("--keep", type=Path, help="write under this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="real-width-sweep-") as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        grid_file = folder / "grid.yaml"
        grid_file.write_text(yaml.safe_dump(grid_for(args, small_suite(folder, args.rows_per_quadrant), folder)))
        started = time.perf_counter()
        command = [sys.executable, "-m", "orchestrator.sweep", str(grid_file)]
        status = subprocess.call(command, cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - started
        header = ("trial", "status", "ID acc %", "evaluated at steps", "checkpoint bytes", "trial s")
        print()
        print(markdown_table(header, trial_rows(folder)))
        print(f"\nsweep of {grid_file}: exit {status}, {wall:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
