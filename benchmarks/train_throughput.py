"""python benchmarks/train_throughput.py [--model toy-qwen2.5-vl-init] [--steps 20] [--batch-size 16]

Training throughput of a trial's real worker loop (Ray Train + DeepSpeed on CPU/gloo) on the toy
model, without evaluation: tokens/s and seconds/step for 1 vs 2 workers and ZeRO 0/2/3, the
achieved FLOP/s (6 x parameters x tokens) as a share of this machine's measured matmul peak
(torch.mm of a large square on all cores), and every setup's speed relative to 1 worker, ZeRO 0.
"""

from __future__ import annotations

import argparse
import os
import time

import ray
import ray.train
import torch
from ray.train import ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from jobs.finetune.config import TrialConfig
from jobs.finetune.loop import TrialWorker
from recipes.models import resolve_model_dir

PEAK_SIZE = 2048
"""Side of the square matrices multiplied to measure the machine's peak FLOP/s."""


def matmul_peak_flops(size: int = PEAK_SIZE, repeats: int = 5) -> float:
    """Best FLOP/s of ``torch.mm`` on two ``size x size`` fp32 matrices, all cores."""
    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure_on_workers(config: dict) -> dict | None:
    """Ray Train worker: build the trial's worker state, time ``steps`` optimizer steps."""
    worker = TrialWorker(TrialConfig.from_dict(config["trial"]))
    worker.train_step(0)  # warm-up (allocations, first collective)
    tokens, started = 0, time.perf_counter()
    for step in range(1, config["steps"] + 1):
        tokens += worker.train_step(step)[1]
    seconds = time.perf_counter() - started
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in worker.engine.module.parameters())  # ZeRO-3 partitions
    if ray.train.get_context().get_world_rank() != 0:
        return None
    return {"seconds_per_step": seconds / config["steps"], "tokens_per_s": tokens / seconds, "parameters": parameters}


def run_setup(model: str, workers: int, zero_stage: int, steps: int, batch_size: int) -> dict:
    trial = TrialConfig(model=model, parts="llm", lr=1e-4, steps=steps + 1, batch_size=batch_size,
                        micro_batch_size=batch_size // workers, workers=workers, zero_stage=zero_stage)
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    trainer = TorchTrainer(
        measure_on_workers,
        train_loop_config={"trial": trial.to_dict(), "steps": steps},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
    )
    return trainer.fit().return_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", default="toy-qwen2.5-vl-init")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    resolve_model_dir(args.model)
    peak = matmul_peak_flops()
    print(f"matmul peak (torch.mm {PEAK_SIZE}x{PEAK_SIZE}, {os.cpu_count()} threads): {peak / 1e9:.1f} GFLOP/s")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows, baseline = [], None
    for workers in (1, 2):
        for zero_stage in (0, 2, 3):
            stats = run_setup(args.model, workers, zero_stage, args.steps, args.batch_size)
            flops = 6 * stats["parameters"] * stats["tokens_per_s"]
            baseline = baseline or stats["tokens_per_s"]
            rows.append((workers, zero_stage, stats["seconds_per_step"], stats["tokens_per_s"], flops / peak,
                         stats["tokens_per_s"] / baseline))
    print(f"\nmodel {args.model}, global batch {args.batch_size}, {args.steps} timed steps per setup")
    print(f"{'workers':>7} {'ZeRO':>4} {'s/step':>8} {'tokens/s':>9} {'% of peak':>9} {'vs 1w Z0':>8}")
    for workers, zero_stage, seconds, tokens, share, relative in rows:
        print(f"{workers:>7} {zero_stage:>4} {seconds:>8.3f} {tokens:>9.0f} {100 * share:>8.1f}% {relative:>7.2f}x")


if __name__ == "__main__":
    main()
