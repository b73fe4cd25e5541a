"""python -m tests.hostile_inputs [--only TEXT] [--limit N] [--timeout 30] [--show KIND]

Feeds every command hostile input (malformed, truncated, deeply nested, huge, credential-bearing,
escaping its folder) and counts how each case ends: a clear refusal (exit 2, one line naming the
file/flag/field, no traceback), a traceback, a hang (past ``--timeout``), a secret echoed (the
planted password in the output or in a file the command wrote), a silent acceptance (exit 0, or
Ray reached) or a vague refusal (exit 2 without naming the thing). Each case runs the command's
``main(argv)`` in this process, in a folder of its own; prints the counts, then the cases of each
kind but refusals.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from tests.test_bad_input import place

SECRET = "hOstile-Pa55word-7d1c"
"""Planted wherever a URI or value is accepted; it must never come back."""

KINDS = ("refusal", "traceback", "hang", "secret", "silent", "vague", "other")


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def good_parquet_bytes() -> bytes:
    row = {"id": "q1", "question": "What?", "options": ["a", "b"], "answer": "A", "image": png_bytes()}
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([row]), buffer)
    return buffer.getvalue()


def row(**changes) -> dict:
    return {"id": "q1", "question": "What?", "options": ["a", "b"], "answer": "A", **changes}


Files = dict[str, "str | bytes | Callable[[Path], None]"]


@dataclass
class Case:
    name: str
    command: str
    argv: list[str]
    expected: list[str]
    """Texts a clear refusal names (any one of them)."""
    files: Files = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    outside: list[str] = field(default_factory=list)
    """Paths (relative to the case folder) the command must not create."""


def symlink(target: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.symlink_to(target)

    return make


def folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


GOOD_PARQUET = good_parquet_bytes()
BAD_BYTES: dict[str, str | bytes | Callable[[Path], None]] = {
    "random bytes": os.urandom(4096),
    "truncated parquet": GOOD_PARQUET[: len(GOOD_PARQUET) // 2],
    "parquet tail only": b"PAR1" + os.urandom(64) + b"PAR1",
    "empty file": b"",
    "text": "hello\nworld\n",
    "non-utf8": b"\xff\xfe\xfa" * 100,
    "a directory": folder,
    "symlink to /etc/passwd": symlink("/etc/passwd"),
    "dangling symlink": symlink("/nonexistent/x"),
}
BAD_JSONL: dict[str, str | bytes] = {
    "non-utf8": b'{"id": "q\xff"}\n',
    "deep 200000": deep_json(200_000) + "\n",
    "deep 100": '{"id": "q1", "question": ' + deep_json(100) + "}\n",
    "5000-digit int": '{"id": ' + "9" * 5000 + "}\n",
    "NaN answer": '{"id": "q1", "question": "q", "options": ["a", "b"], "answer": NaN}\n',
    "array row": "[1, 2, 3]\n",
    "string row": '"just a string"\n',
    "null row": "null\n",
    "truncated json": '{"id": "q1", "question": "q\n',
    "random bytes": os.urandom(2048),
    "huge options": json.dumps(row(options=["x"] * 100_000)) + "\n",
    "options not list": json.dumps(row(options="ab")) + "\n",
    "image traversal": json.dumps(row(image="../../../../etc/passwd")) + "\n",
    "image absolute": json.dumps(row(image="/etc/passwd")) + "\n",
    "image url with secret": json.dumps(row(image=f"https://u:{SECRET}@h.example/x.png")) + "\n",
}


def grid(**fields) -> str:
    return yaml.safe_dump({"name": "hostile", "model": "toy-qwen2.5-vl-init", "grid": {"lr": [1e-4]}, **fields})


def cases() -> list[Case]:
    out: list[Case] = []
    # -- data files through every reader ---------------------------------------------------------
    for label, content in BAD_BYTES.items():
        for suffix in (".parquet", ".jsonl"):
            name = f"data/set{suffix}"
            out.append(Case(f"inspect {suffix} {label}", "data", ["inspect", name], [name], {name: content}))
            out.append(
                Case(
                    f"grid dataset {suffix} {label}",
                    "plan",
                    ["grid.yaml"],
                    [name],
                    {name: content, "grid.yaml": grid(train={"dataset": name})},
                )
            )
            out.append(
                Case(
                    f"sweep dry-run dataset {suffix} {label}",
                    "sweep",
                    ["grid.yaml", "--dry-run"],
                    [name],
                    {name: content, "grid.yaml": grid(train={"dataset": name})},
                )
            )
            out.append(
                Case(
                    f"finetune dataset {suffix} {label}",
                    "finetune",
                    ["--model", "toy-qwen2.5-vl-init", "--parts", "llm", "--lr", "1e-4", "--dataset", name],
                    [name],
                    {name: content},
                )
            )
        for fmt, suffix in (("vmcbench", ".parquet"), ("mmmu", ".parquet"), ("llava-instruct", ".json")):
            name = f"src/in{suffix}"
            out.append(
                Case(
                    f"adapt {fmt} {label}",
                    "data",
                    ["adapt", fmt, "--input", name, "--out", "out.parquet"],
                    [name],
                    {name: content},
                    outside=["out.parquet"],
                )
            )
        out.append(
            Case(
                f"score {label}",
                "evaluate",
                ["score", "--predictions", "preds.jsonl", "--matcher", "exact"],
                ["preds.jsonl"],
                {"preds.jsonl": content},
            )
        )
        suite_name = "suite.yaml"
        out.append(
            Case(
                f"grid suite {label}",
                "plan",
                ["grid.yaml"],
                [suite_name],
                {suite_name: content, "grid.yaml": grid(eval={"suite": suite_name})},
            )
        )
        out.append(
            Case(
                f"evaluate model config {label}",
                "evaluate",
                ["--model", "mdl", "--suite", "toy"],
                ["mdl"],
                {"mdl/config.json": content, "mdl/model.safetensors": content},
            )
        )
        out.append(
            Case(
                f"evaluate checkpoint state {label}",
                "evaluate",
                ["--model", "toy-qwen2.5-vl-init", "--suite", "toy", "--checkpoint", "ckpt"],
                ["ckpt"],
                {"ckpt/trainer_state.json": content},
            )
        )
        out.append(
            Case(
                f"parts config {label}",
                "parts",
                ["mdl"],
                ["mdl"],
                {"mdl/config.json": content},
            )
        )
        out.append(
            Case(
                f"report store {label}",
                "report",
                ["--experiment", "x", "--tracking-uri", "sqlite:///mlflow.db", "--no-log", "--out", "rep"],
                ["mlflow.db"],
                {"mlflow.db": content},
                outside=["rep"],
            )
        )
    # -- jsonl rows ------------------------------------------------------------------------------
    for label, content in BAD_JSONL.items():
        name = "data/set.jsonl"
        out.append(Case(f"inspect jsonl {label}", "data", ["inspect", name], [name], {name: content}))
        out.append(
            Case(
                f"grid jsonl {label}",
                "plan",
                ["grid.yaml"],
                [name],
                {name: content, "grid.yaml": grid(train={"dataset": name})},
            )
        )
        out.append(
            Case(
                f"sweep dry-run jsonl {label}",
                "sweep",
                ["grid.yaml", "--dry-run"],
                [name],
                {name: content, "grid.yaml": grid(train={"dataset": name})},
            )
        )
        out.append(
            Case(
                f"finetune jsonl {label}",
                "finetune",
                ["--model", "toy-qwen2.5-vl-init", "--parts", "llm", "--lr", "1e-4", "--dataset", name],
                [name],
                {name: content},
            )
        )
        out.append(Case(f"parts config jsonl {label}", "parts", ["mdl"], ["mdl"], {"mdl/config.json": content}))
        out.append(
            Case(
                f"score jsonl {label}",
                "evaluate",
                ["score", "--predictions", name, "--matcher", "exact"],
                [name],
                {name: content},
            )
        )
        out.append(
            Case(
                f"adapt vmcbench jsonl {label}",
                "data",
                ["adapt", "vmcbench", "--input", name, "--out", "out.parquet"],
                [name],
                {name: content},
                outside=["out.parquet"],
            )
        )
        out.append(
            Case(
                f"checkpoint state json {label}",
                "evaluate",
                ["--model", "toy-qwen2.5-vl-init", "--suite", "toy", "--checkpoint", "ckpt"],
                ["ckpt"],
                {"ckpt/trainer_state.json": content},
            )
        )
    for label, state in {
        "empty object": {},
        "trial is a list": {"trial": [], "step": 1},
        "step is text": {"trial": {"model": "toy-qwen2.5-vl-init"}, "step": "x"},
        "model is a number": {"trial": {"model": 5}, "step": 1},
    }.items():
        out.append(
            Case(
                f"checkpoint state {label}",
                "evaluate",
                ["--model", "toy-qwen2.5-vl-init", "--suite", "toy", "--checkpoint", "ckpt"],
                ["ckpt"],
                {"ckpt/trainer_state.json": json.dumps(state)},
            )
        )
    # -- grid numbers and names ------------------------------------------------------------------
    numbers = {
        "name 10000 chars": grid(name="n" * 10_000),
        "name 300 chars": grid(name="n" * 300),
        "steps 1e30": grid(train={"steps": 1e30}),
        "steps 10**30": grid(train={"steps": 10**30}),
        "batch 10**30": grid(train={"batch_size": 10**30}),
        "seed 2**70": grid(grid={"lr": [1e-4], "seed": [2**70]}),
        "seed 2**32": grid(grid={"lr": [1e-4], "seed": [2**32]}),
        "5000-digit int": "name: hostile\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1e-4]}\ntrain: {steps: "
        + "9" * 5000
        + "}\n",
        "5000-digit seed": "name: hostile\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [1e-4], seed: ["
        + "9" * 5000
        + "]}\n",
        "eval every 10**30": grid(train={"eval_every": 10**30}),
        "micro batch 10**30": grid(train={"micro_batch_size": 10**30}),
        "lr 1e308": grid(grid={"lr": [1e308]}),
        "lr nan": "name: hostile\nmodel: toy-qwen2.5-vl-init\ngrid: {lr: [.nan]}\n",
        "max new tokens 10**30": grid(eval={"max_new_tokens": 10**30}),
        "eval batch 10**30": grid(eval={"batch_size": 10**30}),
        "lora r 10**30": grid(methods={"lora": {"r": 10**30}}),
        "keep last 10**30": grid(resources={"keep_last": 10**30}),
        "workers 10**30": grid(resources={"workers_per_trial": 10**30}),
        "name newline": grid(name="a\nb"),
        "name nul": grid(name="a\x00b"),
        "experiment 10000": grid(tracking={"experiment": "e" * 10_000}),
        "tracking secret": grid(tracking={"uri": f"http://u:{SECRET}@127.0.0.1:1"}),
        "storage secret": grid(storage=f"s3://AKIA:{SECRET}@bucket/x"),
        "dataset secret query": grid(train={"dataset": f"https://h.example/x.jsonl?token={SECRET}"}),
        "suite secret": grid(eval={"suite": f"https://u:{SECRET}@h.example/s.yaml"}),
    }
    for label, text in numbers.items():
        for command, argv in (
            ("plan", ["grid.yaml", "--no-check-paths"]),
            ("sweep", ["grid.yaml", "--no-check-paths", "--dry-run"]),
        ):
            out.append(Case(f"{command} {label}", command, argv, ["grid.yaml"], {"grid.yaml": text}))
    for value in ("abc", "-1", "1e30", str(2**70)):
        out.append(
            Case(
                f"plan FORGETLESS_TOY_SEED={value}",
                "plan",
                ["grid.yaml", "--no-check-paths"],
                ["FORGETLESS_TOY_SEED"],
                {"grid.yaml": grid()},
                env={"FORGETLESS_TOY_SEED": value},
            )
        )
    # -- finetune flags --------------------------------------------------------------------------
    base = ["--model", "toy-qwen2.5-vl-init", "--parts", "llm", "--lr", "1e-4"]
    for flag, value in (
        ("--steps", "1e30"),
        ("--steps", str(10**30)),
        ("--batch-size", str(10**30)),
        ("--seed", str(2**70)),
        ("--seed", str(2**32)),
        ("--eval-every", str(10**30)),
        ("--experiment", "e" * 10_000),
        ("--tracking-uri", f"http://u:{SECRET}@127.0.0.1:1"),
        ("--storage", f"s3://AKIA:{SECRET}@bucket/x"),
        ("--dataset", f"s3://AKIA:{SECRET}@bucket/x.parquet"),
        ("--eval-suite", f"https://u:{SECRET}@h.example/s.yaml"),
        ("--lr", "nan"),
        ("--lr", "1e400"),
        ("--model", "m" * 10_000),
        ("--mix", f"s3://AKIA:{SECRET}@b/x.parquet=0.5"),
        ("--deepspeed-config", "ds.json"),
        ("--micro-batch-size", str(10**30)),
        ("--keep-last", str(10**30)),
        ("--lora-r", str(10**30)),
        ("--max-new-tokens", str(10**30)),
        ("--eval-batch-size", str(10**30)),
        ("--workers", str(10**30)),
    ):
        files: Files = {"ds.json": deep_json(200_000)} if flag == "--deepspeed-config" else {}
        out.append(Case(f"finetune {flag} {value[:30]}", "finetune", [*base, flag, value], [flag, "ds.json"], files))
    # -- URIs with credentials on every command --------------------------------------------------
    for uri in (
        f"https://user:{SECRET}@h.example/x.jsonl",
        f"s3://AKIA:{SECRET}@bucket/x.parquet",
        f"https://h.example/x.jsonl?token={SECRET}",
        f"http://127.0.0.1:1/x.jsonl?signature={SECRET}",
    ):
        out += [
            Case(f"inspect uri {uri[:20]}", "data", ["inspect", uri], ["credentials", "***"]),
            Case(
                f"score uri {uri[:20]}",
                "evaluate",
                ["score", "--predictions", uri, "--matcher", "exact"],
                ["credentials", "***"],
            ),
            Case(f"evaluate suite uri {uri[:20]}", "evaluate", ["--model", "toy", "--suite", uri], ["credentials"]),
            Case(f"evaluate model uri {uri[:20]}", "evaluate", ["--model", uri, "--suite", "toy"], ["credentials"]),
            Case(
                f"evaluate predictions uri {uri[:20]}",
                "evaluate",
                ["--model", "toy", "--suite", "toy", "--predictions", uri],
                ["credentials", "--predictions"],
            ),
            Case(
                f"adapt input uri {uri[:20]}",
                "data",
                ["adapt", "vmcbench", "--input", uri, "--out", "o.parquet"],
                ["credentials", "***"],
            ),
            Case(f"report uri {uri[:20]}", "report", ["--experiment", "x", "--tracking-uri", uri], ["credentials"]),
            Case(f"parts uri {uri[:20]}", "parts", [uri], ["credentials", "***"]),
        ]
    out.append(
        Case(
            "adapt source secret",
            "data",
            ["adapt", "vmcbench", "--input", "in.jsonl", "--out", "o.parquet", "--source", f"x{SECRET}"],
            ["--source"],
            {"in.jsonl": json.dumps(row()) + "\n"},
            env={"HOSTILE_PASSWORD": f"x{SECRET}"},
        )
    )
    s3 = f"s3://AKIA:{SECRET}@bucket/x.parquet"
    out.append(Case("inspect s3 down", "data", ["inspect", "s3://bucket/x.parquet"], ["s3://bucket/x.parquet"]))
    out.append(Case("inspect s3 creds", "data", ["inspect", s3], ["credentials"]))
    # -- outputs and paths -----------------------------------------------------------------------
    out += [
        Case(
            "report experiment traversal",
            "report",
            ["--experiment", "../../x", "--tracking-uri", "sqlite:///mlflow.db"],
            ["--experiment"],
            outside=["../x", "x"],
        ),
        Case(
            "report out is a file",
            "report",
            ["--experiment", "x", "--tracking-uri", "sqlite:///mlflow.db", "--out", "f"],
            ["f"],
            {"f": "x"},
        ),
        Case("toy out is a file", "data", ["toy", "--out", "f", "--size", "small"], ["f"], {"f": "x"}),
        Case(
            "inspect samples -1",
            "data",
            ["inspect", "set.jsonl", "--samples", "-1"],
            ["--samples"],
            {"set.jsonl": json.dumps(row()) + "\n"},
        ),
        Case(
            "adapt out is a directory",
            "data",
            ["adapt", "vmcbench", "--input", "in.jsonl", "--out", "d"],
            ["d"],
            {"in.jsonl": json.dumps(row()) + "\n", "d": folder},
        ),
        Case(
            "score empty vs empty",
            "evaluate",
            ["score", "--predictions", "p.jsonl", "--matcher", "exact"],
            ["p.jsonl"],
            {"p.jsonl": json.dumps({"prompt": "q", "predict": "", "label": ""}) + "\n"},
        ),
    ]
    for label, target in (("file symlink", "../outside/cat.png"), ("folder symlink", "../outside")):
        image = "img/cat.png" if label == "folder symlink" else "cat.png"
        link = "data/img" if label == "folder symlink" else "data/cat.png"
        files: Files = {
            "outside/cat.png": png_bytes(),
            link: symlink(str(Path("..") / target) if label == "folder symlink" else "../outside/cat.png"),
            "data/set.jsonl": json.dumps(row(image=image)) + "\n",
        }
        out.append(Case(f"inspect image {label}", "data", ["inspect", "data/set.jsonl"], [image], files))
        vmc = {"question": "What?", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "A", "image": image}
        out.append(
            Case(
                f"adapt image {label}",
                "data",
                ["adapt", "vmcbench", "--input", "data/vmc.jsonl", "--out", "o.parquet"],
                [image],
                {**files, "data/vmc.jsonl": json.dumps(vmc) + "\n"},
                outside=["o.parquet"],
            )
        )
    # -- benchmarks --set ------------------------------------------------------------------------
    for assignment in ("grid.parts=[llm", "train.steps.deeper=1", "name", "grid.lr=" + deep_json(10_000), "=1"):
        out.append(Case(f"--set {assignment[:30]}", "bench", ["--set", assignment], ["--set"]))
    return out


COMMANDS = {
    "plan": "orchestrator.plan",
    "sweep": "orchestrator.sweep",
    "finetune": "jobs.finetune.__main__",
    "evaluate": "jobs.evaluate.__main__",
    "data": "recipes.data.__main__",
    "report": "analysis.report",
    "parts": "recipes.parts",
    "bench": "benchmarks.sweep_overhead",
}


class Hang(BaseException):
    pass


class ReachedRay(BaseException):
    pass


def written_text(root: Path, inputs: set[Path]) -> str:
    chunks = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in inputs and path.stat().st_size < 50_000_000:
            chunks.append(path.read_bytes().decode("utf-8", "replace"))
    return "".join(chunks)


def run_case(case: Case, timeout: float) -> tuple[str, str]:
    import importlib

    import ray

    main = importlib.import_module(COMMANDS[case.command]).main
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        root = Path(tmp) / "case"
        root.mkdir()
        place(root, case.files)
        inputs = {root / name for name in case.files}
        old_cwd, old_env = os.getcwd(), dict(os.environ)
        os.chdir(root)
        os.environ.update(case.env)
        os.environ.pop("RAY_ADDRESS", None)
        os.environ["FORGETLESS_ALLOW_EXTERNAL_IMAGES"] = ""
        output = io.StringIO()
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
        original_init = ray.init

        def refuse(*args, **kwargs):
            raise ReachedRay

        def alarm(signum, frame):
            raise Hang

        ray.init = refuse
        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        kind = None
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                try:
                    status = main(case.argv)
                except SystemExit as exit_:
                    status = exit_.code if isinstance(exit_.code, int) else (2 if exit_.code else 0)
                    if isinstance(exit_.code, str):
                        print(exit_.code)
        except Hang:
            kind, status = "hang", None
        except ReachedRay:
            kind, status = "silent", None
        except Exception:  # every other exception is what this script counts as a traceback
            kind, status = "traceback", None
            output.write(traceback.format_exc())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            ray.init = original_init
            os.chdir(old_cwd)
            os.environ.clear()
            os.environ.update(old_env)
        text = output.getvalue()
        escaped = any((root / name).resolve().exists() and name not in case.files for name in case.outside)
        if kind is None:
            if "Traceback" in text:
                kind = "traceback"
            elif SECRET in text or SECRET in written_text(root, inputs):
                kind = "secret"
            elif status == 0 or escaped:
                kind = "silent"
            elif status == 2 and any(expected in text for expected in case.expected):
                kind = "refusal"
            elif status == 2:
                kind = "vague"
            else:
                kind = "other"
        elif SECRET in text:
            kind = "secret"
        return kind, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile_inputs", description=__doc__.split("\n\n")[1])
    parser.add_argument("--only", help="run the cases whose name contains this text")
    parser.add_argument("--limit", type=int, default=0, help="run at most this many cases (0: all)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    parser.add_argument("--show", action="append", default=[], help="print the output of cases of this kind")
    args = parser.parse_args(argv)
    selected = [case for case in cases() if not args.only or args.only in case.name]
    if args.limit:
        selected = selected[: args.limit]
    counts: Counter[str] = Counter()
    by_kind: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for case in selected:
        kind, text = run_case(case, args.timeout)
        counts[kind] += 1
        last = [line for line in text.strip().splitlines() if line.strip()][-1:] or [""]
        by_kind[kind].append(f"{case.name}: {last[0][:200]}")
        if kind in args.show:
            print(f"--- {case.name} [{kind}]\n{text[-3000:]}", file=sys.__stderr__)
    print(f"{len(selected)} cases: " + ", ".join(f"{kind} {counts[kind]}" for kind in KINDS))
    for kind in KINDS[1:]:
        for line in by_kind[kind]:
            print(f"  [{kind}] {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
