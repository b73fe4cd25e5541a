"""python -m recipes.data toy --out DIR [--seed N] [--size small|default]
python -m recipes.data imagenet-vqa --images DIR --clip PATH --out FILE [--seed N]
python -m recipes.data adapt {imagewikiqa,vmcbench,mmmu,mllm-cl,llava-instruct,vqa,class-folder} --input PATH --out FILE
python -m recipes.data inspect FILE [--samples N] [--skip-bad]

Command line of the dataset tools: generate the toy world, build ImageNet-VQA from a class
folder, adapt public benchmarks (multiple-choice and free-form) to the data contract, and
inspect a data file. ``--help`` after
a command lists its options. Images that data files name by path must lie inside the file's
folder (or ``--image-root``); ``--allow-external-images`` (before the command) also reads
absolute paths and URLs.

This command line is the one module of ``recipes.data`` that imports the adapters
(``recipes.adapters``) and the toy world (``recipes.toyworld``); the contract's other modules
import neither.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from contract.exits import EXIT_BAD_INPUT
from recipes.adapters.formats import FORMATS, adapt
from recipes.adapters.freeform import MLLM_CL_MATCHERS
from recipes.adapters.imagenet_vqa import build_imagenet_vqa
from recipes.common.input_errors import input_boundary
from recipes.common.redaction import credential_problem, install_log_redaction, redact
from recipes.data.image_paths import EXTERNAL_IMAGES_ENV
from recipes.data.readers import read_records_report
from recipes.data.schema import MATCHER_NAMES, RecordFormatError
from recipes.data.summary import summarize
from recipes.toyworld.freeform import TOY_FREEFORM_NAMES, generate_toy_freeform
from recipes.toyworld.world import TOY_DATASET_NAMES, ToyWorldConfig, generate_toy_world

MAX_SEED = 2**32 - 1
"""Largest seed the commands take (numpy's generators take seeds below 2**32)."""


def _bounded_int(low: int, high: int):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text[:40]}")
        return value

    return parse


SEED = _bounded_int(0, MAX_SEED)
COUNT = _bounded_int(0, 1_000_000)


def _toy(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = ToyWorldConfig(seed=args.seed, size=args.size, image_size=args.image_size)
    files = [f"{name}.parquet" for name in (*TOY_DATASET_NAMES, *TOY_FREEFORM_NAMES)] + ["suite.yaml", "manifest.json"]
    existing = [name for name in files if os.path.exists(os.path.join(args.out, name))]
    if existing and not args.overwrite:
        raise FileExistsError(
            f"{args.out} already has {', '.join(existing)}; pass overwrite=True (--overwrite) to replace them"
        )
    manifest = generate_toy_world(args.out, config, overwrite=args.overwrite)
    for name, entry in manifest["datasets"].items():
        print(f"{name:24s} {entry['rows']:6d} rows  {entry['quadrant']:8s}  {entry['file']}")
    for name, rows in generate_toy_freeform(args.out, config).items():
        print(f"{name:24s} {rows:6d} rows  {'freeform':8s}  {name}.parquet")
    print(f"toy world written to {args.out} in {time.perf_counter() - started:.1f}s (suite.yaml, manifest.json)")
    return 0


def _imagenet_vqa(args: argparse.Namespace) -> int:
    rows = build_imagenet_vqa(
        args.images,
        args.clip,
        args.out,
        seed=args.seed,
        names_file=args.class_names,
        classes_file=args.classes,
        files_file=args.files,
        source=args.source,
        overwrite=args.overwrite,
    )
    print(f"{args.out}: {rows} questions")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    for flag, value in (("--input", args.input), ("--out", args.out), ("--image-root", args.image_root)):
        problem = credential_problem(flag, value)
        if problem:
            raise ValueError(problem)
    if args.source is not None and redact(args.source) != args.source:
        raise ValueError("--source: holds a credential (a URI's user or token, or a secret environment value)")
    adapted = adapt(
        args.format,
        args.input,
        args.out,
        source=args.source,
        image_root=args.image_root,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        clip_path=args.clip,
        seed=args.seed,
        question=args.question,
        names_file=args.class_names,
        matcher=args.matcher,
        domain=args.domain,
    )
    print(f"{adapted.summary()} -> {args.out}")
    for bad in adapted.bad[:10]:
        print(f"  skipped {bad.describe()}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    report = read_records_report(args.file, skip_bad=args.skip_bad)
    print(summarize(report.table, samples=args.samples, title=args.file))
    if report.skipped:
        print(f"\nskipped {report.skipped_count} bad rows:")
        for bad in report.skipped[:10]:
            print(f"  {bad.describe()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.data", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--allow-external-images",
        action="store_true",
        help="let data files name images by absolute path or URL (default: only paths inside the file's folder "
        "or --image-root)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    toy = commands.add_parser(
        "toy", help="generate the toy world (all MCQ and free-form datasets, suite.yaml, manifest.json)"
    )
    toy.add_argument("--out", required=True, help="output folder")
    toy.add_argument("--seed", type=SEED, default=0, help="seed of every random choice (default 0)")
    toy.add_argument("--size", choices=("small", "default"), default="default", help="row counts (default: default)")
    toy.add_argument("--image-size", type=_bounded_int(28, 1024), default=56, help="image side in pixels (default 56)")
    toy.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    toy.set_defaults(run=_toy)

    imagenet = commands.add_parser(
        "imagenet-vqa", help="ImageNet-VQA from a class folder with CLIP-similar distractors"
    )
    imagenet.add_argument("--images", required=True, help="class folder root (root/<class_dir>/*.JPEG)")
    imagenet.add_argument("--clip", required=True, help="CLIP model directory (CLIPModel + tokenizer)")
    imagenet.add_argument("--out", required=True, help="output parquet file")
    imagenet.add_argument("--seed", type=SEED, default=0, help="seed of distractors and option order (default 0)")
    imagenet.add_argument("--class-names", help="class names file (ImageNet LOC_synset_mapping.txt, or JSON)")
    imagenet.add_argument("--classes", help="class list file (one class id per line), with --files")
    imagenet.add_argument(
        "--files", help="files list ('<path relative to --images> <class id>' per line), with --classes"
    )
    imagenet.add_argument("--source", help="dataset name in the source column (default: the output file's stem)")
    imagenet.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    imagenet.set_defaults(run=_imagenet_vqa)

    adapt = commands.add_parser(
        "adapt", help="adapt a public benchmark or conversation file (or class folder) to the data contract"
    )
    adapt.add_argument("format", choices=FORMATS, help="source format")
    adapt.add_argument("--input", required=True, help="source file (.jsonl, .parquet, .tsv, .json) or class folder")
    adapt.add_argument("--out", required=True, help="output parquet file")
    adapt.add_argument("--source", help="dataset name in the source column (default: the output file's stem)")
    adapt.add_argument(
        "--image-root", help="folder that relative image paths are relative to (default: the input's folder)"
    )
    adapt.add_argument("--skip-bad", action="store_true", help="skip rows that cannot be adapted (and report how many)")
    adapt.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    adapt.add_argument(
        "--clip", help="class-folder: CLIP model directory for CLIP-similar distractors (default: random)"
    )
    adapt.add_argument("--seed", type=SEED, default=0, help="class-folder: seed of distractors and option order")
    adapt.add_argument(
        "--question", default="What is this?", help="class-folder: the question (default 'What is this?')"
    )
    adapt.add_argument("--class-names", help="class-folder: class names file")
    adapt.add_argument(
        "--matcher",
        choices=MATCHER_NAMES,
        help="llava-instruct, vqa: how the free-form answers are scored (default exact)",
    )
    adapt.add_argument(
        "--domain",
        choices=tuple(MLLM_CL_MATCHERS),
        help="mllm-cl: the domain, whose matcher scores the free-form rows (default: the input's folder name)",
    )
    adapt.set_defaults(run=_adapt)

    inspect = commands.add_parser(
        "inspect", help="summarize a data file (rows per kind, options, answer balance, matchers, samples)"
    )
    inspect.add_argument("file", help="data file (.parquet or .jsonl, local or URL)")
    inspect.add_argument("--samples", type=COUNT, default=3, help="sample rows to print (default 3)")
    inspect.add_argument(
        "--skip-bad", action="store_true", help="skip bad rows (and report how many) instead of failing"
    )
    inspect.set_defaults(run=_inspect)
    return parser


@input_boundary
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    if args.allow_external_images:
        os.environ[EXTERNAL_IMAGES_ENV] = "1"
    try:
        return args.run(args)
    except (RecordFormatError, OSError, ValueError) as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
