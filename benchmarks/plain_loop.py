"""python benchmarks/plain_loop.py [--model toy-qwen2.5-vl] [--dataset toy-imagenet-vqa] [--steps 60]
       [--batch-size 16] [--parts llm] [--threads 0]

The ceiling of a trial's training step on this machine: the same model, rows, loss
(``jobs.finetune.loss.supervised_loss``) and fused AdamW as a trial's worker, in one plain
PyTorch process with no Ray, no DeepSpeed and no collation on the clock (every batch is collated
before timing starts). What a trainer adds on top of this loop is its overhead; what is left is
the model's own forward and backward. Prints steps/s over ``--steps`` steps after one warm-up
step, samples/s and the median step in ms. ``benchmarks/llamafactory_side_by_side.py`` runs it as
one of its setups (``--plain-loop``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from train_throughput import add_input_arguments

from jobs.finetune.loss import supervised_loss
from recipes.data.collate import RecordCollator
from recipes.data.stream import build_train_stream
from recipes.methods import MethodConfig, apply_method
from recipes.models import load_model


def measure(model_name: str, dataset: str, parts: str, steps: int, batch_size: int) -> list[float]:
    """Seconds of each of ``steps`` optimizer steps (after one warm-up step) of the plain loop."""
    torch.manual_seed(0)
    loaded = load_model(model_name)
    model, _ = apply_method(loaded.model, loaded.family, parts, MethodConfig(name="full"))
    model.train()
    stream = build_train_stream(dataset, 1.0, [], seed=0)
    collate = RecordCollator(loaded.processor, with_answers=True)
    batches = [collate(stream.rows(step * batch_size, batch_size)) for step in range(steps + 1)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        supervised_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    add_input_arguments(parser, model="toy-qwen2.5-vl", steps=60)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all of the machine's CPUs)")
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1 or args.threads < 0:
        parser.error("--steps and --batch-size must be >= 1 and --threads >= 0")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    seconds = measure(args.model, args.dataset, args.parts, args.steps, args.batch_size)
    total = sum(seconds)
    print(
        f"plain loop, 1 process x {torch.get_num_threads()} threads, batch {args.batch_size}, {args.steps} steps: "
        f"{args.steps / total:.2f} steps/s, {args.steps * args.batch_size / total:.1f} samples/s, "
        f"median step {1000 * statistics.median(seconds):.1f} ms"
    )


if __name__ == "__main__":
    main()
