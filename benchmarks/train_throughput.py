"""python benchmarks/train_throughput.py [--model toy-qwen2.5-vl-init] [--dataset toy-imagenet-vqa] [--steps 20]
       [--batch-size 16] [--parts llm] [--setups 1x0,1x2,1x3,2x0,2x2,2x3] [--cpus-per-worker 1]

Training throughput of a trial's real worker loop (Ray Train + DeepSpeed on CPU/gloo) without
evaluation, on any model the registry resolves (a registry name or a local model directory) and
any MCQ or free-form training set (a registered name or a parquet/JSONL file), so the figures can
be set beside another trainer's on the same inputs. For each setup (workers x ZeRO stage) it
prints steps/s, samples/s, tokens per sample, tokens/s, the achieved FLOP/s (6 x parameters x
tokens) as a share of this machine's measured matmul peak (torch.mm of a large square on all
cores), the speed relative to the first setup, and the share of the step spent in each phase of
rank 0 (collate, forward, backward, optimizer). Each worker gets ``--cpus-per-worker`` CPUs from
Ray, and as many torch threads (Ray sets ``OMP_NUM_THREADS`` to a worker's CPUs).
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
from jobs.finetune.loop import PhaseClock, TrialWorker
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


PHASES = ("collate", "forward", "backward", "optimizer")


def measure_on_workers(config: dict) -> dict | None:
    """Ray Train worker: build the trial's worker state, time ``steps`` optimizer steps."""
    worker = TrialWorker(TrialConfig.from_dict(config["trial"]))
    worker.train_step(0)  # warm-up (allocations, first collective)
    worker.phases = PhaseClock(synchronize=worker.use_gpu)
    tokens, started = 0, time.perf_counter()
    for step in range(1, config["steps"] + 1):
        tokens += worker.train_step(step)[1]
    seconds = time.perf_counter() - started
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in worker.engine.module.parameters())  # ZeRO-3 partitions
    if ray.train.get_context().get_world_rank() != 0:
        return None
    return {
        "seconds": seconds,
        "tokens": tokens,
        "parameters": parameters,
        "threads": torch.get_num_threads(),
        "phases": {phase: worker.phases.seconds.get(phase, 0.0) / seconds for phase in PHASES},
    }


def run_setup(args: argparse.Namespace, workers: int, zero_stage: int) -> dict:
    trial = TrialConfig(
        model=args.model,
        dataset=args.dataset,
        parts=args.parts,
        lr=1e-4,
        steps=args.steps + 1,
        batch_size=args.batch_size,
        micro_batch_size=args.batch_size // workers,
        workers=workers,
        zero_stage=zero_stage,
        cpus_per_worker=args.cpus_per_worker,
    )
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    trainer = TorchTrainer(
        measure_on_workers,
        train_loop_config={"trial": trial.to_dict(), "steps": args.steps},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": args.cpus_per_worker}),
    )
    return trainer.fit().return_value


def parse_setups(text: str) -> list[tuple[int, int]]:
    """``"1x0,2x2"`` -> [(1, 0), (2, 2)]: workers x ZeRO stage."""
    try:
        setups = [tuple(int(part) for part in item.split("x")) for item in text.split(",")]
    except ValueError:
        setups = []
    if not setups or any(len(s) != 2 or s[0] < 1 or s[1] not in (0, 1, 2, 3) for s in setups):
        raise argparse.ArgumentTypeError(f"expected WORKERSxZERO[,...] such as 1x0,2x2; got {text!r}")
    return setups


def add_input_arguments(parser: argparse.ArgumentParser, model: str, steps: int) -> None:
    """The training inputs a throughput benchmark takes: model, dataset, parts, steps and batch."""
    parser.add_argument("--model", default=model, help="registry name or local model directory")
    parser.add_argument("--dataset", default="toy-imagenet-vqa", help="registered name or MCQ/free-form file")
    parser.add_argument("--parts", default="llm", help="parts to tune, fully (the trial's `parts`)")
    parser.add_argument("--steps", type=int, default=steps, help="timed optimizer steps (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    add_input_arguments(parser, model="toy-qwen2.5-vl-init", steps=20)
    parser.add_argument(
        "--setups",
        type=parse_setups,
        default=parse_setups("1x0,1x2,1x3,2x0,2x2,2x3"),
        help="workers x ZeRO stage, comma-separated",
    )
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (and torch threads) per worker")
    args = parser.parse_args()

    resolve_model_dir(args.model, download=True)  # built or downloaded before anything is timed
    peak = matmul_peak_flops()
    print(f"matmul peak (torch.mm {PEAK_SIZE}x{PEAK_SIZE}, {os.cpu_count()} threads): {peak / 1e9:.1f} GFLOP/s")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows, baseline = [], None
    for workers, zero_stage in args.setups:
        stats = run_setup(args, workers, zero_stage)
        steps_per_s = args.steps / stats["seconds"]
        tokens_per_s = stats["tokens"] / stats["seconds"]
        baseline = baseline or steps_per_s
        rows.append(
            (
                f"{workers}x{stats['threads']}",
                zero_stage,
                steps_per_s,
                steps_per_s * args.batch_size,
                stats["tokens"] / (args.steps * args.batch_size),
                tokens_per_s,
                6 * stats["parameters"] * tokens_per_s / peak,
                steps_per_s / baseline,
                stats["phases"],
            )
        )
    print(
        f"\nmodel {args.model}, dataset {args.dataset}, parts {args.parts}, global batch {args.batch_size}, "
        f"{args.steps} timed steps per setup; phases: share of rank 0's step time"
    )
    header = (
        "workers x threads",
        "ZeRO",
        "steps/s",
        "samples/s",
        "tokens/sample",
        "tokens/s",
        "% of peak",
        "relative",
        *PHASES,
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, zero, steps, samples, per_sample, tokens, share, relative, phases in rows:
        cells = (
            name,
            str(zero),
            f"{steps:.2f}",
            f"{samples:.1f}",
            f"{per_sample:.0f}",
            f"{tokens:,.0f}",
            f"{100 * share:.1f}%",
            f"{relative:.2f}x",
            *(f"{100 * phases[p]:.0f}%" for p in PHASES),
        )
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
