"""python -m jobs.finetune --model toy-qwen2.5-vl --parts llm --method full --lr 1e-5 --steps 200 --workers 2

Run one trial without a sweep: a Ray Train + DeepSpeed fine-tune that evaluates every
checkpoint on the 2x2 suite and logs to MLflow (experiment ``--experiment``, default
``forgetless``). Running the same command again resumes the trial from its last checkpoint;
a finished trial is reported, not rerun. Every ``TrialConfig`` field is a flag (``--help``).
Connects to ``RAY_ADDRESS`` when set, else starts a local Ray.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import typing
from dataclasses import MISSING, fields

import ray

from contract.layout import QUADRANT_ACCURACY_PREFIX, QUADRANT_DELTA_PREFIX
from jobs.finetune.config import TrialConfig
from jobs.trial import find_trial_run, run_trial
from recipes.data.stream import MixSource

CLI_HIDDEN = {"mix", "run_id", "sweep"}
"""Fields the CLI does not expose as plain flags (``--mix`` has its own syntax)."""


def field_docstrings(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (attribute docstrings, read from the source)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _flag_type(annotation: str):
    if "float" in annotation:
        return float
    if "int" in annotation:
        return int
    return str


def parse_mix(text: str) -> MixSource:
    """``DATASET=RATIO`` -> MixSource."""
    dataset, sep, ratio = text.rpartition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--mix expects DATASET=RATIO, got {text!r}")
    try:
        return MixSource(dataset, float(ratio))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.finetune",
        description="Run one fine-tuning trial (Ray Train + DeepSpeed) and log it to MLflow.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    docs = field_docstrings(TrialConfig)
    hints = typing.get_type_hints(TrialConfig)
    for item in fields(TrialConfig):
        if item.name in CLI_HIDDEN:
            continue
        required = item.default is MISSING
        parser.add_argument(
            f"--{item.name.replace('_', '-')}",
            dest=item.name,
            type=_flag_type(str(hints[item.name])),
            required=required,
            default=None if required else item.default,
            help=docs.get(item.name, ""),
        )
    parser.add_argument("--mix", type=parse_mix, action="append", default=[], metavar="DATASET=RATIO",
                        help="mix a dataset into the training stream (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    try:
        trial = TrialConfig(**args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    existing = find_trial_run(trial)
    if existing and existing[1] == "finished":
        print(f"trial {trial.name} ({trial.trial_id}) already finished: MLflow run {existing[0]}")
        return 0
    ray.init(ignore_reinit_error=True, log_to_driver=True)
    print(f"trial {trial.name} ({trial.trial_id}): {trial.workers} worker(s), {trial.steps} steps, "
          f"evaluating every {trial.eval_every} steps on suite {trial.eval_suite!r}")
    outcome = run_trial(trial)
    print(f"trial {trial.name}: {outcome.status}; MLflow run {outcome.run_id} in experiment {trial.experiment!r}")
    quadrants = {k: v for k, v in outcome.metrics.items() if k.startswith((QUADRANT_ACCURACY_PREFIX, QUADRANT_DELTA_PREFIX))}
    for key in sorted(quadrants):
        print(f"  {key:<18} {quadrants[key]:8.2f}")
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
    return 0 if outcome.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
