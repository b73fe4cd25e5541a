"""python benchmarks/real_widths.py [--models qwen2.5-vl-3b,qwen2.5-vl-7b] [--recipes lora,full] [--steps 3]
       [--layers 2] [--rows-per-quadrant 4] [--image-side 448]

A trial's worker at the real models' widths on the CPU: Qwen2.5-VL-3B and -7B as shape models
(``<model>@layers=2``: real widths, random weights, fp32), each with a LoRA recipe (parts ``llm``,
r 8) and a whole-LLM recipe (parts ``llm``, full fine-tune). Each trial runs the product's worker
(``jobs.finetune.loop.TrialWorker``: the trial's model load, collator, DeepSpeed ZeRO-2 engine,
activation checkpointing as a shape model's trial has it) in one Ray Train worker process on
gloo, on batches of 2 toy-world rows whose images the processor resizes to ``--image-side``
pixels square (448: 32x32 patches, 256 visual tokens after the 2x2 merge; ``min_pixels`` =
``max_pixels`` = side^2). It prints a markdown table, per trial:

- peak memory of the worker process: its RSS high-water mark (``getrusage(RUSAGE_SELF)`` in the
  worker), the Python, torch, Ray and DeepSpeed libraries included;
- seconds per optimizer step (the first step apart: it allocates the optimizer state);
- tokens per sample (the attention mask's ones: prompt, 256 image tokens, answer);
- checkpoint bytes and save/load seconds (``TrialWorker.save`` / ``load_state`` on local disk:
  what a trial reports to Ray Train, trainable tensors and their optimizer state only);
- evaluation questions per second (the trial's ``SuiteEvaluator``, logits mode, on a suite of
  ``--rows-per-quadrant`` rows of each quadrant's first toy dataset).

A recipe whose plan estimate (``orchestrator.pricing``) exceeds this machine's memory is not run:
its row says so, with the bytes it would need.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import ray.train  # noqa: E402
import yaml  # noqa: E402
from ray.train import ScalingConfig  # noqa: E402
from ray.train.torch import TorchConfig, TorchTrainer  # noqa: E402

from jobs.finetune.config import TrialConfig  # noqa: E402
from jobs.finetune.loop import TrialWorker  # noqa: E402
from orchestrator.pricing import Workload, model_shape, price_trial  # noqa: E402
from recipes.data.registry import load_dataset  # noqa: E402
from recipes.data.suites import load_suite  # noqa: E402
from recipes.methods import MethodConfig  # noqa: E402

RECIPES = {"lora": ("llm", "lora"), "full": ("llm", "full")}
"""Recipe name -> (parts, method)."""
BATCH = 2
"""Rows per optimizer step (one micro-batch)."""
PATCH = 14
"""Qwen2.5-VL's patch side in pixels."""


def small_suite(folder: Path, rows: int) -> str:
    """A suite file: each quadrant's first toy dataset cut to its first ``rows`` rows."""
    quadrants = {}
    for quadrant, names in load_suite("toy").quadrants.items():
        pq.write_table(load_dataset(names[0]).slice(0, rows), folder / f"{names[0]}.parquet")
        quadrants[quadrant] = [f"{names[0]}.parquet"]
    (folder / "suite.yaml").write_text(yaml.safe_dump({"name": "real-widths", "quadrants": quadrants}))
    return str(folder / "suite.yaml")


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark (kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_worker(config: dict) -> dict:
    """Ray Train worker: the trial's worker state, ``steps`` steps, a checkpoint round trip, one evaluation."""
    trial = TrialConfig.from_dict(config["trial"])
    started = time.perf_counter()
    worker = TrialWorker(trial)
    build_s = time.perf_counter() - started
    step_seconds, tokens = [], 0
    for step in range(trial.steps):
        started = time.perf_counter()
        tokens += worker.train_step(step)[1]
        step_seconds.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="real-widths-ckpt-") as directory:
        started = time.perf_counter()
        worker.save(Path(directory), trial.steps)
        save_s = time.perf_counter() - started
        checkpoint_bytes = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
        started = time.perf_counter()
        worker.load_state(Path(directory), {})
        load_s = time.perf_counter() - started
    result = worker.evaluator.evaluate(worker.engine.module, worker.rank, worker.world, worker.image_features)
    later = step_seconds[1:] or step_seconds
    return {
        "build_s": build_s,
        "first_step_s": step_seconds[0],
        "step_s": sum(later) / len(later),
        "tokens_per_sample": tokens / (trial.steps * trial.batch_size),
        "checkpoint_bytes": checkpoint_bytes,
        "save_s": save_s,
        "load_s": load_s,
        "questions": result.questions,
        "eval_s": result.seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "trainable": worker.trainable.trainable,
        "total": worker.trainable.total,
    }


def trial_for(args: argparse.Namespace, model: str, recipe: str, suite: str, storage: str) -> TrialConfig:
    parts, method = RECIPES[recipe]
    pixels = args.image_side * args.image_side
    return TrialConfig(
        model=f"{model}@layers={args.layers}",
        parts=parts,
        method=method,
        lora_r=8,
        lr=1e-4 if method == "lora" else 1e-5,
        steps=args.steps,
        batch_size=BATCH,
        micro_batch_size=BATCH,
        eval_every=args.steps,
        eval_suite=suite,
        eval_batch_size=8,
        eval_signals=(),
        min_pixels=pixels,
        max_pixels=pixels,
        storage=storage,
    )


def estimate_bytes(trial: TrialConfig, image_side: int, seq_len: int) -> int:
    """The plan's memory estimate of the trial on one fp32 worker."""
    workload = Workload(
        micro_batch=trial.micro_batch_size,
        zero_stage=trial.zero_stage,
        checkpointing=True,
        seq_len=seq_len,
        image_patches=(image_side // PATCH) ** 2,
        fp32=True,
    )
    method = MethodConfig(trial.method, lora_r=trial.lora_r)
    return price_trial(model_shape(trial.model), trial.parts, method, workload).memory_bytes


def run_trial_worker(trial: TrialConfig) -> dict:
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    trainer = TorchTrainer(
        measure_worker,
        train_loop_config={"trial": trial.to_dict()},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
    )
    return trainer.fit().return_value


def row_text(model: str, recipe: str, row: dict) -> str:
    gb = 1e9
    return (
        f"| {model} | {recipe} | {row['trainable'] / 1e6:,.1f} M / {row['total'] / 1e6:,.0f} M "
        f"| {row['peak_rss_bytes'] / gb:.2f} GB | {row['first_step_s']:.1f} / {row['step_s']:.1f} "
        f"| {row['tokens_per_sample']:.0f} | {row['checkpoint_bytes'] / 1e6:,.1f} MB "
        f"| {row['save_s']:.1f} / {row['load_s']:.1f} | {row['questions'] / row['eval_s']:.2f} "
        f"({row['questions']} in {row['eval_s']:.0f} s) |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A trial's worker at the real models' widths on the CPU.")
    parser.add_argument("--models", default="qwen2.5-vl-3b,qwen2.5-vl-7b", help="comma-separated registry names")
    parser.add_argument("--recipes", default="lora,full", help=f"comma-separated, of {sorted(RECIPES)}")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per trial")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers and vision blocks of the shape models")
    parser.add_argument("--rows-per-quadrant", type=int, default=4, help="evaluation rows per quadrant")
    parser.add_argument("--image-side", type=int, default=448, help="image side in pixels (a multiple of 28)")
    parser.add_argument("--seq-len", type=int, default=320, help="tokens per sample the memory estimate assumes")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.recipes.split(",")) - set(RECIPES))
    if unknown:
        print(f"--recipes: unknown {unknown}, known {sorted(RECIPES)}", file=sys.stderr)
        return 2
    if args.image_side % (2 * PATCH):
        print(f"--image-side: {args.image_side} is not a multiple of {2 * PATCH}", file=sys.stderr)
        return 2
    memory = psutil.virtual_memory().total
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, {memory / 2**30:.1f} GiB RAM, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.steps} steps of {BATCH} rows, "
        f"images {args.image_side}x{args.image_side}, fp32\n"
    )
    header = (
        "| model | recipe | trainable / total | peak RSS per worker | s/step (first / rest) | tokens/sample "
        "| checkpoint | save / load s | eval questions/s |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines, skipped = [header], []
    with tempfile.TemporaryDirectory(prefix="real-widths-") as folder:
        suite = small_suite(Path(folder), args.rows_per_quadrant)
        for model in args.models.split(","):
            for recipe in args.recipes.split(","):
                trial = trial_for(args, model, recipe, suite, str(Path(folder) / "storage"))
                needed = estimate_bytes(trial, args.image_side, args.seq_len)
                if needed > memory:
                    skipped.append(
                        f"{trial.model} {recipe}: not run, the plan estimates {needed:,} bytes "
                        f"({needed / 2**30:.1f} GiB) per worker, more than this machine's {memory / 2**30:.1f} GiB"
                    )
                    continue
                if not ray.is_initialized():
                    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
                started = time.perf_counter()
                row = run_trial_worker(trial)
                lines.append(row_text(trial.model, recipe, row))
                print(f"{trial.model} {recipe}: done in {time.perf_counter() - started:.0f} s", flush=True)
                print(lines[-1], flush=True)  # the table again at the end
    if ray.is_initialized():
        ray.shutdown()
    print("\n".join(lines))
    for line in skipped:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
