"""python benchmarks/eval_throughput.py [--model toy-qwen2.5-vl-init] [--suite toy] [--batch-size 32] [--repeats 3]

Questions per second of the two evaluation modes on the same questions: ``logits`` (one
forward pass per batch, option-letter scoring) vs ``generate`` (greedy decoding + the paper's
Listing 1 matcher). Prints each mode's first pass (what a one-off ``python -m jobs.evaluate``
sees: first-call overheads included), best of ``--repeats`` later passes, best of as many passes
that read the image features kept from an earlier pass (what every evaluation after a trial's
first does when the trial trains no part of the image path, ``jobs.evaluate.image_features``),
and the ratio of the modes' best passes.
"""

from __future__ import annotations

import argparse

import torch

from jobs.evaluate.image_features import FrozenImageFeatures
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
        evaluator = SuiteEvaluator(
            suite, loaded.processor, mode=mode, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens
        )
        first = evaluator.evaluate(loaded.model)
        best = min(evaluator.evaluate(loaded.model).seconds for _ in range(args.repeats))
        throughput[mode] = first.questions / best
        print(
            f"{mode:>8}: {first.questions} questions; first pass {first.seconds:.2f}s "
            f"({first.questions / first.seconds:.1f} questions/s), best of {args.repeats} later passes "
            f"{best:.2f}s ({throughput[mode]:.1f} questions/s)"
        )
        memo = FrozenImageFeatures()
        evaluator.evaluate(loaded.model, image_features=memo)  # keeps the features
        kept = min(evaluator.evaluate(loaded.model, image_features=memo).seconds for _ in range(args.repeats))
        print(
            f"{'':>8}  with the image features kept: best of {args.repeats} passes {kept:.2f}s "
            f"({first.questions / kept:.1f} questions/s, {best / kept:.2f}x the later passes)"
        )
    print(f"logits / generate throughput ratio: {throughput['logits'] / throughput['generate']:.2f}x")


if __name__ == "__main__":
    main()
