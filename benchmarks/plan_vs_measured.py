"""python benchmarks/plan_vs_measured.py [--model qwen2.5-vl-3b@layers=2] [--recipes llm:lora,llm:full]
       [--steps 3] [--seq-len 256] [--grid 16]

The plan's memory estimate (``orchestrator.pricing``) beside the memory a real training process
peaks at. Each recipe runs in its own subprocess: a shape model (real widths, random weights,
fp32 on the CPU), the recipe's method, a DeepSpeed ZeRO-2 engine on one gloo worker with torch's
fused AdamW (as a trial builds it), and ``--steps`` optimizer steps on one sample of
``--seq-len`` tokens holding a ``--grid`` x ``--grid`` patch image. The measured figure is the
process's RSS high-water mark (``resource.getrusage``) minus its RSS after importing torch,
transformers and DeepSpeed (the libraries, which the estimate does not count). The estimate is
``TrialPrice.memory_bytes`` for the same workload in fp32: model state, DeepSpeed's gradient
bucket and one micro-batch's activations, without activation checkpointing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _current_rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_one(model: str, parts: str, method: str, steps: int, seq_len: int, grid: int) -> dict:
    """Train ``steps`` steps in this process; the measured and estimated bytes."""
    import deepspeed
    import torch
    import transformers  # noqa: F401  (counted in the baseline)

    baseline = _current_rss_bytes()
    from orchestrator.pricing import Workload, model_shape, price_trial
    from recipes.methods import MethodConfig, apply_method
    from recipes.models.families import family_for_model_type
    from recipes.models.shapes import build_shape_model

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    deepspeed.init_distributed(dist_backend="gloo")
    built = build_shape_model(model, device="cpu")
    family = family_for_model_type(built.config.model_type)
    method_config = MethodConfig(method)
    net, report = apply_method(built, family, parts, method_config)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    config = {
        "zero_optimization": {"stage": 2},
        "train_batch_size": 1,
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "steps_per_print": 10**9,
    }
    engine, _, _, _ = deepspeed.initialize(model=net, optimizer=optimizer, config=config)
    patches = grid * grid
    ids = torch.randint(10, 20000, (1, seq_len))
    ids[0, 1 : 1 + patches // 4] = built.config.image_token_id
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(patches, 3 * 2 * 14 * 14),
        "image_grid_thw": torch.tensor([[1, grid, grid]]),
        "labels": ids,
    }
    started = time.perf_counter()
    for _ in range(steps):
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
    seconds = (time.perf_counter() - started) / steps
    workload = Workload(micro_batch=1, workers=1, zero_stage=2, seq_len=seq_len, image_patches=patches, fp32=True)
    price = price_trial(model_shape(model), parts, method_config, workload)
    return {
        "recipe": f"{parts} {method}",
        "trainable": report.trainable,
        "estimate_trainable": price.trainable,
        "measured_bytes": _rss_bytes() - baseline,
        "baseline_bytes": baseline,
        "estimate_bytes": price.memory_bytes,
        "estimate_state_bytes": price.state_bytes + price.buffer_bytes,
        "estimate_activation_bytes": price.activation_bytes,
        "seconds_per_step": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The plan's memory estimate beside a training process's peak RSS.")
    parser.add_argument(
        "--model", default="qwen2.5-vl-3b@layers=2", help="shape model spelling (recipes.models.shapes)"
    )
    parser.add_argument("--recipes", default="llm:lora,llm:full", help="PARTS:METHOD pairs, comma-separated")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per recipe")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sample")
    parser.add_argument("--grid", type=int, default=16, help="image side in patches (16: 256 patches, 64 image tokens)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # PARTS:METHOD: run it in this process, print JSON
    args = parser.parse_args(argv)
    if args.one:
        parts, method = args.one.split(":")
        print(json.dumps(run_one(args.model, parts, method, args.steps, args.seq_len, args.grid)))
        return 0
    print(
        f"model {args.model}, {args.steps} steps, 1 sample of {args.seq_len} tokens + {args.grid}x{args.grid} patches"
    )
    print("recipe      trainable  estimate  measured  estimate/measured  (state + bucket + activations)  s/step")
    for recipe in args.recipes.split(","):
        command = [sys.executable, __file__, "--one", recipe, "--model", args.model, "--steps", str(args.steps)]
        command += ["--seq-len", str(args.seq_len), "--grid", str(args.grid)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{recipe}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        gb = 1e9
        print(
            f"{row['recipe']:<11} {row['trainable']:>9,}  {row['estimate_bytes'] / gb:6.2f} GB  "
            f"{row['measured_bytes'] / gb:6.2f} GB  {row['estimate_bytes'] / row['measured_bytes']:17.2f}  "
            f"({row['estimate_state_bytes'] / gb:.2f} + {row['estimate_activation_bytes'] / gb:.2f} GB)  "
            f"{row['seconds_per_step']:6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
