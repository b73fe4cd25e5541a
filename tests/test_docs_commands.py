"""Every command the docs show runs a module of this project that exists, with flags its parser accepts.

    python -m pytest -q tests/test_docs_commands.py

The commands are the lines of the fenced shell blocks of README.md, docs/*.md and cluster/README.md,
and the inline code spans that start a Python command (the commands tables). A command that runs
a project module (``python -m orchestrator.sweep ...``, ``python benchmarks/x.py ...``, and the inner
command of ``ray job submit ... -- python -m ...``) must name a module or script of this
repository, every ``--flag`` it uses must appear in that module's own ``--help`` (its subcommand's,
after a subcommand such as ``python -m recipes.data toy``), and every path of the repository it
names (``grids/...``, ``cluster/...``) must exist. Every other program the docs run is listed in
NOT_CHECKED with the reason it cannot be checked here; a command of a program in neither list fails.

The ``--help`` texts are collected once, in one Python process that runs each module as
``python -m`` would (``runpy``) with ``--help``; a module that fails there is run again in a
process of its own before it counts as failed.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = ("README.md", "docs/*.md", "cluster/README.md")
"""The pages whose commands are checked (globs relative to the repository root)."""
SHELL_FENCES = {"bash", "sh", "shell", "console", "zsh"}
"""Info strings of fenced blocks that hold shell commands. A bare fence (no info string) usually
holds output: only its lines that start a Python command are taken."""
PYTHON_COMMAND = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*python3?\s|\s--\spython3?\s")
"""Code that starts a Python command, or launches one after `` -- ``."""
PROJECT_PACKAGES = ("orchestrator", "jobs", "recipes", "analysis", "contract", "benchmarks", "tests", "docs")
"""Top-level names of ``python -m`` targets and scripts that belong to this repository."""
REPO_PATH = re.compile(r"^(?:\./)?((?:grids|cluster|suites|benchmarks|docs|requirements|tests|\.ci)/[a-z0-9_./-]+)$")
"""An argument naming a file of the repository (placeholders such as ``grids/GRID.yaml`` or
``grids/<name>.yaml`` do not match: capitals and brackets are not allowed)."""

NOT_CHECKED = {
    "ray": "needs a running Ray cluster (the inner `-- python -m ...` of `ray job submit` is checked)",
    "kubectl": "needs a Kubernetes cluster",
    "helm": "needs a Kubernetes cluster",
    "docker": "needs a Docker daemon and a registry",
    "aws": "a cloud CLI: needs an account",
    "gcloud": "a cloud CLI: needs an account",
    "mlflow": "MLflow's own CLI (a server or the UI), not a module of this project",
    "pip": "installs packages from the network",
    "hf": "the Hugging Face Hub's CLI: downloads from the network",
    "apt-get": "installs system packages as root",
    "git": "works on a clone, not on this tree's docs",
    "cd": "changes the directory only",
    ".": "activates a virtual environment",
    "source": "activates a virtual environment",
    "chromium": "a browser; docs/screenshots.py and tests/test_report_browser.py drive it",
}
"""Programs the docs run that this test does not check, with the reason."""
NOT_CHECKED_MODULES = {
    "venv": "the standard library's virtual environments",
    "pytest": "pytest's own command line (its flags come from pytest and its plugins)",
    "pip": "installs packages from the network",
}
"""``python -m`` targets outside this project, with the reason they are not checked."""
SCRIPTS_RUN_BY = ("bash", "sh")
"""Programs whose first argument is a script of the repository: the script must exist."""


@dataclass(frozen=True)
class DocCommand:
    """One simple command (no ``&&``, ``|`` or ``;``) found in a page."""

    where: str
    """``file:line``."""
    words: tuple[str, ...]
    """The command's words, environment assignments left out."""


@dataclass(frozen=True)
class Target:
    """What a Python command runs: a module (``-m``) or a script path, and its arguments."""

    kind: str
    """``module`` or ``script``."""
    name: str
    """``orchestrator.sweep`` or ``benchmarks/eval_throughput.py``."""
    args: tuple[str, ...]


# -- reading the pages ----------------------------------------------------------------------------


def doc_paths() -> list[Path]:
    return sorted({path for pattern in DOC_FILES for path in ROOT.glob(pattern)})


def shell_words(text: str) -> list[list[str]]:
    """Simple commands of a shell line: words split at ``&&``, ``||``, ``;``, ``|``, ``&`` and brackets;
    redirections and their targets dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    tokens = list(lexer)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token and set(token) <= set("&|;()"):
            commands.append([])
        elif token and set(token) <= set("<>"):
            index += 1  # the redirection's target
            if commands[-1] and commands[-1][-1].isdigit():  # 2> file
                commands[-1].pop()
        else:
            commands[-1].append(token)
        index += 1
    return [command for command in commands if command]


def without_assignments(words: list[str]) -> tuple[str, ...]:
    """Words after leading ``NAME=value`` environment assignments."""
    index = 0
    while index < len(words) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[index]):
        index += 1
    return tuple(words[index:])


def fenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command line) of the shell fences, continuation lines joined, prompts and comments dropped."""
    found: list[tuple[int, str]] = []
    fence: tuple[str, str] | None = None  # (marker, "shell" | "bare" | "other")
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            if opening := re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", stripped):
                info = opening.group(2).lower()
                fence = (opening.group(1), "shell" if info in SHELL_FENCES else "bare" if not info else "other")
            continue
        if stripped.startswith(fence[0]) and not stripped.strip(fence[0][0]):
            fence = None
            continue
        if fence[1] == "other":
            continue
        if pending:
            number, stripped = pending[0], pending[1] + " " + stripped
            pending = None
        if stripped.endswith("\\"):
            pending = (number, stripped[:-1].rstrip())
            continue
        stripped = stripped.removeprefix("$ ")
        if stripped and not stripped.startswith("#") and (fence[1] == "shell" or PYTHON_COMMAND.search(stripped)):
            found.append((number, stripped))
    return found


def inline_commands(text: str) -> list[tuple[int, str]]:
    """(line number, code) of inline code spans outside fences that start a Python command."""
    found = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(r"^\s*(`{3,}|~{3,})", line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for span in re.findall(r"`([^`\n]+)`", line):
            code = span.replace("\\|", " ").strip()  # a table's escaped pipe separates alternatives
            if PYTHON_COMMAND.search(code):
                found.append((number, code))
    return found


def commands_in(path: Path) -> list[DocCommand]:
    text = path.read_text(encoding="utf-8")
    relative = path.relative_to(ROOT).as_posix()
    commands = []
    for number, line in fenced_lines(text) + inline_commands(text):
        try:
            parts = shell_words(line)
        except ValueError as error:  # unbalanced quotes
            if "python" in line:
                raise AssertionError(f"{relative}:{number}: cannot split {line!r}: {error}") from None
            continue
        for words in parts:
            if remaining := without_assignments(words):
                commands.append(DocCommand(f"{relative}:{number}", remaining))
    return commands


@cache
def all_commands() -> tuple[DocCommand, ...]:
    return tuple(command for path in doc_paths() for command in commands_in(path))


# -- what a command runs --------------------------------------------------------------------------


def python_target(words: tuple[str, ...]) -> Target | None:
    """The module or script of a ``python``/``python3`` command (None when it runs neither)."""
    if not words or not re.fullmatch(r"python(3(\.\d+)?)?", words[0]):
        return None
    rest = list(words[1:])
    while rest and rest[0].startswith("-") and rest[0] not in ("-m",):
        rest.pop(0)  # interpreter options such as -u
    if len(rest) >= 2 and rest[0] == "-m":
        return Target("module", rest[1], tuple(rest[2:]))
    if rest and rest[0].endswith(".py"):
        return Target("script", rest[0].removeprefix("./"), tuple(rest[1:]))
    return None


def inner_command(words: tuple[str, ...]) -> tuple[str, ...] | None:
    """The command after `` -- `` of a launcher such as ``ray job submit ... -- python -m ...``."""
    if "--" in words:
        return without_assignments(list(words[words.index("--") + 1 :]))
    return None


def is_project(target: Target) -> bool:
    top = re.split(r"[./]", target.name)[0]
    return top in PROJECT_PACKAGES


def module_exists(target: Target) -> bool:
    if target.kind == "script":
        return (ROOT / target.name).is_file()
    path = ROOT.joinpath(*target.name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def plain_args(args: tuple[str, ...]) -> list[str]:
    """Arguments with the brackets of optional parts stripped (``[--dry-run]`` -> ``--dry-run``)."""
    return [arg.strip("[]") for arg in args if arg.strip("[]") not in ("", "...", "…")]


def subcommand_candidate(args: tuple[str, ...]) -> str | None:
    """The first word that is not a flag, when it could be a subcommand (``toy``, ``pretrain``, ``score``)."""
    for arg in plain_args(args):
        if arg.startswith("-"):
            continue
        return arg if re.fullmatch(r"[a-z][a-z0-9-]*", arg) else None
    return None


def flags(args: list[str]) -> list[str]:
    """The flags among ``args`` (``--out=DIR`` gives ``--out``); ``--`` itself and negative numbers are not flags."""
    return [
        arg.split("=", 1)[0]
        for arg in args
        if arg.startswith("-") and arg != "--" and not re.fullmatch(r"-[\d.e+-]+", arg)
    ]


def repo_paths(words: tuple[str, ...]) -> list[str]:
    found = []
    for word in words:
        for value in (word, word.split("=", 1)[-1]):
            if match := REPO_PATH.match(value.strip("[]")):
                found.append(match.group(1).rstrip("/."))
                break
    return found


def has_flag(help_text: str, flag: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", help_text) is not None


# -- the --help texts -----------------------------------------------------------------------------

HELP_RUNNER = r"""
import contextlib, io, json, os, runpy, sys, traceback, warnings
warnings.simplefilter("ignore")
jobs = json.loads(sys.argv[1])
results = []
for kind, name, args in jobs:
    out = io.StringIO()
    sys.argv = [name if kind == "script" else name.rsplit(".", 1)[-1], *args, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if kind == "module":
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(name, run_name="__main__")
        code = "returned without exiting: --help is not handled"
    except SystemExit as done:
        code = 0 if done.code in (None, 0) else f"exit status {done.code}"
    except BaseException:
        out.write(traceback.format_exc())
        code = "raised"
    results.append({"code": code, "output": out.getvalue()})
sys.stdout = sys.__stdout__
print("\n@@HELP@@" + json.dumps(results))
"""
"""Runs each (kind, name, args) job with ``--help`` appended, in this one process, and prints the results as JSON."""


def run_helps(jobs: list[tuple[str, str, tuple[str, ...]]]) -> dict[tuple[str, str, tuple[str, ...]], dict]:
    if not jobs:
        return {}
    done = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, json.dumps(jobs)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if "@@HELP@@" not in done.stdout:
        raise AssertionError(f"collecting --help texts failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    results = json.loads(done.stdout.rsplit("@@HELP@@", 1)[1])
    return {job: {**result, "output": usage_onward(result["output"])} for job, result in zip(jobs, results)}


def run_help_alone(job: tuple[str, str, tuple[str, ...]]) -> dict:
    """One job in a process of its own: the answer when the shared process got an error."""
    kind, name, args = job
    command = [sys.executable, "-m", name] if kind == "module" else [sys.executable, name]
    done = subprocess.run([*command, *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    code = 0 if done.returncode == 0 else f"exit status {done.returncode}"
    return {"code": code, "output": usage_onward(done.stdout + done.stderr)}


def usage_onward(output: str) -> str:
    """The help proper: from the ``usage:`` line on (what a module prints while it is imported is left out)."""
    match = re.search(r"^usage:", output, re.MULTILINE)
    return output[match.start() :] if match else output


HELPS: dict[tuple[str, str, tuple[str, ...]], dict] = {}
"""Every --help text collected so far: (kind, name, args) -> {code, output}."""


def help_texts(targets: list[Target]) -> dict[tuple[str, str, tuple[str, ...]], dict]:
    """The --help text of every target (``args == ()``) and of every possible subcommand of it
    (``args == (word,)``); the ones not collected yet are collected in one process."""
    jobs = set()
    for target in targets:
        if not module_exists(target):
            continue
        jobs.add((target.kind, target.name, ()))
        if candidate := subcommand_candidate(target.args):
            jobs.add((target.kind, target.name, (candidate,)))
    results = run_helps(sorted(jobs - set(HELPS)))
    for job, result in results.items():
        HELPS[job] = result if result["code"] == 0 else run_help_alone(job)
    return HELPS


# -- checking one command -------------------------------------------------------------------------


def check_target(target: Target, helps: dict) -> list[str]:
    """Problems of one project command: a missing module, a failing --help, unknown flags, missing paths."""
    if not module_exists(target):
        what = "module" if target.kind == "module" else "script"
        return [f"no {what} {target.name} in the repository"]
    top = helps[(target.kind, target.name, ())]
    if top["code"] != 0:
        return [f"`{target.name} --help` failed ({top['code']}): {top['output'][-1500:]}"]
    args = plain_args(target.args)
    before, after, sub_help = args, [], None
    if (candidate := subcommand_candidate(target.args)) is not None:
        sub = helps.get((target.kind, target.name, (candidate,)))
        if sub and sub["code"] == 0 and sub["output"] != top["output"]:
            position = args.index(candidate)
            before, after, sub_help = args[:position], args[position + 1 :], sub["output"]
    problems = [f"{target.name} does not accept {flag}" for flag in flags(before) if not has_flag(top["output"], flag)]
    if sub_help is not None:
        problems += [
            f"{target.name} {candidate} does not accept {flag}" for flag in flags(after) if not has_flag(sub_help, flag)
        ]
    return problems


def check_command(command: DocCommand, helps: dict) -> list[str]:
    """Problems of a command; empty when it is fine or not checked for a reason NOT_CHECKED gives."""
    words = command.words
    problems = [f"no such file {path}" for path in repo_paths(words) if not (ROOT / path).exists()]
    target = python_target(words)
    if target is None and (inner := inner_command(words)) and python_target(inner):
        target = python_target(inner)
        problems += [] if words[0] in NOT_CHECKED else [f"unknown launcher {words[0]!r}: add it to NOT_CHECKED"]
    if target is not None:
        if is_project(target):
            return problems + check_target(target, helps)
        if target.kind == "module" and target.name.split(".")[0] in NOT_CHECKED_MODULES:
            return problems
        return [*problems, f"python target {target.name!r} is neither the project's nor in NOT_CHECKED_MODULES"]
    program = words[0]
    if program in SCRIPTS_RUN_BY:
        script = next((word for word in words[1:] if not word.startswith("-")), None)
        if script is None or not (ROOT / script).is_file():
            problems.append(f"{program} runs {script!r}, which is not a file of the repository")
        return problems
    if program in NOT_CHECKED or re.fullmatch(r"python(3(\.\d+)?)?", program):
        return problems
    return problems + [f"program {program!r} is neither checked nor in NOT_CHECKED (with the reason)"]


@cache
def all_helps() -> dict:
    targets = [target for command in all_commands() for target in command_targets(command)]
    return help_texts([target for target in targets if is_project(target)])


def command_targets(command: DocCommand) -> list[Target]:
    target = python_target(command.words)
    if target is None and (inner := inner_command(command.words)):
        target = python_target(inner)
    return [target] if target else []


COMMANDS = all_commands()


def test_the_pages_hold_the_commands_a_user_starts_with():
    """The extraction finds the quick start's demo command and the commands table: it cannot silently find nothing."""
    readme = [command for command in COMMANDS if command.where.startswith("README.md:")]
    assert ("python", "-m", "orchestrator.sweep", "grids/demo.yaml") in {command.words for command in readme}
    modules = {target.name for command in COMMANDS for target in command_targets(command) if target.kind == "module"}
    assert {"orchestrator.sweep", "jobs.finetune", "jobs.evaluate", "analysis.report"} <= modules
    assert any(target.kind == "script" for command in COMMANDS for target in command_targets(command))


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where} {' '.join(c.words)[:60]}" for c in COMMANDS])
def test_the_command_runs_an_existing_module_with_accepted_flags(command: DocCommand):
    problems = check_command(command, all_helps())
    assert not problems, f"{command.where}: `{' '.join(command.words)}`: " + "; ".join(problems)


def test_a_flag_the_parser_does_not_know_is_found(tmp_path: Path):
    """The check fails on a command whose flag no longer exists, on a missing module and on a missing grid."""
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n"
        "python -m orchestrator.sweep grids/demo.yaml --dry-run --no-such-flag\n"
        "ray job submit --working-dir . -- python -m orchestrator.plan grids/no-such-grid.yaml\n"
        "python -m orchestrator.no_such_module --help\n"
        "python -m recipes.data toy --no-such-option DIR\n"
        "```\n"
    )
    page_commands = [
        DocCommand(f"page.md:{line}", without_assignments(words))
        for line, text in fenced_lines(page.read_text())
        for words in shell_words(text)
    ]
    targets = [t for command in page_commands for t in command_targets(command)]
    helps = help_texts(targets)
    problems = [check_command(command, helps) for command in page_commands]
    assert problems == [
        ["orchestrator.sweep does not accept --no-such-flag"],
        ["no such file grids/no-such-grid.yaml"],
        ["no module orchestrator.no_such_module in the repository"],
        ["recipes.data toy does not accept --no-such-option"],
    ]
