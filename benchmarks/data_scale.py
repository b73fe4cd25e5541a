"""python benchmarks/data_scale.py [--rows 10000,100000,1000000] [--where local,s3] [--workers 2] [--steps 300]

How the data path scales with the dataset: synthetic MCQ parquet files with small images (row
groups of the product's writer, ``recipes.data.writers.ROW_GROUP_SIZE`` rows), local and on a
moto S3 server on 127.0.0.1, read by ``--workers`` worker processes the way a trial reads them:

- training: each worker builds the training stream (``build_train_stream``) and reads its share
  of ``--steps`` steps of ``--batch`` samples per worker;
- evaluation: each worker reads its contiguous share of the file's evaluation batches
  (``contiguous_share`` of ``batches``, as ``DatasetEvaluator`` does), once.

Prints, per size and place: each worker's peak RSS (the largest of the workers), the time to the
first training batch (from opening the file), training samples/s per worker and evaluation rows/s
per worker, then the goals: peak RSS at the largest size within 20 % of the smallest, and reads
faster than a toy training step consumes samples (``--train-samples-per-s``, measured by
``benchmarks/llamafactory_side_by_side.py``: 10.4 steps/s x 16 samples on 2 workers). With
``--whole`` it also prints what reading a file whole costs one process (the data path before).
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from recipes.data.row_source import open_rows
from recipes.data.schema import MCQ_SCHEMA
from recipes.data.writers import ROW_GROUP_SIZE

IMAGE_POOL = 256
"""Distinct 8x8 noise PNGs the rows cycle through (stored per row, not dictionary-encoded)."""

BUCKET = "forgetless-data-scale"


def synthetic_table(rows: int, start: int) -> pa.Table:
    """``rows`` MCQ rows with small images, ids ``q<start>``..."""
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(IMAGE_POOL):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
        pool.append(buffer.getvalue())
    index = np.arange(start, start + rows)
    return pa.table(
        {
            "id": [f"q{i}" for i in index],
            "image": [pool[i % IMAGE_POOL] for i in index],
            "question": [f"What is shown in picture {i}?" for i in index],
            "options": [["cat", "dog", "bird", "fish"]] * rows,
            "answer": [("A", "B", "C", "D")[i % 4] for i in index],
            "source": ["synthetic"] * rows,
            "meta": ["{}"] * rows,
        },
        schema=MCQ_SCHEMA,
    )


def write_synthetic(rows: int, sink) -> None:
    """A synthetic parquet file of ``rows`` rows to ``sink`` (a path or a writable file object)."""
    with pq.ParquetWriter(sink, MCQ_SCHEMA, compression="zstd", use_dictionary=["source", "meta", "answer"]) as writer:
        for start in range(0, rows, 100_000):
            writer.write_table(synthetic_table(min(100_000, rows - start), start), row_group_size=ROW_GROUP_SIZE)


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across fork + exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def read_like_a_worker(path: str, rank: int, world: int, batch: int, steps: int, eval_batch: int, results) -> None:
    """One worker: its share of ``steps`` training steps, then its share of one evaluation pass."""
    from jobs.evaluate.scoring import batches
    from jobs.evaluate.suite_eval import contiguous_share
    from recipes.data.stream import build_train_stream

    imported = peak_rss_mib()
    started = time.perf_counter()
    stream = build_train_stream(path, 1.0, [], seed=0)
    stream.rows(rank * batch, batch)
    first_batch = time.perf_counter() - started
    started = time.perf_counter()
    for step in range(1, steps):
        stream.rows(step * world * batch + rank * batch, batch)
    train_rate = (steps - 1) * batch / (time.perf_counter() - started)
    started = time.perf_counter()
    source = open_rows(path)
    eval_batches = batches(range(source.num_rows), eval_batch)
    read = 0
    for index in contiguous_share(len(eval_batches), rank, world):
        read += len(source.take(eval_batches[index]))
    eval_rate = read / (time.perf_counter() - started)
    results.put({"rank": rank, "imported": imported, "peak": peak_rss_mib(), "first": first_batch,
                 "train": train_rate, "eval": eval_rate, "eval_rows": read})  # fmt: skip


def read_whole(path: str, results) -> None:
    """The data path before: the whole file read into one process and turned into dicts."""
    from recipes.data.readers import read_records

    importlib.import_module("jobs.evaluate.suite_eval")  # the same imports as a worker

    imported = peak_rss_mib()
    started = time.perf_counter()
    rows = read_records(path, check_images=False).to_pylist()
    results.put(
        {"imported": imported, "peak": peak_rss_mib(), "seconds": time.perf_counter() - started, "rows": len(rows)}
    )


def run_workers(path: str, args) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=read_like_a_worker, args=(path, rank, args.workers, args.batch, args.steps, args.eval_batch, results))
        for rank in range(args.workers)
    ]  # fmt: skip
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=3600) for _ in workers]
    for worker in workers:
        worker.join()
    if sum(report["eval_rows"] for report in reports) != open_rows(path).num_rows:
        raise RuntimeError("the evaluation shares do not cover every row exactly once")
    return {
        "peak": max(r["peak"] for r in reports),
        "imported": max(r["imported"] for r in reports),
        "first": max(r["first"] for r in reports),
        "train": min(r["train"] for r in reports),
        "eval": min(r["eval"] for r in reports),
    }


def start_moto() -> object:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="benchmark", AWS_SECRET_ACCESS_KEY="benchmark",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL_S3=f"http://{host}:{port}")  # fmt: skip
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--rows", default="10000,100000,1000000", help="dataset sizes, comma-separated")
    parser.add_argument("--where", default="local,s3", help="local and/or s3 (a moto server on 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="training samples per worker per step")
    parser.add_argument("--steps", type=int, default=300, help="training steps read per worker")
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument(
        "--train-samples-per-s",
        type=float,
        default=166.0,
        help="samples/s a toy training step consumes on --workers workers (the goal's bar)",
    )
    parser.add_argument("--whole", action="store_true", help="also time reading each local file whole (the old path)")
    args = parser.parse_args()
    sizes = [int(value) for value in args.rows.split(",")]
    places = args.where.split(",")
    server = start_moto() if "s3" in places else None
    header = (
        f"{'rows':>9} {'where':>5} {'peak RSS MiB':>12} {'(imports)':>9} {'first batch s':>13} "
        f"{'train samples/s':>15} {'eval rows/s':>11}"
    )
    print(f"{args.workers} workers, batch {args.batch}, {args.steps} steps, row groups of {ROW_GROUP_SIZE} rows")
    print(header)
    measured: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for rows in sizes:
            local = str(Path(scratch) / f"synthetic-{rows}.parquet")
            write_synthetic(rows, local)
            for place in places:
                path = local
                if place == "s3":
                    import s3fs

                    path = f"s3://{BUCKET}/synthetic-{rows}.parquet"
                    s3fs.S3FileSystem().put(local, path[5:])
                result = measured[place, rows] = run_workers(path, args)
                print(f"{rows:>9} {place:>5} {result['peak']:>12.0f} {result['imported']:>9.0f} {result['first']:>13.2f} "
                      f"{result['train']:>15.0f} {result['eval']:>11.0f}", flush=True)  # fmt: skip
            if args.whole:
                context = multiprocessing.get_context("spawn")
                results = context.Queue()
                process = context.Process(target=read_whole, args=(local, results))
                process.start()
                whole = results.get(timeout=3600)
                process.join()
                print(
                    f"{rows:>9} whole-file read in one process (before): peak RSS {whole['peak']:.0f} MiB, {whole['seconds']:.1f} s"
                )
    for place in places:
        small, large = measured[place, sizes[0]], measured[place, sizes[-1]]
        ratio = large["peak"] / small["peak"]
        slowest = min(measured[place, rows]["train"] for rows in sizes) * args.workers
        print(f"{place}: peak RSS {sizes[-1]} / {sizes[0]} rows = {ratio:.2f}x (goal <= 1.20x); "
              f"slowest training read {slowest:.0f} samples/s on {args.workers} workers = "
              f"{slowest / args.train_samples_per_s:.1f}x what a toy step consumes (goal > 1x)")  # fmt: skip
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
