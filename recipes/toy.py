"""python -m recipes.toy pretrain [--init]

The toy world's command line: ``pretrain`` builds the toy base model (the ~1M-parameter
Qwen2.5-VL pre-trained on the toy world's pre-training mix, 5-15 minutes on 2 CPU cores) or
finds it in the cache, and prints its folder and pre-training report. Sweeps build it on first
use by themselves; running this first only moves the wait. ``--init`` gives the randomly
initialised model instead (built in seconds). The toy datasets themselves come from
``python -m recipes.data toy`` (or on first use of a registered name).

    python -m recipes.toy pretrain          # -> ~/.cache/forgetless/models/toy-qwen2.5-vl-<key>
"""

from __future__ import annotations

import argparse
import json
import sys

from recipes.models.toy_base import toy_model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.toy", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    pretrain = commands.add_parser("pretrain", help="build (or find) the pre-trained toy base model and print its folder")
    pretrain.add_argument("--init", action="store_true", help="the randomly initialised toy model instead")
    args = parser.parse_args(argv)
    path = toy_model_dir(pretrained=not args.init)
    print(path)
    report = path / "pretrain_report.json"
    if report.is_file():
        details = json.loads(report.read_text())
        print(f"pre-trained {details['pretrain']['steps']} steps, final loss {details['final_loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
