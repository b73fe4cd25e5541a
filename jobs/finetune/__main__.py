"""python -m jobs.finetune --model toy-qwen2.5-vl --parts llm --method full --lr 1e-5 --steps 200 --workers 2

Run one trial without a sweep: a Ray Train + DeepSpeed fine-tune that evaluates every
checkpoint on the 2x2 suite and logs to MLflow (experiment ``--experiment``, default
``forgetless``). Running the same command again resumes the trial from its last checkpoint;
a finished trial is reported, not rerun. Every ``TrialConfig`` field is a flag, generated from
the model: its type from the field's annotation (tuples take several values), its help from the
field's docstring, and the values are checked by the model itself, so a bad flag stops with one
line naming it and exit status 2 before Ray starts. Connects to ``RAY_ADDRESS`` when set, else
starts a local Ray.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from typing import Any

import ray
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from contract.exits import EXIT_BAD_INPUT
from contract.layout import QUADRANT_ACCURACY_PREFIX, QUADRANT_DELTA_PREFIX
from jobs.finetune.config import TrialConfig, problem_message
from jobs.finetune.flag_checks import trial_flag_problems
from jobs.trial import find_trial_run, run_trial
from recipes.common.input_errors import input_boundary
from recipes.common.reachability import preflight_problem
from recipes.common.redaction import install_log_redaction, redact
from recipes.data.stream import MixSource

CLI_HIDDEN = {"mix", "run_id", "sweep"}
"""Fields the CLI does not expose as plain flags (``--mix`` has its own syntax)."""


def flag(name: str) -> str:
    """The flag of a field: ``--micro-batch-size``."""
    return f"--{name.replace('_', '-')}"


def value_type(annotation: Any) -> tuple[type, bool, tuple | None]:
    """(type of one value, whether the flag takes several, the choices) of a field annotation."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return value_type(arguments[0])
    if origin in (typing.Union, types.UnionType):
        return value_type(next(argument for argument in arguments if argument is not type(None)))
    if origin is tuple:
        one, _, _ = value_type(arguments[0])
        return one, True, None
    if origin is typing.Literal:
        return type(arguments[0]), False, arguments
    if annotation is bool:
        return str, False, ("true", "false")
    if annotation in (int, float, str):
        return annotation, False, None
    return str, False, None


def add_field(parser: argparse.ArgumentParser, name: str, info: FieldInfo) -> None:
    """One flag for one field of the model."""
    one, several, choices = value_type(info.annotation)
    required = info.is_required()
    parser.add_argument(
        flag(name),
        dest=name,
        type=one,
        nargs="+" if several else None,
        choices=choices,
        required=required,
        default=argparse.SUPPRESS,
        help=" ".join((info.description or "").split()) + ("" if required else f" (default: {info.default})"),
    )


def parse_mix(text: str) -> MixSource:
    """``DATASET=RATIO`` -> MixSource."""
    dataset, sep, ratio = text.rpartition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--mix expects DATASET=RATIO, got {text!r}")
    try:
        return MixSource(dataset, float(ratio))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class FlagParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``error: argument --lr: invalid float value: 'x'``."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = FlagParser(
        prog="python -m jobs.finetune",
        description="Run one fine-tuning trial (Ray Train + DeepSpeed) and log it to MLflow.",
    )
    for name, info in TrialConfig.model_fields.items():
        if name not in CLI_HIDDEN:
            add_field(parser, name, info)
    parser.add_argument(
        "--mix",
        type=parse_mix,
        action="append",
        default=argparse.SUPPRESS,
        metavar="DATASET=RATIO",
        help="mix a dataset into the training stream (repeatable)",
    )
    return parser


def problem_lines(error: ValidationError) -> list[str]:
    """One line per problem, naming the flag: ``--lr: must be > 0``; a rule between settings names the
    flags of the settings it mentions: ``--batch-size, --workers: invalid trial: batch_size 12 ...``."""
    lines = []
    for item in error.errors(include_url=False):
        message = problem_message(item)
        if item["loc"]:
            lines.append(f"{flag(str(item['loc'][0]))}: {message}")
            continue
        named = [flag(name) for name in TrialConfig.model_fields if re.search(rf"\b{name}\b", message)]
        lines.append(f"{', '.join(named)}: {message}" if named else message)
    return lines


def parse_trial(argv: list[str] | None = None) -> TrialConfig:
    """The trial the flags describe; raises pydantic's ValidationError (argparse exits on malformed flags)."""
    return TrialConfig(**vars(build_parser().parse_args(argv)))


@input_boundary
def main(argv: list[str] | None = None) -> int:
    try:
        trial = parse_trial(argv)
    except ValidationError as error:
        for line in problem_lines(error):
            print(f"error: {redact(line)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    install_log_redaction()
    problems = trial_flag_problems(trial) or [text for text in [preflight_problem(trial.tracking_uri)] if text]
    if problems:
        print("\n".join(f"error: {text}" for text in problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    existing = find_trial_run(trial)
    if existing and existing[1] == "finished":
        print(f"trial {trial.name} ({trial.trial_id}) already finished: MLflow run {existing[0]}")
        return 0
    ray.init(ignore_reinit_error=True, log_to_driver=True)
    print(
        f"trial {trial.name} ({trial.trial_id}): {trial.workers} worker(s), {trial.steps} steps, "
        f"evaluating every {trial.eval_every} steps on suite {trial.eval_suite!r}"
    )
    outcome = run_trial(trial)
    print(f"trial {trial.name}: {outcome.status}; MLflow run {outcome.run_id} in experiment {trial.experiment!r}")
    quadrants = {
        k: v for k, v in outcome.metrics.items() if k.startswith((QUADRANT_ACCURACY_PREFIX, QUADRANT_DELTA_PREFIX))
    }
    for key in sorted(quadrants):
        print(f"  {key:<18} {quadrants[key]:8.2f}")
    if outcome.error:
        print(f"error: {redact(outcome.error)}", file=sys.stderr)
    return 0 if outcome.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
