"""python benchmarks/checkpoint_size.py [--grid grids/demo.yaml] [--base M] [--wide qwen2.5-vl-3b@layers=2]
       [--recipe LABEL] [--no-s3]

Bytes and seconds of a trial checkpoint, before and after checkpoints were cut down to what trains.
For each recipe of the grid on its base (the toy Qwen2.5-VL for grids/demo.yaml), and for the LoRA
and projector recipes on a model with Qwen2.5-VL-3B's widths (``--wide``: a shape model, tied
embeddings, vocabulary 151,936), it builds the trial's DeepSpeed engine (ZeRO stage of the grid,
one gloo rank on CPU), takes one optimizer step and saves the engine state two ways:

- ``before``: DeepSpeed's ``save_checkpoint(exclude_frozen_parameters=True)`` alone, as trials
  saved before; its frozen-parameter filter walks ``named_parameters()``, which names a tied tensor
  once, so a frozen output head tied to the embedding stays in the module state;
- ``after``: ``jobs.checkpoints.save_trainable_state`` (the same call with every frozen name,
  tied ones included, dropped from the module state), what trials save now.

Each is written to local disk, then copied to S3 (a moto server on 127.0.0.1 that this script
starts, as Ray Train persists a reported checkpoint directory), and read back into the engine
(S3: downloaded first). It prints bytes, the share of the model's fp32 bytes, save and load
seconds, and the one-off cost of the base's content hash (``jobs.checkpoints.base_record``) cold
and memoized.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import deepspeed
import torch
import yaml

from jobs.checkpoints import (
    CHECKPOINT_TAG,
    base_record,
    load_trainable_state,
    save_trainable_state,
)
from jobs.finetune.loss import supervised_loss
from recipes.common import storage
from recipes.common.cache import cache_root
from recipes.common.text_table import text_table
from recipes.data.collate import RecordCollator
from recipes.data.stream import build_train_stream
from recipes.methods import MethodConfig, apply_method
from recipes.models import load_model

WIDE_RECIPES = (("llm", "lora"), ("projector", "full"))
"""(parts, method) of the grid measured on the wide model too."""
BUCKET = "checkpoint-bench"
"""Bucket the script creates on its moto server."""


def one_rank_group() -> None:
    """A one-rank gloo process group for DeepSpeed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free loopback port, with the bucket; (process, endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    import boto3

    for _ in range(100):
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            return server, endpoint
        except Exception:  # not serving yet
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"moto server at {endpoint} did not start")


def training_batch(processor, rows: int = 2) -> dict[str, torch.Tensor]:
    """The first ``rows`` questions of the toy target task (pictures included), collated for ``processor``."""
    stream = build_train_stream("toy-imagenet-vqa", 1.0, [], seed=0)
    return RecordCollator(processor, with_answers=True)(stream.rows(0, rows))


def build_engine(loaded, parts: str, method: MethodConfig, stage: int):
    """The trial's engine on ``loaded`` after one optimizer step (so AdamW has its state)."""
    model, report = apply_method(loaded.model, loaded.family, parts, method)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    config = {"train_batch_size": 2, "zero_optimization": {"stage": stage}, "steps_per_print": 10**9}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    loss = supervised_loss(engine, training_batch(loaded.processor))
    engine.backward(loss)
    engine.step()
    return engine, report


def save(engine, directory: Path, mode: str) -> None:
    if mode == "before":
        engine.save_checkpoint(str(directory), tag=CHECKPOINT_TAG, exclude_frozen_parameters=True)
    else:
        save_trainable_state(engine, directory)


def directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(engine, mode: str, s3: bool) -> dict[str, float]:
    """Bytes, local save/load seconds and (with ``s3``) save+upload / download+load seconds of one mode."""
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-") as tmp:
        local = Path(tmp) / "local"
        row = {"bytes": 0.0, "save_s": timed(lambda: save(engine, local, mode))}
        row["bytes"] = float(directory_bytes(local))
        row["load_s"] = timed(lambda: load_trainable_state(engine, local))
        if s3:
            staged, back = Path(tmp) / "staged", Path(tmp) / "back"
            uri = f"s3://{BUCKET}/{mode}-{time.time_ns()}"
            fs, path = storage.filesystem(uri)

            def save_upload():
                save(engine, staged, mode)
                fs.put(str(staged), path, recursive=True)

            def download_load():
                fs.get(path, str(back), recursive=True)
                load_trainable_state(engine, back)

            try:
                row["s3_save_s"] = timed(save_upload)
                row["s3_load_s"] = timed(download_load)
                fs.rm(path, recursive=True)
            except OSError as error:  # the in-memory moto server can fail a multi-GB multipart upload
                print(f"S3 {mode}: {error}", file=sys.stderr)
    return row


def hash_cost(loaded) -> tuple[float, float]:
    """Seconds of the base's content hash, cold (memo removed) and memoized."""
    shutil.rmtree(cache_root() / "file-sha256", ignore_errors=True)
    cold = timed(lambda: base_record(loaded.name, loaded.path))
    return cold, timed(lambda: base_record(loaded.name, loaded.path))


def grid_recipes(path: str) -> tuple[str, int, list[tuple[str, str, MethodConfig]]]:
    """(base model, ZeRO stage, [(label, parts, method)]) of a grid's distinct recipes (lr aside).

    Read from the grid's ``model``, ``train.deepspeed.zero_stage``, ``grid`` (parts x method) and
    ``include`` entries; the learning rate does not change what a checkpoint holds.
    """
    with open(path) as handle:
        grid = yaml.safe_load(handle)
    axes = grid.get("grid", {})
    cells = [{"parts": p, "method": m} for p in axes.get("parts", ["llm"]) for m in axes.get("method", ["full"])]
    cells += grid.get("include", [])
    recipes: dict[str, tuple[str, str, MethodConfig]] = {}
    for cell in cells:
        lora = cell.get("lora", {})
        method = MethodConfig(cell.get("method", "full"), lora.get("r", 8), lora.get("alpha", 16.0))
        label = f"{cell['parts']} {method.name}" + (f" r{method.lora_r}" if method.name == "lora" else "")
        recipes.setdefault(label, (label, cell["parts"], method))
    stage = grid.get("train", {}).get("deepspeed", {}).get("zero_stage", 0)
    return grid["model"], stage, list(recipes.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--grid", default="grids/demo.yaml", help="grid whose recipes are measured")
    parser.add_argument("--wide", default="qwen2.5-vl-3b@layers=2", help="wide model for the LoRA and projector rows")
    parser.add_argument("--no-s3", action="store_true", help="skip the moto S3 measurements")
    parser.add_argument("--base", help="measure the grid's recipes on this model instead of the grid's own")
    parser.add_argument("--recipe", action="append", help="only this recipe label, e.g. 'projector full' (repeatable)")
    args = parser.parse_args(argv)

    base, stage, recipes = grid_recipes(args.grid)
    base = args.base or base
    recipes = [recipe for recipe in recipes if not args.recipe or recipe[0] in args.recipe]
    runs = [(base, recipe) for recipe in recipes]
    runs += [(args.wide, recipe) for recipe in recipes if (recipe[1], recipe[2].name) in WIDE_RECIPES]
    one_rank_group()
    server = None if args.no_s3 else start_moto()[0]
    rows, hashes = [], []
    try:
        for model_name in dict.fromkeys(name for name, _ in runs):
            loaded = load_model(model_name)
            hashes.append([model_name, *(f"{s:.2f}" for s in hash_cost(loaded))])
            model_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
            for name, (label, parts, method) in runs:
                if name != model_name:
                    continue
                loaded = load_model(model_name)  # a fresh base for every recipe
                engine, report = build_engine(loaded, parts, method, stage)
                for mode in ("before", "after"):
                    row = measure(engine, mode, server is not None)
                    rows.append(
                        [
                            model_name,
                            label,
                            f"{report.trainable:,}",
                            mode,
                            f"{row['bytes'] / 1e6:,.2f}",
                            f"{100 * row['bytes'] / model_bytes:.2f}%",
                            f"{row['save_s']:.2f}",
                            f"{row['load_s']:.2f}",
                            f"{row.get('s3_save_s', float('nan')):.2f}",
                            f"{row.get('s3_load_s', float('nan')):.2f}",
                        ]
                    )
                    print(" | ".join(rows[-1]), flush=True)
                del engine, loaded
    finally:
        if server is not None:
            server.kill()
            server.wait()
    header = ["model", "recipe", "trainable", "save", "MB", "% of model", "save s", "load s", "S3 save s", "S3 load s"]
    print(text_table(header, rows))
    print(text_table(["base", "content hash cold s", "memoized s"], hashes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
