"""python benchmarks/eval_throughput.py [--model toy-qwen2.5-vl-init] [--suite toy] [--batch-size 32] [--repeats 3]

Questions per second of the two evaluation modes on the same questions: ``logits`` (one
forward pass per batch, option-letter scoring) vs ``generate`` (greedy decoding + the paper's
Listing 1 matcher). Prints each mode's best-of-N throughput and their ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from jobs.evaluate.suite_eval import SuiteEvaluator
from recipes.data.suites import load_suite
from recipes.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", default="toy-qwen2.5-vl-init")
    parser.add_argument("--suite", default="toy")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    loaded = load_model(args.model)
    suite = load_suite(args.suite)
    print(f"model {args.model}, suite {args.suite}, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    throughput = {}
    for mode in ("logits", "generate"):
        evaluator = SuiteEvaluator(suite, loaded.processor, mode, args.batch_size, args.max_new_tokens)
        evaluator.evaluate(loaded.model)  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = evaluator.evaluate(loaded.model)
            best = min(best, time.perf_counter() - started)
        throughput[mode] = result.questions / best
        print(f"{mode:>8}: {result.questions} questions in {best:.2f}s -> {throughput[mode]:.1f} questions/s")
    print(f"logits / generate throughput ratio: {throughput['logits'] / throughput['generate']:.2f}x")


if __name__ == "__main__":
    main()
