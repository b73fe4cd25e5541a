"""python benchmarks/llamafactory_side_by_side.py --llamafactory-python /path/to/venv/bin/python
       [--model toy-qwen2.5-vl] [--dataset toy-imagenet-vqa] [--rows 512] [--steps 60] [--rounds 4]
       [--setups 2x2,1x0] [--plain-loop] [--out bench-llamafactory]

Training speed of forgetless beside LLaMA-Factory's Trainer on the same inputs, interleaved on
one machine: the same model directory, the same ``--rows`` questions with the same prompt text
(the user turn is exactly what forgetless's collator renders, the image first, as LLaMA-Factory's
``<image>`` places it; both chat templates add the same system line), global batch
``--batch-size``, fp32, the vision tower and projector frozen and the language model fully tuned.

LLaMA-Factory is not a dependency of this project; install it in a separate environment and pass
its interpreter::

    python3 -m venv /tmp/lf && /tmp/lf/bin/pip install llamafactory==0.9.5
    /tmp/lf/bin/pip install torch==2.14.1 torchvision==0.29.1   # its Qwen2.5-VL processor needs torchvision
    /tmp/lf/bin/pip uninstall -y torchaudio

(on this machine torchvision loads only beside torch 2.14.1, so the peer's torch differs from the
project's 2.13.0). LLaMA-Factory 0.9.5 imports torchaudio at start-up but uses it only for audio
inputs; where it does not import, the peer runs with an empty stand-in module (printed when used).

Each round runs, one after another: LLaMA-Factory without gradient checkpointing, LLaMA-Factory
with its default (checkpointing on), and each forgetless setup (workers x ZeRO stage, each worker
given ``--cpus-per-worker`` CPUs, or all of them for one worker). LLaMA-Factory's figure is its
Trainer's own ``train_steps_per_second`` (the whole ``--steps`` steps, first step included);
forgetless's is ``--steps`` steps after one warm-up step of the trial's real worker loop
(``benchmarks/train_throughput.py``). It prints forgetless's tokens per sample and the first
question's length on both sides, then a table of each setup's median and range over rounds and its
ratio to LLaMA-Factory's best. With ``--plain-loop`` each round also runs ``benchmarks/plain_loop.py``
on the same questions (the same model, loss and fused AdamW in one plain PyTorch process, every
batch collated before the clock): the ceiling that neither trainer's overhead is in.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from train_throughput import parse_setups, run_setup

from recipes.data.collate import RecordCollator, question_text
from recipes.data.registry import load_dataset
from recipes.data.schema import row_images
from recipes.models import load_model, resolve_model_dir

DATASET_NAME = "forgetless_bench"
"""The dataset's name in LLaMA-Factory's ``dataset_info.json``."""


def export_questions(dataset: str, rows: int, directory: Path) -> tuple[Path, list[dict]]:
    """The first ``rows`` single-image questions of ``dataset`` as a parquet (forgetless) and a sharegpt JSON (LLaMA-Factory)."""
    table = load_dataset(dataset)
    records = [row for row in table.to_pylist() if len(row_images(row)) == 1][:rows]
    if len(records) < rows:
        raise SystemExit(f"--rows: {dataset} has only {len(records)} single-image questions, asked for {rows}")
    directory.mkdir(parents=True, exist_ok=True)
    parquet = directory / "questions.parquet"
    pq.write_table(pa.Table.from_pylist(records, schema=table.schema), parquet)
    images = directory / "images"
    images.mkdir(exist_ok=True)
    examples = []
    for index, record in enumerate(records):
        (image,) = row_images(record)
        path = images / f"{index:06d}.png"
        path.write_bytes(image)
        examples.append(
            {
                "messages": [
                    {"role": "user", "content": "<image>" + question_text(record)},
                    {"role": "assistant", "content": record["answer"]},
                ],
                "images": [str(path)],
            }
        )
    (directory / "questions.json").write_text(json.dumps(examples))
    (directory / "dataset_info.json").write_text(
        json.dumps(
            {
                DATASET_NAME: {
                    "file_name": "questions.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "messages", "images": "images"},
                    "tags": {
                        "role_tag": "role",
                        "content_tag": "content",
                        "user_tag": "user",
                        "assistant_tag": "assistant",
                    },
                }
            }
        )
    )
    return parquet, records


def llamafactory_config(
    args: argparse.Namespace, model_dir: Path, data_dir: Path, output: Path, checkpointing: bool
) -> str:
    """LLaMA-Factory's training YAML for the side-by-side setup."""
    settings = {
        "model_name_or_path": str(model_dir),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "freeze_vision_tower": True,
        "freeze_multi_modal_projector": True,
        "dataset": DATASET_NAME,
        "dataset_dir": str(data_dir),
        "template": "qwen2_vl",
        "cutoff_len": 1024,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": str(output),
        "overwrite_output_dir": True,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-4,
        "max_steps": args.steps,
        "lr_scheduler_type": "constant",
        "disable_gradient_checkpointing": not checkpointing,
        "seed": 0,
    }
    return "\n".join(f"{key}: {json.dumps(value)}" for key, value in settings.items()) + "\n"


def torchaudio_stand_in(args: argparse.Namespace) -> dict[str, str]:
    """Environment for LLaMA-Factory: an empty ``torchaudio`` on PYTHONPATH when the real one does not import."""
    if subprocess.run([args.llamafactory_python, "-c", "import torchaudio"], capture_output=True).returncode == 0:
        return {}
    stubs = args.out / "stubs"
    (stubs / "torchaudio").mkdir(parents=True, exist_ok=True)
    (stubs / "torchaudio" / "__init__.py").write_text('"""Stand-in: image-only training never loads audio."""\n')
    print("LLaMA-Factory: torchaudio does not import there; an empty stand-in module is used (no audio inputs)")
    return {"PYTHONPATH": str(stubs.resolve())}


def run_llamafactory(
    args: argparse.Namespace, model_dir: Path, data_dir: Path, checkpointing: bool, extra_env: dict[str, str]
) -> tuple[float, Path]:
    """One ``llamafactory-cli train`` run: its Trainer's ``train_steps_per_second`` and its log."""
    name = "checkpointing" if checkpointing else "no-checkpointing"
    output = args.out / f"llamafactory-{name}"
    config = args.out / f"llamafactory-{name}.yaml"
    config.write_text(llamafactory_config(args, model_dir, data_dir, output, checkpointing))
    log = args.out / f"llamafactory-{name}.log"
    env = {**os.environ, "DISABLE_VERSION_CHECK": "1", "CUDA_VISIBLE_DEVICES": "", **extra_env}
    with log.open("w") as handle:
        result = subprocess.run(
            [args.llamafactory_python, "-m", "llamafactory.cli", "train", str(config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"llamafactory-cli train failed (exit {result.returncode}); see {log}")
    return json.loads((output / "train_results.json").read_text())["train_steps_per_second"], log


def forgetless_tokens(model: str, records: list[dict]) -> list[int]:
    """Sequence length of each question as forgetless trains it (prompt and answer)."""
    collate = RecordCollator(load_model(model).processor, with_answers=True)
    return [int(collate([record])["attention_mask"].sum()) for record in records]


def llamafactory_first_example_tokens(log: Path) -> int | None:
    """Length of the training example LLaMA-Factory prints before training (``input_ids:`` then the list)."""
    lines = log.read_text().splitlines()
    for index, line in enumerate(lines[:-1]):
        if line.strip() == "input_ids:":
            return len(json.loads(lines[index + 1]))
    return None


def run_plain_loop(args: argparse.Namespace, parquet: Path) -> tuple[float, str]:
    """One ``benchmarks/plain_loop.py`` run on the exported questions: (steps/s, its summary line)."""
    command = [
        sys.executable,
        str(Path(__file__).with_name("plain_loop.py")),
        "--model",
        args.model,
        "--dataset",
        str(parquet),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"([0-9.]+) steps/s", result.stdout)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"benchmarks/plain_loop.py failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return float(found.group(1)), result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--llamafactory-python", required=True, help="interpreter of an environment with llamafactory")
    parser.add_argument("--model", default="toy-qwen2.5-vl", help="registry name or local model directory")
    parser.add_argument("--dataset", default="toy-imagenet-vqa", help="registered name or MCQ file")
    parser.add_argument("--rows", type=int, default=512, help="questions both trainers see")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument(
        "--setups",
        type=parse_setups,
        default=parse_setups("2x2,1x0"),
        help="forgetless setups, workers x ZeRO stage, comma-separated",
    )
    parser.add_argument(
        "--cpus-per-worker",
        type=int,
        default=0,
        help="CPUs per forgetless worker (0: the machine's CPUs divided among the workers)",
    )
    parser.add_argument(
        "--plain-loop",
        action="store_true",
        help="also run benchmarks/plain_loop.py each round (no Ray, no DeepSpeed: the ceiling)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-llamafactory"), help="working directory")
    args = parser.parse_args()
    if not Path(args.llamafactory_python).exists():
        raise SystemExit(f"--llamafactory-python: {args.llamafactory_python} does not exist")

    model_dir = resolve_model_dir(args.model, download=True)
    parquet, records = export_questions(args.dataset, args.rows, args.out / "data")
    lengths = forgetless_tokens(args.model, records)
    print(f"{len(records)} questions, {sum(lengths) / len(lengths):.1f} tokens per sample in forgetless", flush=True)
    peer_env = torchaudio_stand_in(args)
    cpus = os.cpu_count() or 1
    figures: dict[str, list[float]] = {}
    for round_index in range(1, args.rounds + 1):
        for checkpointing in (False, True):
            name = f"LLaMA-Factory, gradient checkpointing {'on (its default)' if checkpointing else 'off'}"
            started = time.perf_counter()
            steps_per_s, log = run_llamafactory(args, model_dir, args.out / "data", checkpointing, peer_env)
            figures.setdefault(name, []).append(steps_per_s)
            print(
                f"round {round_index}: {name}: {figures[name][-1]:.2f} steps/s ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            if round_index == 1 and not checkpointing:
                peer = llamafactory_first_example_tokens(log)
                print(f"first question: {lengths[0]} tokens in forgetless, {peer} in LLaMA-Factory", flush=True)
        if args.plain_loop:
            steps_per_s, line = run_plain_loop(args, parquet)
            name = f"plain PyTorch loop, 1 process x {cpus} thread(s), no Ray, no DeepSpeed"
            figures.setdefault(name, []).append(steps_per_s)
            print(f"round {round_index}: {line}", flush=True)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            for workers, zero_stage in args.setups:
                per_worker = args.cpus_per_worker or max(1, cpus // workers)
                setup = argparse.Namespace(
                    model=args.model,
                    dataset=str(parquet),
                    parts="llm",
                    steps=args.steps,
                    batch_size=args.batch_size,
                    cpus_per_worker=per_worker,
                )
                stats = run_setup(setup, workers, zero_stage)
                name = f"forgetless, {workers} worker(s) x {stats['threads']} thread(s), ZeRO-{zero_stage}"
                figures.setdefault(name, []).append(args.steps / stats["seconds"])
                print(f"round {round_index}: {name}: {figures[name][-1]:.2f} steps/s", flush=True)
        finally:
            ray.shutdown()

    best_peer = max(statistics.median(v) for k, v in figures.items() if k.startswith("LLaMA-Factory"))
    print(
        f"\n{len(records)} questions from {args.dataset}, model {args.model}, global batch {args.batch_size}, "
        f"{args.steps} steps, {args.rounds} interleaved rounds, {cpus} CPUs"
    )
    print("| setup | steps/s (median, range) | x LLaMA-Factory's best |")
    print("|---|---:|---:|")
    for name, values in sorted(figures.items(), key=lambda item: -statistics.median(item[1])):
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} ({min(values):.2f}-{max(values):.2f}) | {median / best_peer:.2f}x |")


if __name__ == "__main__":
    main()
