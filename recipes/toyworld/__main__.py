"""python -m recipes.toyworld pretrain [--init | --ship]

The toy world's command line: ``pretrain`` finds the toy base model (the ~1M-parameter
Qwen2.5-VL pre-trained on the toy world's pre-training mix), copying the shipped one into the
cache, or pre-trains it when the toy world no longer matches the shipped base (5-15 minutes on 2
CPU cores), and prints its folder and pre-training report. ``--init``
gives the randomly initialised model instead (built in seconds). ``--ship`` pre-trains the base
from scratch and replaces the shipped copy and its manifest (run it after changing the toy world,
the prompts or the pre-training settings, and commit the result). The toy datasets themselves
come from ``python -m recipes.data toy`` (or on first use of a registered name).

    python -m recipes.toyworld pretrain          # -> ~/.cache/forgetless/models/toy-qwen2.5-vl-<key>
    python -m recipes.toyworld pretrain --ship   # -> recipes/toyworld/shipped/toy-qwen2.5-vl/
"""

from __future__ import annotations

import argparse
import json
import sys

from recipes.common.input_errors import input_boundary
from recipes.toyworld.base import PRETRAIN_REPORT_NAME, ship_base, toy_model_dir


@input_boundary
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.toyworld", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    pretrain = commands.add_parser(
        "pretrain", help="build (or find) the pre-trained toy base model and print its folder"
    )
    choice = pretrain.add_mutually_exclusive_group()
    choice.add_argument("--init", action="store_true", help="the randomly initialised toy model instead")
    choice.add_argument("--ship", action="store_true", help="pre-train from scratch and replace the shipped base")
    args = parser.parse_args(argv)
    path = ship_base() if args.ship else toy_model_dir(pretrained=not args.init)
    print(path)
    report = path / PRETRAIN_REPORT_NAME
    if report.is_file():
        details = json.loads(report.read_text())
        print(f"pre-trained {details['pretrain']['steps']} steps, final loss {details['final_loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
