"""python -m jobs.evaluate --model M [--checkpoint C ...] --suite S --mode logits|generate
python -m jobs.evaluate score --predictions FILE --matcher NAME

One-off evaluation on a 2x2 suite, printed as a quadrant table: the base model, then each
trial checkpoint given (a ``checkpoint_*`` directory of a trial run; its trial settings say
which parts/method to rebuild), with the change of every quadrant vs the base model. The
``score`` command instead scores an existing predictions file (LLaMA-Factory's
``generated_predictions.jsonl``: ``prompt``, ``predict``, ``label``) with one of the paper's
matchers and prints the accuracy (``jobs.evaluate.predictions_file``).

    python -m jobs.evaluate --model toy-qwen2.5-vl --suite toy --mode logits
    python -m jobs.evaluate --model toy-qwen2.5-vl --checkpoint sweeps/demo-forgetting/<trial>/checkpoint_... \\
        --probe classname --probe counting
    python -m jobs.evaluate ... --predictions out/   # per-example predictions as parquet files
    python -m jobs.evaluate score --predictions RS/generated_predictions.jsonl --matcher rs

``--probe classname`` runs the class-label distractor probe (default dataset
toy-wiki-classname); ``--probe counting`` the counting-bias probe (default dataset
toy-text-qa, first ``--probe-samples`` questions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.parquet as pq

from contract.exits import EXIT_BAD_INPUT
from contract.layout import DATASET_ACCURACY_PREFIX, QUADRANT_ACCURACY_PREFIX, QUADRANTS, accuracy_metric, stderr_metric
from jobs.checkpoints import load_trial_checkpoint
from jobs.evaluate.matchers import MATCHERS
from jobs.evaluate.predictions_file import PredictionsFileError, score_predictions_file
from jobs.evaluate.probe_runs import classname_probe, counting_probe
from jobs.evaluate.scoring import MODES
from jobs.evaluate.suite_eval import SuiteEvaluator
from recipes.common.input_errors import input_boundary
from recipes.common.redaction import credential_problem, redact
from recipes.common.text_table import text_table
from recipes.data.encoded_store import DEFAULT_STORE_BYTES
from recipes.data.registry import load_dataset
from recipes.data.suites import load_suite
from recipes.models import load_model

PROBES = ("classname", "counting")
DEFAULT_PROBE_DATASETS = {"classname": "toy-wiki-classname", "counting": "toy-text-qa"}


def quadrant_table(columns: dict[str, dict[str, float]]) -> str:
    """Rows: quadrants (with ± their standard error) then datasets; one column per evaluated model,
    deltas vs the first."""
    names = list(columns)
    base = columns[names[0]]
    datasets = sorted(
        k for k in base if k.startswith(DATASET_ACCURACY_PREFIX) and not k.startswith(QUADRANT_ACCURACY_PREFIX)
    )
    keys = [accuracy_metric(q) for q in QUADRANTS] + datasets
    errors = {accuracy_metric(q): stderr_metric(q) for q in QUADRANTS}
    header = ["metric (%)", *names]
    rows = []
    for key in keys:
        cells = []
        for name in names:
            value = columns[name][key]
            text = f"{value:.1f}" + (f" ± {columns[name][errors[key]]:.1f}" if key in errors else "")
            cells.append(text if name == names[0] else f"{text} ({value - base[key]:+.1f})")
        rows.append([key.removeprefix(DATASET_ACCURACY_PREFIX), *cells])
    lines = text_table(header, rows).split("\n")
    lines.insert(2 + len(QUADRANTS), "")  # a blank line between the quadrants and the datasets
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", required=True, help="registry name, local dir or cached Hub id of the base model")
    parser.add_argument("--checkpoint", action="append", default=[], help="trial checkpoint directory (repeatable)")
    parser.add_argument("--suite", default="toy", help="named suite or suite YAML")
    parser.add_argument("--mode", choices=MODES, default="logits")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=8, help="generation budget in generate mode")
    parser.add_argument("--predictions", type=Path, help="directory for per-example predictions (parquet)")
    parser.add_argument("--probe", action="append", choices=PROBES, default=[], help="also run a probe (repeatable)")
    parser.add_argument("--probe-dataset", help="dataset for the probes (default per probe)")
    parser.add_argument("--probe-samples", type=int, default=64, help="prompts for the counting probe")
    return parser


SCORE_COMMAND = "score"
"""First argument that selects the predictions-file scorer instead of a model evaluation."""


def build_score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m jobs.evaluate {SCORE_COMMAND}",
        description="Score a predictions file (jsonl with prompt, predict, label) with one of the paper's matchers.",
    )
    parser.add_argument(
        "--predictions", required=True, help="predictions jsonl (LLaMA-Factory generated_predictions.jsonl)"
    )
    parser.add_argument(
        "--matcher", required=True, choices=sorted(MATCHERS), help="answer matcher (Listings 1-5, exact)"
    )
    return parser


def score_main(argv: list[str]) -> int:
    args = build_score_parser().parse_args(argv)
    try:
        result = score_predictions_file(args.predictions, args.matcher)
    except (PredictionsFileError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.summary())
    return 0


@input_boundary
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [SCORE_COMMAND]:
        return score_main(argv[1:])
    args = build_parser().parse_args(argv)

    try:
        for flag, value in (("--model", args.model), ("--suite", args.suite), ("--probe-dataset", args.probe_dataset)):
            problem = credential_problem(flag, value)
            if problem:
                raise ValueError(problem)
        if args.predictions is not None and str(args.predictions).split("/")[0].endswith(":"):
            raise ValueError("--predictions: expected a local directory, not a URL")
        if args.predictions is not None and args.predictions.exists() and not args.predictions.is_dir():
            raise ValueError(f"--predictions: {args.predictions} is a file, not a directory")
        suite = load_suite(args.suite)
        models = [("base", load_model(args.model))]
        for index, checkpoint in enumerate(args.checkpoint, start=1):
            loaded, trial, step = load_trial_checkpoint(checkpoint)
            if trial["model"] != args.model:
                raise ValueError(f"checkpoint {checkpoint} was trained from {trial['model']!r}, not {args.model!r}")
            models.append((f"ckpt{index} (step {step})", loaded))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT

    evaluator = SuiteEvaluator(
        suite,
        models[0][1].processor,
        mode=args.mode,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        store_bytes=DEFAULT_STORE_BYTES,  # rows a sweep or an earlier run on this machine encoded are loaded
    )
    probe_rows = {
        probe: load_dataset(args.probe_dataset or DEFAULT_PROBE_DATASETS[probe]).to_pylist() for probe in args.probe
    }
    columns: dict[str, dict[str, float]] = {}
    probes: dict[str, list[str]] = {probe: [] for probe in args.probe}
    for label, loaded in models:
        result = evaluator.evaluate(loaded.model, progress=f"evaluating {label}")  # a bar on a terminal
        columns[label] = result.metrics
        print(
            f"{label}: {result.questions} questions in {result.seconds:.1f}s ({result.questions / result.seconds:.0f}/s)"
        )
        if args.predictions:
            args.predictions.mkdir(parents=True, exist_ok=True)
            pq.write_table(result.predictions, args.predictions / f"{label.split()[0]}.parquet")
        for probe, rows in probe_rows.items():
            if probe == "classname":
                stats = classname_probe(loaded.model, loaded.processor, rows, args.batch_size)
                probes[probe].append(
                    f"{label}: accuracy {stats['accuracy']:.1f}%, mischoice on class name {stats['mischoice_pct']:.1f}% "
                    f"of {stats['n_errors']} errors"
                )
            else:
                bias = counting_probe(loaded.model, loaded.processor, rows[: args.probe_samples], args.max_new_tokens)
                probes[probe].append(
                    f"{label}: number-token mass mean {bias.mean_mass.mean:.3g} ± {bias.mean_mass.std:.2g}, "
                    f"peak {bias.peak_mass.mean:.3g} ± {bias.peak_mass.std:.2g}; max number-token prob mean "
                    f"{bias.mean_max_prob.mean:.3g} ± {bias.mean_max_prob.std:.2g}, peak "
                    f"{bias.peak_max_prob.mean:.3g} ± {bias.peak_max_prob.std:.2g} (n={bias.n_samples})"
                )
    print()
    print(f"suite {suite.name!r}, mode {args.mode}")
    print(quadrant_table(columns))
    for probe, lines in probes.items():
        print(f"\n{probe} probe:")
        print("\n".join(f"  {line}" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
