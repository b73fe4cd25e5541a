"""Every way into the product refuses bad input the same way: exit status 2, one clear message
naming the field, file or row, no traceback, nothing started, no secret echoed.

The table runs each command's ``main`` in-process (none of these inputs gets as far as Ray);
the unreachable-cluster cases run as subprocesses, because a test process may already hold
the session's Ray cluster.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from contract import layout
from recipes.common.local_ports import free_port
from recipes.common.reachability import ANSWER_TIMEOUT_ENV

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55word-9f27"
"""Planted wherever a URI is accepted; it must never come back in any output."""

BASE_GRID = {"name": "bad-input", "model": "toy-qwen2.5-vl-init", "grid": {"lr": [1.0e-4]}}


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def mcq_row(**changes) -> dict:
    return {"id": "q1", "question": "What?", "options": ["a", "b"], "answer": "A", **changes}


def jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def grid_text(**sections) -> str:
    return yaml.safe_dump({**BASE_GRID, **sections})


def alias_bomb() -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for level in range(1, 9):
        previous = chr(ord("a") + level - 1)
        current = chr(ord("a") + level)
        lines.append(
            f"{current}: &{current} [*{previous},*{previous},*{previous},*{previous},*{previous},"
            f"*{previous},*{previous},*{previous},*{previous}]"
        )
    return "\n".join(lines) + "\nname: bomb\n"


def class_folder(root: Path, classes: dict[str, int]) -> None:
    for name, images in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(images):
            (root / name / f"{index}.png").write_bytes(png_bytes())


@dataclass(frozen=True)
class Case:
    """One malformed input: the files it needs, the command line, and what the error must name."""

    name: str
    command: str
    """plan, sweep (--dry-run), finetune, data or report."""
    argv: list[str]
    expected: list[str]
    """Texts the error output must contain (the field, file or row)."""
    files: dict[str, str | bytes | Callable[[Path], None]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables the command runs with."""


def grid_case(
    name: str, text: str, *expected: str, command: str = "plan", check_paths: bool = False, files: dict | None = None
) -> Case:
    flags = [] if check_paths else ["--no-check-paths"]
    argv = ["grid.yaml", *flags] + (["--dry-run"] if command == "sweep" else [])
    return Case(name, command, argv, list(expected), {"grid.yaml": text, **(files or {})})


def suite_case(name: str, suite: str, *expected: str, files: dict | None = None) -> Case:
    grid = grid_text(eval={"suite": "suite.yaml"})
    return grid_case(
        name, grid, "eval.suite", *expected, check_paths=True, files={"suite.yaml": suite, **(files or {})}
    )


FINETUNE = ["--model", "toy-qwen2.5-vl-init", "--parts", "llm", "--lr", "1e-4"]


def flag_case(name: str, flags: list[str], *expected: str, files: dict | None = None) -> Case:
    return Case(name, "finetune", [*FINETUNE, *flags], list(expected), files or {})


def data_case(name: str, argv: list[str], *expected: str, files: dict | None = None) -> Case:
    return Case(name, "data", argv, list(expected), files or {})


def inspect_case(name: str, text: str, *expected: str) -> Case:
    return data_case(name, ["inspect", "data/set.jsonl"], "data/set.jsonl", *expected, files={"data/set.jsonl": text})


EMPTY_MCQ = pa.schema(
    [("id", pa.string()), ("question", pa.string()), ("options", pa.list_(pa.string())), ("answer", pa.string())]
)


def parquet(rows: list[dict], schema: pa.Schema | None = None) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)

    return write


GOOD_SUITE = {"name": "s", "quadrants": {q: ["toy-imagenet-vqa"] for q in layout.QUADRANTS}}


def suite_with(**quadrants) -> str:
    return yaml.safe_dump({"name": "s", "quadrants": {**GOOD_SUITE["quadrants"], **quadrants}})


CRED_HTTP = f"https://user:{SECRET}@data.example.org/set.jsonl"
CRED_QUERY = f"https://data.example.org/set.jsonl?token={SECRET}"
TASK = {"name": "t1", "train": "toy-cl-shapes-train", "test": "toy-cl-shapes-test"}

HOSTILE_PICKLE = b"cos\nsystem\n(S'touch pwned'\ntR."
"""A pickle that runs a shell command when unpickled as code."""


def truncated_parquet(path: Path) -> None:
    parquet([mcq_row()], EMPTY_MCQ)(path)
    path.write_bytes(path.read_bytes()[:-20])


def evaluate_case(name: str, flags: list[str], *expected: str, files: dict | None = None) -> Case:
    argv = {"--model": "toy-qwen2.5-vl-init", "--suite": "toy"}
    for flag, value in zip(flags[::2], flags[1::2]):
        argv[flag] = value
    return Case(name, "evaluate", [item for pair in argv.items() for item in pair], list(expected), files or {})


def score_case(name: str, text: str, *expected: str) -> Case:
    return Case(
        name,
        "evaluate",
        ["score", "--predictions", "p.jsonl", "--matcher", "exact"],
        ["p.jsonl", *expected],
        {"p.jsonl": text},
    )


def toy_model_copy(truncate: bool = False, pickle_bin: bool = False) -> Callable[[Path], None]:
    """A copy of the toy model's folder with its weights truncated, or replaced by a hostile pickle."""

    def make(path: Path) -> None:
        import shutil

        from recipes.models.catalog import resolve_model_dir

        shutil.copytree(resolve_model_dir("toy-qwen2.5-vl-init"), path)
        weights = path / "model.safetensors"
        if truncate:
            weights.write_bytes(weights.read_bytes()[:1000])
        if pickle_bin:
            weights.unlink()
            (path / "pytorch_model.bin").write_bytes(HOSTILE_PICKLE)

    return make


def checkpoint(model_states: bytes) -> Callable[[Path], None]:
    """A trial checkpoint of the toy model whose DeepSpeed model states are ``model_states``."""

    def make(path: Path) -> None:
        from jobs.checkpoints import CHECKPOINT_TAG, TRAINER_STATE, base_record
        from recipes.models.catalog import resolve_model_dir

        name = "toy-qwen2.5-vl-init"
        trial = {"model": name, "parts": "llm", "method": "full", "lora_r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0}
        state = {"trial": trial, "step": 1, "base": base_record(name, resolve_model_dir(name))}
        (path / CHECKPOINT_TAG).mkdir(parents=True)
        (path / TRAINER_STATE).write_text(json.dumps(state))
        (path / CHECKPOINT_TAG / "mp_rank_00_model_states.pt").write_bytes(model_states)

    return make


CASES = [
    # -- grid files: reading -------------------------------------------------------------------
    grid_case("alias bomb", alias_bomb(), "more than 10000 values"),
    grid_case("deep nesting", "name: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 40 levels"),
    grid_case("yaml syntax error", "name: t\nmodel: [unclosed\n", "line 3"),
    grid_case("duplicate key", "name: t\nname: u\nmodel: m\ngrid: {lr: [1]}\n", "name: duplicate key"),
    grid_case("empty file", "", "the file is empty"),
    grid_case("top level list", "- 1\n- 2\n", "top level"),
    Case("missing grid file", "plan", ["nope.yaml"], ["nope.yaml", "no such file"]),
    Case("grid is a directory", "plan", ["folder"], ["folder", "is a directory"], {"folder/x": ""}),
    grid_case("binary grid", "\udcff", "cannot be read as text"),
    # -- grid files: fields ----------------------------------------------------------------------
    grid_case("negative lr", grid_text(grid={"lr": [1e-4, -1]}), "grid.lr[1]: must be > 0"),
    grid_case("infinite lr", grid_text(grid={"lr": [".inf"]}), "grid.lr[0]"),
    grid_case("zero steps", grid_text(train={"steps": 0}), "train.steps: must be >= 1"),
    grid_case("typo key", grid_text(train={"stpes": 5}), "train.stpes: unknown key; did you mean 'steps'"),
    grid_case("bad name", grid_text(name="../../etc"), "name:"),
    grid_case("bad eval mode", grid_text(eval={"mode": "sample"}), "eval.mode"),
    grid_case("zero eval batch", grid_text(eval={"batch_size": 0}), "eval.batch_size"),
    grid_case("zero max new tokens", grid_text(eval={"max_new_tokens": 0}), "eval.max_new_tokens"),
    grid_case("zero stage 5", grid_text(train={"deepspeed": {"zero_stage": 5}}), "train.deepspeed.zero_stage"),
    grid_case("bad method", grid_text(grid={"lr": [1e-4], "method": ["qlora"]}), "grid.method[0]"),
    grid_case("bad part", grid_text(grid={"lr": [1e-4], "parts": ["brain"]}), "grid.parts[0]", "unknown part"),
    grid_case(
        "vision.last999", grid_text(grid={"lr": [1e-4], "parts": ["vision.last999"]}), "grid.parts[0]", "4 blocks"
    ),
    grid_case("include vision.last0", grid_text(include=[{"parts": "vision.last0"}]), "include[0].parts[0]"),
    grid_case("data fraction 0", grid_text(grid={"lr": [1e-4], "data_fraction": [0]}), "grid.data_fraction[0]"),
    grid_case("mix ratio 1", grid_text(grid={"lr": [1e-4], "mix_ratio": [1]}), "grid.mix_ratio[0]"),
    grid_case("negative seed", grid_text(grid={"lr": [1e-4], "seed": [-1]}), "grid.seed[0]"),
    grid_case("lora rank 0", grid_text(methods={"lora": {"r": 0}}), "methods.lora.r"),
    grid_case("negative weight decay", grid_text(train={"weight_decay": -1}), "train.weight_decay"),
    grid_case("zero cpus", grid_text(resources={"cpus_per_worker": 0}), "resources.cpus_per_worker"),
    grid_case("negative max failures", grid_text(resources={"max_failures": -5}), "resources.max_failures"),
    grid_case("zero workers", grid_text(resources={"workers_per_trial": 0}), "resources.workers_per_trial"),
    grid_case("zero concurrency", grid_text(resources={"max_concurrent_trials": 0}), "resources.max_concurrent_trials"),
    grid_case("negative early stop", grid_text(early_stop={"max_ood_drop_pp": -1}), "early_stop.max_ood_drop_pp"),
    grid_case("report yes", grid_text(report={"enabled": "yes"}), "report.enabled"),
    grid_case("section not a mapping", grid_text(train=5), "train: expected a mapping"),
    grid_case("empty include cell", grid_text(include=[{}]), "include[0]: empty cell"),
    grid_case(
        "exclude matches nothing",
        grid_text(exclude=[{"lr": 1e-4, "seed": 0, "parts": "vision"}]),
        "exclude[0].parts[0]",
    ),
    grid_case("one continual task", grid_text(continual={"tasks": ["toy-cl-shapes"]}), "continual.tasks"),
    grid_case(
        "unknown toy domain", grid_text(continual={"tasks": ["toy-cl-shapes", "toy-cl-nope"]}), "continual.tasks[1]"
    ),
    grid_case(
        "batch not divisible",
        grid_text(train={"batch_size": 15}, resources={"workers_per_trial": 2}),
        "train.batch_size: 15 is not a multiple",
    ),
    grid_case(
        "cross checks with another section broken",
        grid_text(train={"batch_size": 15, "steps": 0}, resources={"workers_per_trial": 2}),
        "train.steps: must be >= 1",
        "train.batch_size: 15 is not a multiple",
    ),
    grid_case(
        "cross checks past a bad field of the same section",
        grid_text(train={"batch_size": 15, "schedule": "zigzag"}, resources={"workers_per_trial": 2}),
        "train.schedule",
        "train.batch_size: 15 is not a multiple",
    ),
    grid_case(
        "mix ratios sum to 1",
        grid_text(
            train={"mix": [{"dataset": "toy-general", "ratio": 0.6}, {"dataset": "toy-wiki-classname", "ratio": 0.5}]}
        ),
        "train.mix: ratios sum to 1.1",
    ),
    grid_case(
        "too many trials",
        grid_text(grid={"lr": [i * 1e-5 + 1e-5 for i in range(100)], "seed": list(range(1000))}),
        "up to 100,000 trials",
        "--max-trials 100000",
    ),
    grid_case(
        "too many trials on a dry run",
        grid_text(grid={"lr": [1e-4] * 2, "seed": list(range(600))}),
        "up to 1,200 trials",
        command="sweep",
    ),
    # -- grid files: URIs and secrets ------------------------------------------------------------
    grid_case(
        "tracking scheme htp",
        grid_text(tracking={"uri": "htp://mlflow.example.org"}),
        "tracking.uri: unknown scheme 'htp://'",
    ),
    grid_case(
        "tracking password",
        grid_text(tracking={"uri": f"http://alice:{SECRET}@mlflow.example.org"}),
        "tracking.uri: contains credentials",
    ),
    grid_case(
        "tracking token",
        grid_text(tracking={"uri": f"https://mlflow.example.org/?token={SECRET}"}),
        "tracking.uri: contains credentials",
    ),
    grid_case(
        "storage password", grid_text(storage=f"s3://key:{SECRET}@bucket/prefix"), "storage: contains credentials"
    ),
    grid_case("storage scheme", grid_text(storage="htp://bucket/prefix"), "storage: expected a local path or s3://"),
    grid_case("dataset password", grid_text(train={"dataset": CRED_HTTP}), "train.dataset: contains credentials"),
    grid_case("dataset token", grid_text(train={"dataset": CRED_QUERY}), "train.dataset: contains credentials"),
    grid_case(
        "dataset signature",
        grid_text(train={"dataset": f"https://h/x.parquet?X-Amz-Signature={SECRET}"}),
        "train.dataset: contains credentials",
    ),
    grid_case(
        "dataset scheme",
        grid_text(train={"dataset": "htp://data.example.org/set.jsonl"}),
        "train.dataset: unknown URI scheme 'htp://'",
    ),
    grid_case(
        "mix password",
        grid_text(train={"mix": [{"dataset": CRED_HTTP, "ratio": 0.1}]}),
        "train.mix[0].dataset: contains credentials",
    ),
    grid_case(
        "mix scheme",
        grid_text(train={"mix": [{"dataset": "ftp://h/x.jsonl", "ratio": 0.1}]}),
        "train.mix[0].dataset: unknown URI scheme",
    ),
    grid_case(
        "suite password",
        grid_text(eval={"suite": f"https://u:{SECRET}@h/suite.yaml"}),
        "eval.suite: contains credentials",
    ),
    grid_case("suite scheme", grid_text(eval={"suite": "htp://h/suite.yaml"}), "eval.suite: unknown URI scheme"),
    grid_case(
        "continual train password",
        grid_text(continual={"tasks": [{**TASK, "train": CRED_HTTP}, "toy-cl-digits"]}),
        "continual.tasks[0].train: contains credentials",
    ),
    grid_case(
        "continual test token",
        grid_text(continual={"tasks": ["toy-cl-digits", {**TASK, "test": CRED_QUERY}]}),
        "continual.tasks[1].test: contains credentials",
    ),
    grid_case("dry run of a password", grid_text(train={"dataset": CRED_HTTP}), "train.dataset", command="sweep"),
    # -- grid files: names and files on this machine ---------------------------------------------
    grid_case("unknown model", grid_text(model="no-such-model"), "model: unknown model 'no-such-model'"),
    grid_case("missing model dir", grid_text(model="./models/nope"), "model:", check_paths=True),
    grid_case(
        "missing dataset",
        grid_text(train={"dataset": "data/missing.jsonl"}),
        "train.dataset: no such file 'data/missing.jsonl'",
        check_paths=True,
    ),
    grid_case("unknown dataset", grid_text(train={"dataset": "toy-imagenet-vq"}), "train.dataset: unknown dataset"),
    grid_case(
        "missing suite", grid_text(eval={"suite": "suites/missing.yaml"}), "eval.suite: no such file", check_paths=True
    ),
    grid_case(
        "missing deepspeed json",
        grid_text(train={"deepspeed": "ds.json"}),
        "train.deepspeed: no such file",
        check_paths=True,
    ),
    grid_case(
        "deepspeed json sets optimizer",
        grid_text(train={"deepspeed": "ds.json"}),
        "train.deepspeed: ds.json: remove optimizer",
        check_paths=True,
        files={"ds.json": json.dumps({"optimizer": {"type": "Adam"}})},
    ),
    grid_case(
        "deepspeed json not json",
        grid_text(train={"deepspeed": "ds.json"}),
        "train.deepspeed: ds.json: not valid",
        check_paths=True,
        files={"ds.json": "{"},
    ),
    grid_case(
        "gpus a cluster never has",
        grid_text(resources={"gpus_per_worker": 8}),
        "resources.gpus_per_worker: 8 GPUs per worker",
        check_paths=True,
    ),
    grid_case(
        "cpus a cluster never has",
        grid_text(resources={"cpus_per_worker": 4096}),
        "resources.cpus_per_worker: 4096 CPUs per worker",
        check_paths=True,
    ),
    grid_case(
        "gpus on a dry run",
        grid_text(resources={"gpus_per_worker": 8}),
        "resources.gpus_per_worker",
        check_paths=True,
        command="sweep",
    ),
    # -- suite files -----------------------------------------------------------------------------
    suite_case("suite alias bomb", alias_bomb(), "more than 10000 values"),
    suite_case("suite syntax error", "name: [\n", "not valid YAML"),
    suite_case("suite not a mapping", "- a\n", "expected a mapping"),
    suite_case("suite unknown quadrant", suite_with(od_id=["toy-imagenet-vqa"]), "quadrants.od_id: unknown quadrant"),
    suite_case(
        "suite missing quadrant",
        yaml.safe_dump({"name": "s", "quadrants": {"id_id": ["toy-imagenet-vqa"]}}),
        "quadrants.id_ood: missing",
    ),
    suite_case("suite empty quadrant", suite_with(id_id=[]), "quadrants.id_id: must be a non-empty list"),
    suite_case("suite unknown key", yaml.safe_dump({**GOOD_SUITE, "extra": 1}), "extra: unknown key"),
    suite_case("suite missing dataset", suite_with(ood_ood=["missing.jsonl"]), "quadrants.ood_ood[0]: no such dataset"),
    suite_case("suite entry password", suite_with(id_ood=[CRED_HTTP]), "quadrants.id_ood[0]: contains credentials"),
    suite_case("suite token", suite_with(ood_id=[CRED_QUERY]), "quadrants.ood_id[0]: contains credentials"),
    suite_case("suite entry scheme", suite_with(id_id=["htp://h/x.jsonl"]), "quadrants.id_id[0]: unknown URI scheme"),
    suite_case("suite entry not text", suite_with(id_id=[3]), "quadrants.id_id[0]: must be a dataset name"),
    # -- python -m jobs.finetune flags -----------------------------------------------------------
    flag_case("flag vision.last999", ["--parts", "vision.last999"], "--parts: vision.last999"),
    flag_case("flag unknown part", ["--parts", "brain"], "unknown part 'brain'"),
    flag_case("flag unknown model", ["--model", "no-such-model"], "--model: unknown model"),
    flag_case("flag missing model dir", ["--model", "./models/nope"], "--model:"),
    flag_case("flag missing dataset", ["--dataset", "missing.jsonl"], "--dataset: no such file 'missing.jsonl'"),
    flag_case("flag dataset not mcq", ["--dataset", "notes.txt"], "--dataset: unknown dataset"),
    flag_case("flag dataset scheme", ["--dataset", "htp://h/x.jsonl"], "--dataset: unknown URI scheme"),
    flag_case("flag dataset password", ["--dataset", CRED_HTTP], "--dataset: contains credentials"),
    flag_case("flag mix password", ["--mix", f"{CRED_QUERY}=0.1"], "--mix: contains credentials"),
    flag_case("flag mix without ratio", ["--mix", "toy-general"], "--mix expects DATASET=RATIO"),
    flag_case("flag missing suite", ["--eval-suite", "missing.yaml"], "--eval-suite: no such file"),
    flag_case("flag suite password", ["--eval-suite", f"https://u:{SECRET}@h/s.yaml"], "--eval-suite: contains"),
    flag_case("flag missing deepspeed json", ["--deepspeed-config", "ds.json"], "--deepspeed-config: no such file"),
    flag_case(
        "flag tracking password",
        ["--tracking-uri", f"http://alice:{SECRET}@127.0.0.1:5000"],
        "--tracking-uri: contains credentials",
    ),
    flag_case("flag tracking scheme", ["--tracking-uri", "htp://127.0.0.1:5000"], "--tracking-uri: unknown scheme"),
    flag_case("flag storage password", ["--storage", f"s3://k:{SECRET}@bucket/x"], "--storage: contains credentials"),
    flag_case("flag storage scheme", ["--storage", "gs://bucket/x"], "--storage: expected a local path"),
    flag_case("flag lr not a number", ["--lr", "fast"], "--lr"),
    flag_case("flag negative lr", ["--lr", "-1"], "--lr: must be > 0"),
    flag_case("flag zero steps", ["--steps", "0"], "--steps: must be >= 1"),
    flag_case("flag bad method", ["--method", "qlora"], "method"),
    flag_case("flag data fraction 2", ["--data-fraction", "2"], "--data-fraction: must be <= 1"),
    flag_case("flag warmup 1", ["--warmup-ratio", "1"], "--warmup-ratio: must be < 1"),
    flag_case("flag bad schedule", ["--schedule", "zigzag"], "--schedule: invalid choice"),
    flag_case("flag bad eval mode", ["--eval-mode", "sample"], "--eval-mode: invalid choice"),
    flag_case("flag zero stage 7", ["--zero-stage", "7"], "--zero-stage: must be <= 3"),
    flag_case("flag keep last 0", ["--keep-last", "0"], "--keep-last: must be >= 1"),
    flag_case("flag infinite lr", ["--lr", "inf"], "--lr: Input should be a finite number"),
    flag_case("flag zero workers", ["--workers", "0"], "--workers: must be >= 1"),
    flag_case("flag epochs without tasks", ["--continual-epochs", "1"], "need continual_tasks"),
    flag_case("flag one task without epochs", ["--continual-tasks", "toy-cl-shapes"], "one value per task (1), got 0"),
    flag_case("flag negative weight decay", ["--weight-decay", "-1"], "--weight-decay: must be >= 0"),
    flag_case("flag zero eval batch", ["--eval-batch-size", "0"], "--eval-batch-size: must be >= 1"),
    flag_case("flag zero new tokens", ["--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
    flag_case("flag zero cpus", ["--cpus-per-worker", "0"], "--cpus-per-worker: must be > 0"),
    flag_case("flag negative failures", ["--max-failures", "-5"], "--max-failures: must be >= 0"),
    flag_case("flag experiment leaves storage", ["--experiment", "../../etc"], "--experiment: must use only letters"),
    flag_case("flag batch not divisible", ["--batch-size", "15", "--micro-batch-size", "4"], "batch_size 15"),
    # -- data files ------------------------------------------------------------------------------
    inspect_case("empty jsonl", "", "has no questions"),
    inspect_case("blank lines only", "\n\n", "has no questions"),
    inspect_case(
        "image path leaves the folder",
        jsonl(mcq_row(image="../../../../etc/os-release")),
        "line 1",
        "leaves the dataset's folder",
    ),
    inspect_case(
        "absolute image path",
        jsonl(mcq_row(image="/etc/hostname")),
        "line 1",
        "an absolute path",
        "--allow-external-images",
    ),
    inspect_case("absolute image path with a dot", jsonl(mcq_row(image="/etc/os-release")), "line 1", "absolute path"),
    inspect_case("image URL", jsonl(mcq_row(image="http://127.0.0.1:9/cat.png")), "line 1", "a URL"),
    inspect_case(
        "image URL with a password", jsonl(mcq_row(image=f"http://u:{SECRET}@127.0.0.1:9/cat.png")), "line 1", "a URL"
    ),
    inspect_case("missing image file", jsonl(mcq_row(image="img/missing.png")), "line 1", "cannot be read"),
    inspect_case("bad base64 image", jsonl(mcq_row(image="not base64!")), "line 1", "base64"),
    inspect_case(
        "image not decodable", jsonl(mcq_row(image=base64.b64encode(b"nope").decode())), "line 1", "cannot be decoded"
    ),
    inspect_case("invalid json", jsonl(mcq_row(), "{not json"), "line 2", "invalid JSON"),
    inspect_case("missing fields", jsonl({"id": "q1"}), "line 1", "missing field"),
    inspect_case("answer not a letter", jsonl(mcq_row(answer="Z")), "line 1", "answer 'Z'"),
    inspect_case("duplicate id", jsonl(mcq_row(), mcq_row()), "line 2", "also used by line 1"),
    inspect_case("options not a list", jsonl(mcq_row(options="a,b")), "line 1", "options must be a list"),
    inspect_case("line not an object", jsonl("[1, 2]"), "line 1", "not an object"),
    data_case("missing data file", ["inspect", "missing.jsonl"], "missing.jsonl", "no such MCQ file"),
    data_case("unknown extension", ["inspect", "set.csv"], "set.csv", "unknown extension", files={"set.csv": "a,b\n"}),
    data_case(
        "parquet missing column",
        ["inspect", "set.parquet"],
        "set.parquet",
        "missing column(s)",
        files={"set.parquet": parquet([{"id": "q1", "question": "Q?"}])},
    ),
    data_case(
        "parquet bad row",
        ["inspect", "set.parquet"],
        "set.parquet",
        "row 2 (id 'q2')",
        files={"set.parquet": parquet([mcq_row(), mcq_row(id="q2", answer="C")])},
    ),
    data_case(
        "empty parquet",
        ["inspect", "set.parquet"],
        "set.parquet",
        "has no questions",
        files={"set.parquet": parquet([mcq_row()][:0], schema=EMPTY_MCQ)},
    ),
    data_case(
        "vmcbench without answers",
        ["adapt", "vmcbench", "--input", "v.tsv", "--out", "o.parquet"],
        "v.tsv",
        "line 2",
        "answer is missing",
        files={"v.tsv": "index\tquestion\tA\tB\n7\tQ?\ta\tb\n"},
    ),
    data_case(
        "imagewikiqa empty input",
        ["adapt", "imagewikiqa", "--input", "w.jsonl", "--out", "o.parquet"],
        "w.jsonl",
        "has no rows",
        files={"w.jsonl": ""},
    ),
    data_case(
        "imagewikiqa image leaves the folder",
        ["adapt", "imagewikiqa", "--input", "w.jsonl", "--out", "o.parquet"],
        "w.jsonl",
        "line 1",
        "leaves the dataset's folder",
        files={"w.jsonl": jsonl({"text": "Q?\nA. a\nB. b", "label": 0, "image": "../../etc/os-release"})},
    ),
    data_case(
        "image root does not widen to absolute paths",
        ["adapt", "imagewikiqa", "--input", "w.jsonl", "--out", "o.parquet", "--image-root", "imgs"],
        "line 1",
        "absolute path",
        files={"w.jsonl": jsonl({"text": "Q?\nA. a\nB. b", "label": 0, "image": "/etc/os-release"})},
    ),
    data_case(
        "mmmu json bad item",
        ["adapt", "mmmu", "--input", "m.json", "--out", "o.parquet"],
        "m.json",
        "item 1",
        files={"m.json": json.dumps([{"id": "x1", "question": "Q?", "options": "['a'", "answer": "A"}])},
    ),
    data_case(
        "llava-instruct turns out of order",
        ["adapt", "llava-instruct", "--input", "c.json", "--out", "o.parquet"],
        "c.json",
        "item 1",
        "conversations[0].from is 'gpt'",
        files={
            "c.json": json.dumps(
                [{"id": "1", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}]
            )
        },
    ),
    data_case(
        "mllm-cl domain unknown",
        ["adapt", "mllm-cl", "--input", "train.json", "--out", "o.parquet"],
        "train.json",
        "cannot tell the MLLM-CL domain",
        "--domain",
        files={"train.json": json.dumps([{"question_id": 1, "text": "Q?", "answer": "a"}])},
    ),
    data_case(
        "vqa row without answer",
        ["adapt", "vqa", "--input", "v.jsonl", "--out", "o.parquet"],
        "v.jsonl",
        "line 1",
        "answer is missing",
        files={"v.jsonl": jsonl({"id": "v1", "question": "Q?"})},
    ),
    inspect_case(
        "free-form row with unknown matcher",
        jsonl({"id": "f1", "kind": "freeform", "question": "Q?", "answer": "a", "matcher": "fuzzy"}),
        "line 1",
        "matcher 'fuzzy'",
    ),
    data_case(
        "class folder without images",
        ["adapt", "class-folder", "--input", "cls", "--out", "o.parquet"],
        "cls",
        "without images",
        "dog",
        files={
            "cls": lambda root: (class_folder(root, {"cat": 1, "bird": 1, "fish": 1, "ant": 1}), (root / "dog").mkdir())
        },
    ),
    data_case(
        "class folder with 3 classes",
        ["adapt", "class-folder", "--input", "cls", "--out", "o.parquet"],
        "cls",
        "3 classes cannot make 4-option questions",
        files={"cls": lambda root: class_folder(root, {"cat": 1, "dog": 1, "bird": 1})},
    ),
    data_case(
        "imagenet-vqa with 3 classes",
        ["imagenet-vqa", "--images", "cls", "--clip", "clip", "--out", "o.parquet"],
        "3 classes cannot make 4-option questions",
        files={"cls": lambda root: class_folder(root, {"cat": 1, "dog": 1, "bird": 1})},
    ),
    data_case(
        "imagenet-vqa without a local CLIP",
        ["imagenet-vqa", "--images", "cls", "--clip", "openai/clip-nowhere", "--out", "o.parquet"],
        "--clip 'openai/clip-nowhere'",
        "hf download",
        files={"cls": lambda root: class_folder(root, {"cat": 1, "dog": 1, "bird": 1, "fish": 1})},
    ),
    data_case(
        "class folder missing",
        ["adapt", "class-folder", "--input", "nowhere", "--out", "o.parquet"],
        "nowhere",
        "not a directory",
    ),
    data_case(
        "names file line without a name",
        ["adapt", "class-folder", "--input", "cls", "--out", "o.parquet", "--class-names", "names.txt"],
        "names.txt",
        "line 1",
        files={
            "cls": lambda root: class_folder(root, {"cat": 1, "dog": 1, "bird": 1, "fish": 1}),
            "names.txt": "cat\ndog feline\n",
        },
    ),
    # -- analysis.report -------------------------------------------------------------------------
    Case("report tracking scheme", "report", ["--experiment", "x", "--tracking-uri", "htp://h"], ["unknown scheme"]),
    Case(
        "report tracking unreachable",
        "report",
        ["--experiment", "x", "--tracking-uri", "http://127.0.0.1:9"],
        ["127.0.0.1:9 cannot be reached"],
    ),
    *[
        # -- malformed files, through every command that reads them (one error boundary per command) ------
        data_case(
            "inspect random bytes parquet",
            ["inspect", "d/x.parquet"],
            "d/x.parquet",
            files={"d/x.parquet": bytes(range(256)) * 8},
        ),
        data_case(
            "inspect truncated parquet",
            ["inspect", "d/x.parquet"],
            "d/x.parquet",
            files={"d/x.parquet": lambda path: truncated_parquet(path)},
        ),
        inspect_case("jsonl not utf-8", b'{"id": "q\xff"}\n'.decode("utf-8", "surrogateescape"), "line 1", "not UTF-8"),
        inspect_case("jsonl nested 200000 deep", "[" * 200_000 + "]" * 200_000 + "\n", "line 1", "nested more than"),
        data_case(
            "inspect samples -1",
            ["inspect", "set.jsonl", "--samples", "-1"],
            "--samples",
            files={"set.jsonl": jsonl(mcq_row())},
        ),
        data_case(
            "inspect symlinked image",
            ["inspect", "d/set.jsonl"],
            "cat.png",
            "symlink",
            files={
                "out/cat.png": png_bytes(),
                "d/cat.png": lambda path: path.symlink_to("../out/cat.png"),
                "d/set.jsonl": jsonl(mcq_row(image="cat.png")),
            },
        ),
        data_case(
            "inspect image in symlinked folder",
            ["inspect", "d/set.jsonl"],
            "img/cat.png",
            "symlink",
            files={
                "out/cat.png": png_bytes(),
                "d/img": lambda path: path.symlink_to("../out"),
                "d/set.jsonl": jsonl(mcq_row(image="img/cat.png")),
            },
        ),
        data_case("inspect s3 uri with keys", ["inspect", f"s3://AKIA:{SECRET}@bucket/x.parquet"], "credentials"),
        data_case(
            "adapt json nested deep",
            ["adapt", "llava-instruct", "--input", "in.json", "--out", "o.parquet"],
            "in.json",
            "nested more than",
            files={"in.json": "[" * 100_000 + "]" * 100_000},
        ),
        data_case(
            "adapt random bytes parquet",
            ["adapt", "mmmu", "--input", "in.parquet", "--out", "o.parquet"],
            "in.parquet",
            files={"in.parquet": bytes(range(256)) * 8},
        ),
        Case(
            "adapt source holding a secret",
            "data",
            ["adapt", "vmcbench", "--input", "in.jsonl", "--out", "o.parquet", "--source", SECRET],
            ["--source", "credential"],
            {"in.jsonl": jsonl({"question": "q", "A": "a", "B": "b", "answer": "A"})},
            env={"FORGETLESS_TEST_PASSWORD": SECRET},
        ),
        grid_case(
            "grid 5000-digit integer",
            "name: t\nmodel: m\ngrid: {lr: [1e-4]}\ntrain: {steps: " + "9" * 5000 + "}\n",
            "4300 digits",
        ),
        grid_case("grid name 10000 chars", grid_text(name="n" * 10_000), "name: must be at most 100 characters"),
        grid_case("grid steps 1e30", grid_text(train={"steps": 1e30}), "train.steps: must be <="),
        grid_case("grid batch 10**30", grid_text(train={"batch_size": 10**30}), "train.batch_size: must be <="),
        grid_case(
            "grid seed 2**70", grid_text(grid={"lr": [1e-4], "seed": [2**70]}), "grid.seed[0]: must be <= 4294967295"
        ),
        grid_case("grid lr 1e308", grid_text(grid={"lr": [1e308]}), "grid.lr[0]: must be <= 1"),
        Case(
            "toy seed not a number",
            "sweep",
            ["grid.yaml", "--no-check-paths", "--dry-run"],
            ["FORGETLESS_TOY_SEED"],
            {"grid.yaml": grid_text()},
            env={"FORGETLESS_TOY_SEED": "abc"},
        ),
        grid_case(
            "training jsonl not utf-8",
            grid_text(train={"dataset": "d/x.jsonl"}),
            "train.dataset",
            "d/x.jsonl",
            "line 1",
            "not UTF-8",
            check_paths=True,
            files={"d/x.jsonl": b"\xff\n".decode("utf-8", "surrogateescape")},
        ),
        grid_case(
            "training parquet random bytes",
            grid_text(train={"dataset": "d/x.parquet"}),
            "train.dataset",
            "d/x.parquet",
            check_paths=True,
            files={"d/x.parquet": bytes(range(256)) * 8},
        ),
        grid_case(
            "mix parquet truncated",
            grid_text(train={"mix": [{"dataset": "d/m.parquet", "ratio": 0.5}]}),
            "train.mix",
            "d/m.parquet",
            command="sweep",
            check_paths=True,
            files={"d/m.parquet": lambda path: truncated_parquet(path)},
        ),
        suite_case("suite not utf-8", b"name: \xff\n".decode("utf-8", "surrogateescape"), "suite.yaml", "not UTF-8"),
        flag_case(
            "finetune rule between flags", ["--batch-size", "12"], "--batch-size, --micro-batch-size, --workers:"
        ),
        flag_case("finetune seed 2**70", ["--seed", str(2**70)], "--seed", "must be <= 4294967295"),
        flag_case("finetune steps 10**30", ["--steps", str(10**30)], "--steps", "must be <="),
        flag_case(
            "finetune dataset nested deep",
            ["--dataset", "d/x.jsonl"],
            "--dataset",
            "d/x.jsonl",
            "nested",
            files={"d/x.jsonl": "[" * 200_000 + "]" * 200_000 + "\n"},
        ),
        flag_case(
            "finetune deepspeed nested deep",
            ["--deepspeed-config", "ds.json"],
            "--deepspeed-config",
            "ds.json",
            files={"ds.json": "[" * 200_000 + "]" * 200_000},
        ),
        evaluate_case(
            "model config not json", ["--model", "m"], "m/config.json", "invalid JSON", files={"m/config.json": "{nope"}
        ),
        evaluate_case(
            "model config nested deep",
            ["--model", "m"],
            "m/config.json",
            "nested",
            files={"m/config.json": "[" * 100_000 + "]" * 100_000},
        ),
        evaluate_case(
            "model safetensors truncated", ["--model", "m"], "model m", files={"m": toy_model_copy(truncate=True)}
        ),
        evaluate_case(
            "model pytorch_model.bin pickle", ["--model", "m"], "model m", files={"m": toy_model_copy(pickle_bin=True)}
        ),
        evaluate_case(
            "checkpoint state empty",
            ["--checkpoint", "c"],
            "c/trainer_state.json",
            "step",
            files={"c/trainer_state.json": "{}"},
        ),
        evaluate_case(
            "checkpoint state wrong types",
            ["--checkpoint", "c"],
            "c/trainer_state.json",
            "trial.",
            files={"c/trainer_state.json": json.dumps({"trial": {"model": 5}, "step": 1})},
        ),
        evaluate_case(
            "checkpoint truncated pt",
            ["--checkpoint", "c"],
            "mp_rank_00_model_states.pt",
            files={"c": checkpoint(b"PK\x03\x04" + bytes(100))},
        ),
        evaluate_case(
            "checkpoint hostile pickle",
            ["--checkpoint", "c"],
            "mp_rank_00_model_states.pt",
            "refused",
            files={"c": checkpoint(HOSTILE_PICKLE)},
        ),
        evaluate_case(
            "evaluate suite url with password",
            ["--suite", CRED_HTTP.replace(".jsonl", ".yaml")],
            "--suite",
            "credentials",
        ),
        evaluate_case("evaluate predictions url", ["--predictions", CRED_HTTP], "--predictions", "not a URL"),
        score_case(
            "score not utf-8", b'{"predict": "\xff"}\n'.decode("utf-8", "surrogateescape"), "line 1", "not UTF-8"
        ),
        score_case("score nested 100000 deep", "[" * 100_000 + "]" * 100_000 + "\n", "line 1", "nested more than"),
        score_case("score empty label", jsonl({"prompt": "q", "predict": "", "label": ""}), "line 1", "label is empty"),
        Case(
            "score url with password",
            "evaluate",
            ["score", "--predictions", CRED_HTTP, "--matcher", "exact"],
            ["credentials"],
        ),
        Case(
            "report garbage store",
            "report",
            ["--experiment", "x", "--tracking-uri", "sqlite:///mlflow.db", "--no-log"],
            ["sqlite:///mlflow.db", "not an MLflow store"],
            {"mlflow.db": bytes(range(256)) * 16},
        ),
        Case(
            "report experiment leaves reports",
            "report",
            ["--experiment", "../../x", "--tracking-uri", "sqlite:///m.db"],
            ["--experiment '../../x'", "--out"],
        ),
        Case(
            "report out is a file",
            "report",
            ["--experiment", "x", "--tracking-uri", "sqlite:///m.db", "--out", "f"],
            ["--out: f is a file"],
            {"f": "x"},
        ),
        Case(
            "report tracking uri with password",
            "report",
            ["--experiment", "x", "--tracking-uri", f"http://u:{SECRET}@127.0.0.1:9"],
            ["--tracking-uri: contains credentials"],
        ),
        Case("parts config not json", "parts", ["m"], ["m/config.json", "invalid JSON"], {"m/config.json": "{nope"}),
        Case("parts url with password", "parts", [CRED_HTTP], ["https://***@data.example.org"]),
        Case(
            "bench --set unclosed list",
            "bench",
            ["--set", "grid.parts=[llm", "--noop-fits", "0"],
            ["--set", "grid.parts", "YAML syntax error"],
        ),
        Case(
            "bench --set under a number",
            "bench",
            ["--set", "train.steps.deeper=1", "--noop-fits", "0"],
            ["--set", "train.steps is a int"],
            {"g.yaml": grid_text(train={"steps": 5})},
        ),
    ],
]


def command_main(command: str) -> Callable[[list[str]], int]:
    if command == "evaluate":
        from jobs.evaluate.__main__ import main
    elif command == "parts":
        from recipes.parts import main
    elif command == "bench":
        from benchmarks.sweep_overhead import main
    elif command == "plan":
        from orchestrator.plan import main
    elif command == "sweep":
        from orchestrator.sweep import main
    elif command == "finetune":
        from jobs.finetune.__main__ import main
    elif command == "data":
        from recipes.data.__main__ import main
    else:
        from analysis.report import main
    return main


def place(root: Path, files: dict) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogateescape")


def refuse_to_start_ray(*args, **kwargs):
    raise AssertionError("bad input got as far as starting Ray")


def run_main(command: str, argv: list[str], capsys) -> tuple[int, str]:
    try:
        status = command_main(command)(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_the_table_is_big_enough():
    assert len(CASES) >= 100
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_error(case, tmp_path, monkeypatch, capsys):
    from recipes.data.image_paths import EXTERNAL_IMAGES_ENV

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(EXTERNAL_IMAGES_ENV, "")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("ray.init", refuse_to_start_ray)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    place(tmp_path, case.files)
    before = set(tmp_path.rglob("*"))
    status, output = run_main(case.command, case.argv, capsys)
    assert status == 2, output
    assert "Traceback" not in output
    for text in case.expected:
        assert text in output, f"{text!r} not in:\n{output}"
    assert SECRET not in output
    written = sorted(str(path.relative_to(tmp_path)) for path in set(tmp_path.rglob("*")) - before)
    assert not written, f"written: {written}"


def test_external_images_are_read_when_opted_in(tmp_path, monkeypatch, capsys):
    from recipes.data.image_paths import EXTERNAL_IMAGES_ENV

    monkeypatch.setenv(EXTERNAL_IMAGES_ENV, "")  # restored after the command sets it
    image = tmp_path / "elsewhere" / "cat.png"
    image.parent.mkdir()
    image.write_bytes(png_bytes())
    data = tmp_path / "data" / "set.jsonl"
    data.parent.mkdir()
    data.write_text(jsonl(mcq_row(image=str(image)), mcq_row(id="q2", image="../elsewhere/cat.png")))
    status, output = run_main("data", ["--allow-external-images", "inspect", str(data)], capsys)
    assert status == 0, output
    assert f"{data}: 2 rows" in output and "images: 2 (100.0%)" in output


def test_reachability_checks_answer_within_30_seconds(monkeypatch):
    """The checks the commands run first are bounded (a refused port answers at once; a silent
    host after ``CONNECT_TIMEOUT_S``); the commands' own start-up time is not measured here."""
    from recipes.common.reachability import CONNECT_TIMEOUT_S, ray_address_problem, tracking_problem

    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    started = time.monotonic()
    problems = [ray_address_problem(), tracking_problem(f"http://127.0.0.1:{port}/")]
    assert time.monotonic() - started < 30
    assert all(f"127.0.0.1:{port} cannot be reached" in problem for problem in problems)
    assert CONNECT_TIMEOUT_S * 2 < 30


def closed_port_command(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    import os

    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=cwd, env=environment, timeout=300
    )  # a hang guard: before these checks, the commands waited for minutes


@pytest.mark.parametrize(
    "argv, unreachable",
    [
        (["-m", "orchestrator.plan", str(REPO / "grids" / "ci.yaml")], "ray"),
        (["-m", "orchestrator.sweep", "grid.yaml"], "tracking"),
        (["-m", "jobs.finetune", *FINETUNE, "--steps", "2"], "ray"),
    ],
    ids=["plan", "sweep tracking server", "finetune"],
)
def test_unreachable_cluster_or_tracking_server_fails_fast(argv, unreachable, tmp_path):
    port = free_port()  # nothing listens there
    env = {"RAY_ADDRESS": f"127.0.0.1:{port}"} if unreachable == "ray" else {"RAY_ADDRESS": ""}
    grid = yaml.safe_load((REPO / "grids" / "ci.yaml").read_text())
    grid["tracking"] = {"uri": f"http://127.0.0.1:{port}"}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    result = closed_port_command(argv, env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"127.0.0.1:{port} cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweeps").exists()


HTTP_404 = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"


class ImpostorServer:
    """A TCP server on 127.0.0.1 that accepts connections but is neither Ray nor MLflow: ``silent``
    never answers, ``http404`` answers every request with a plain HTTP 404, ``garbage`` with random bytes."""

    def __init__(self, kind: str) -> None:
        import socket
        import threading

        self.kind, self.connections = kind, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import os

        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            self.connections.append(connection)
            try:
                if self.kind == "http404":
                    connection.recv(65536)
                    connection.sendall(HTTP_404)
                elif self.kind == "garbage":
                    connection.sendall(os.urandom(512))
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def impostor(request):
    server = ImpostorServer(request.param)
    yield server
    server.close()


NOT_RAY = "does not answer as Ray"
NOT_MLFLOW = "does not answer as MLflow"
SWEEP_GRID = ["grid.yaml", "--no-check-paths"]


@pytest.mark.parametrize(
    "impostor, argv, pointed_at, expected",
    [
        ("silent", ["-m", "orchestrator.plan", *SWEEP_GRID], "127.0.0.1:{port}", NOT_RAY),
        ("http404", ["-m", "orchestrator.plan", *SWEEP_GRID], f"ray://alice:{SECRET}@127.0.0.1:{{port}}", NOT_RAY),
        ("http404", ["-m", "orchestrator.sweep", *SWEEP_GRID, "--dry-run"], "127.0.0.1:{port}", NOT_RAY),
        ("silent", ["-m", "orchestrator.sweep", *SWEEP_GRID, "--dry-run"], "ray://127.0.0.1:{port}", NOT_RAY),
        ("garbage", ["-m", "jobs.finetune", *FINETUNE, "--steps", "2"], "127.0.0.1:{port}", NOT_RAY),
        ("silent", ["-m", "orchestrator.sweep", *SWEEP_GRID], "http://127.0.0.1:{port}", NOT_MLFLOW),
        (
            "http404",
            ["-m", "jobs.finetune", *FINETUNE, "--steps", "2", "--tracking-uri", "http://127.0.0.1:{port}/"],
            "http://127.0.0.1:{port}/",
            NOT_MLFLOW,
        ),
        (
            "silent",  # (a tracking URI with a password is refused before it is tried: test_secrets.py)
            ["-m", "analysis.report", "--experiment", "x", "--tracking-uri", "http://127.0.0.1:{port}"],
            "http://127.0.0.1:{port}",
            NOT_MLFLOW,
        ),
        (
            "garbage",
            ["-m", "analysis.report", "--experiment", "x", "--tracking-uri", "https://127.0.0.1:{port}"],
            "https://127.0.0.1:{port}",
            NOT_MLFLOW,
        ),
    ],
    ids=[
        "plan silent gcs",
        "plan http ray client",
        "dry run http gcs",
        "dry run silent ray client",
        "finetune garbage gcs",
        "sweep silent tracking",
        "finetune http tracking",
        "report silent tracking",
        "report https garbage tracking",
    ],
    indirect=["impostor"],
)
def test_a_port_that_is_not_ray_or_mlflow_fails_fast(impostor, argv, pointed_at, expected, tmp_path):
    """A port that accepts connections but does not speak Ray's or MLflow's protocol is one line
    naming it (no password), exit status 2, within the subprocess's time limit (before this check,
    these commands hung on such a port: ``ray.init`` and MLflow's client retry for minutes)."""
    target = pointed_at.format(port=impostor.port)
    ray = expected == NOT_RAY
    env = {
        "RAY_ADDRESS": target if ray else "",
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": SECRET,
        ANSWER_TIMEOUT_ENV: "5",  # a silent port is refused after 5 s instead of the default 30
    }
    grid = yaml.safe_load((REPO / "grids" / "ci.yaml").read_text())
    grid["tracking"] = {"uri": "sqlite:///mlflow.db" if ray else target}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    argv = [arg.format(port=impostor.port) for arg in argv]
    result = closed_port_command(argv, env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    named = [line for line in result.stderr.splitlines() if f"127.0.0.1:{impostor.port}" in line]
    assert len(named) == 1 and expected in named[0], output
    assert "Traceback" not in output and SECRET not in output
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweeps").exists()


def test_a_real_mlflow_server_and_ray_cluster_pass_the_check(tmp_path, ray_cluster):
    """The protocol checks accept the real thing: an `mlflow server` (with and without a trailing
    slash) and the GCS of a running Ray cluster."""
    from recipes.common.reachability import ray_answer_problem, tracking_problem
    from tests.conftest import MlflowServer

    server = MlflowServer(tmp_path)
    server.start()
    try:
        assert tracking_problem(server.uri) is None
        assert tracking_problem(server.uri + "/") is None
    finally:
        server.stop()
    host, port = ray_cluster._private.worker.global_worker.node.gcs_address.rsplit(":", 1)
    assert ray_answer_problem(host, int(port), client=False) is None


GPU_NODE = {"CPU": 8.0, "GPU": 8.0}
CPU_NODE = {"CPU": 2.0, "GPU": 0.0}


@pytest.mark.parametrize(
    "shapes, resources, problem",
    [
        ([(CPU_NODE, 1)], {"gpus_per_worker": 8}, "resources.gpus_per_worker: 8 GPUs per worker"),
        ([(CPU_NODE, 1), (GPU_NODE, None)], {"gpus_per_worker": 8}, None),  # an autoscaler node type has them
        ([(CPU_NODE, 1), (GPU_NODE, 0)], {"gpus_per_worker": 8}, "resources.gpus_per_worker"),  # max 0 of that type
        (
            [(CPU_NODE, 1), (GPU_NODE, 1)],
            {"gpus_per_worker": 4, "workers_per_trial": 3},
            "resources.workers_per_trial: 3 workers x 4 GPUs = 12",
        ),
        ([(CPU_NODE, 1), (GPU_NODE, 2)], {"gpus_per_worker": 4, "workers_per_trial": 3}, None),
        ([(CPU_NODE, 2)], {"cpus_per_worker": 2, "workers_per_trial": 2}, None),
        ([(CPU_NODE, 1)], {"cpus_per_worker": 3}, "resources.cpus_per_worker: 3 CPUs per worker"),
    ],
)
def test_capacity_counts_live_nodes_and_autoscaler_node_types(shapes, resources, problem):
    from orchestrator.capacity import NodeShape, capacity_problems
    from orchestrator.grid_schema import Resources

    problems = capacity_problems(Resources(**resources), [NodeShape(shape, count) for shape, count in shapes])
    assert len(problems) == (problem is not None)
    assert problem is None or problems[0].startswith(problem)


@pytest.mark.parametrize("name", sorted(path.name for path in (REPO / "grids").glob("*.yaml")))
def test_trial_count_bound_covers_every_shipped_grid(name):
    from orchestrator.capacity import trial_count_bound
    from orchestrator.expand import expand_trials
    from orchestrator.grid import load_grid

    grid = load_grid(REPO / "grids" / name, check_paths=False)
    assert trial_count_bound(grid.axes, grid.methods, grid.include, grid.continual) >= len(expand_trials(grid))
