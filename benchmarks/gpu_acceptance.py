"""python benchmarks/gpu_acceptance.py [--cpu-only] [--model toy-qwen2.5-vl-init] [--shape qwen2.5-vl-7b]

What a machine with one or more GPUs runs to accept a release. Each check prints one line,
``PASS <check>: <figures>`` or ``FAIL <check>: <figures>``, and the exit status is 1 when any
check fails (0 otherwise). Every setting's peak memory and step time is printed as a table first.

On the GPU (bf16 unless a line says otherwise; ``--model`` is the small model of the kernel checks):

- ``fp32 params are fp32`` / ``bf16 params are bf16``: the trial's model load
  (``jobs.finetune.trial_model``) in each precision;
- ``bf16 loss near fp32``: one batch's loss within 5% (+0.05) of the fp32 loss;
- ``eager agrees with sdpa`` and ``flash_attention_2 agrees with sdpa`` (when ``flash_attn`` is
  installed; else a ``SKIP`` line): losses within 2% in bf16;
- ``checkpointing keeps the loss``, ``checkpointing lowers saved activations`` (bytes of the
  non-parameter tensors autograd saves, counted with ``torch.autograd.graph.saved_tensors_hooks``)
  and ``checkpointing lowers peak memory`` (``torch.cuda.max_memory_allocated``, forward + backward);
- ``deepspeed bf16 engine``: the trial's DeepSpeed engine (``jobs.finetune.engine.build_engine``,
  NCCL, one rank) holds bf16 module parameters and takes a finite optimizer step;
- ``N-worker trial over NCCL``: ``python -m jobs.finetune`` with 2 workers of one GPU each when the
  machine has 2 or more GPUs (else 1), precision bf16, 2 steps, exits 0;
- ``<shape> fits at L layers``: the deepest ``--shape`` model (full fine-tune of ``llm``, bf16,
  activation checkpointing, one worker) whose plan estimate (``orchestrator.pricing``) fits the
  GPU, searched downwards from the real depth, then one real optimizer step at that depth (a CUDA
  out-of-memory error steps one layer down); it passes when a depth trains;
- ``sweep finishes both trials``: ``python -m orchestrator.sweep`` on a 2-trial grid it writes
  (``resources.gpus_per_worker: 1``), exit status 0.

``--cpu-only`` runs the checks that make sense on a CPU, on ``--model`` (default: the ~1 M-parameter
toy Qwen2.5-VL, seconds): fp32 and bf16 loads, bf16 loss near fp32, eager agrees with sdpa (fp32:
within 1e-4), checkpointing keeps the loss and lowers saved activations. ``tests/test_gpu_acceptance.py``
runs it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from contract.exits import EXIT_FAILED, EXIT_OK  # noqa: E402
from jobs.finetune.config import TrialConfig  # noqa: E402
from jobs.finetune.engine import enable_activation_checkpointing  # noqa: E402
from jobs.finetune.loss import supervised_loss  # noqa: E402
from jobs.finetune.trial_model import load_trial_model  # noqa: E402
from recipes.data.collate import RecordCollator  # noqa: E402
from recipes.data.stream import build_train_stream  # noqa: E402

DATASET = "toy-imagenet-vqa"
"""Rows of the kernel checks' batch."""
ROWS = 2
"""Rows in the kernel checks' batch."""
BF16_LOSS_TOLERANCE = 0.05
"""bf16 loss vs fp32 loss: relative tolerance (and the same absolute slack)."""
KERNEL_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
"""Relative tolerance between attention kernels' losses, per precision."""
CHECKPOINTING_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
"""Relative tolerance between the losses with and without activation checkpointing."""


@dataclass
class Measure:
    """One forward + backward of the check batch under one setting."""

    setting: str
    loss: float
    seconds: float
    saved_bytes: int
    """Bytes of the non-parameter tensors autograd saved for backward."""
    peak_bytes: int | None
    """``torch.cuda.max_memory_allocated`` over forward + backward (GPU), else None."""
    param_dtypes: set[torch.dtype]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


def close(a: float, b: float, relative: float, absolute: float = 0.0) -> bool:
    return abs(a - b) <= relative * max(abs(a), abs(b)) + absolute


def check_trial(model: str, **fields) -> TrialConfig:
    """A trial config of the checks (only its model, precision, kernel and checkpointing matter)."""
    return TrialConfig(model=model, parts="llm", lr=1e-5, **fields)


def check_rows() -> list[dict]:
    return build_train_stream(DATASET, 1.0, [], 0).rows(0, ROWS)


def measure(model: str, device: str, precision: str, attn: str, checkpointing: bool, rows: list[dict]) -> Measure:
    """Load ``model`` as a trial would and run one forward + backward of ``rows`` on ``device``."""
    trial = check_trial(model, precision=precision, attn_implementation=attn, activation_checkpointing=checkpointing)
    loaded = load_trial_model(trial)
    net = loaded.model.to(device)
    dtype = next(net.parameters()).dtype
    net.requires_grad_(True)
    if checkpointing:
        enable_activation_checkpointing(net)
    net.train()
    batch = {k: v.to(device) for k, v in RecordCollator(loaded.processor, with_answers=True)(rows).items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
    parameters = {p.data_ptr() for p in net.parameters()}
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.data_ptr() not in parameters:
            saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    gpu = device.startswith("cuda")
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = supervised_loss(net, batch)
    loss.backward()
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if gpu else None
    result = Measure(
        f"{precision} {attn} checkpointing {'on' if checkpointing else 'off'}",
        loss.item(),
        seconds,
        saved[0],
        peak,
        {p.dtype for p in net.parameters() if p.is_floating_point()},
    )
    del net, loaded, batch, loss
    if gpu:
        torch.cuda.empty_cache()
    return result


def kernel_checks(model: str, device: str, rows: list[dict]) -> tuple[list[Measure], list[Check]]:
    """Precision, attention kernel and activation checkpointing checks on ``model``."""
    gpu = device.startswith("cuda")
    main = "bf16" if gpu else "fp32"
    dtype = torch.bfloat16 if gpu else torch.float32
    fp32 = measure(model, device, "fp32", "sdpa", False, rows)
    bf16 = measure(model, device, "bf16", "sdpa", False, rows)
    base = bf16 if gpu else fp32
    eager = measure(model, device, main, "eager", False, rows)
    recomputed = measure(model, device, main, "sdpa", True, rows)
    measures = [fp32, bf16, eager, recomputed]
    checks = [
        Check(
            "fp32 params are fp32",
            fp32.param_dtypes == {torch.float32},
            f"dtypes {sorted(map(str, fp32.param_dtypes))}",
        ),
        Check(
            "bf16 params are bf16",
            bf16.param_dtypes == {torch.bfloat16},
            f"dtypes {sorted(map(str, bf16.param_dtypes))}",
        ),
        Check(
            "bf16 loss near fp32",
            close(bf16.loss, fp32.loss, BF16_LOSS_TOLERANCE, BF16_LOSS_TOLERANCE),
            f"bf16 {bf16.loss:.4f}, fp32 {fp32.loss:.4f}",
        ),
        Check(
            "eager agrees with sdpa",
            close(eager.loss, base.loss, KERNEL_TOLERANCE[dtype]),
            f"{main}: eager {eager.loss:.6f}, sdpa {base.loss:.6f} (tolerance {KERNEL_TOLERANCE[dtype]:g} relative)",
        ),
    ]
    if gpu and importlib.util.find_spec("flash_attn") is not None:
        flash = measure(model, device, main, "flash_attention_2", False, rows)
        measures.append(flash)
        checks.append(
            Check(
                "flash_attention_2 agrees with sdpa",
                close(flash.loss, base.loss, KERNEL_TOLERANCE[dtype]),
                f"{main}: flash {flash.loss:.6f}, sdpa {base.loss:.6f} (tolerance {KERNEL_TOLERANCE[dtype]:g} relative)",
            )
        )
    elif gpu:
        print("SKIP flash_attention_2 agrees with sdpa: flash_attn is not installed")
    checks += [
        Check(
            "checkpointing keeps the loss",
            close(recomputed.loss, base.loss, CHECKPOINTING_TOLERANCE[dtype]),
            f"{main}: on {recomputed.loss:.6f}, off {base.loss:.6f}",
        ),
        Check(
            "checkpointing lowers saved activations",
            recomputed.saved_bytes < base.saved_bytes,
            f"on {recomputed.saved_bytes:,} B, off {base.saved_bytes:,} B",
        ),
    ]
    if gpu:
        checks.append(
            Check(
                "checkpointing lowers peak memory",
                recomputed.peak_bytes < base.peak_bytes,
                f"on {recomputed.peak_bytes:,} B, off {base.peak_bytes:,} B",
            )
        )
    return measures, checks


def one_rank_nccl() -> None:
    """A one-rank NCCL process group for the in-process DeepSpeed engines."""
    import deepspeed

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    deepspeed.init_distributed(dist_backend="nccl")


def engine_step(trial: TrialConfig, rows: list[dict]) -> tuple[float, float, int, set[torch.dtype]]:
    """One optimizer step of the trial's DeepSpeed engine on GPU 0: (loss, seconds, peak bytes, module dtypes)."""
    from jobs.finetune.engine import build_engine

    loaded = load_trial_model(trial)
    engine, _ = build_engine(trial, loaded, world_size=1, use_gpu=True)
    collate = RecordCollator(loaded.processor, with_answers=True)
    batch = {k: v.to(engine.device) for k, v in collate(rows[: trial.micro_batch_size]).items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16 if trial.bf16 else torch.float32)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    loss = supervised_loss(engine, batch)
    engine.backward(loss)
    engine.step()
    torch.cuda.synchronize()
    result = (
        loss.item(),
        time.perf_counter() - started,
        torch.cuda.max_memory_allocated(),
        {p.dtype for p in engine.module.parameters() if p.is_floating_point()},
    )
    engine.destroy()
    del engine, loaded, loss, batch
    torch.cuda.empty_cache()
    return result


def deepspeed_check(model: str, rows: list[dict]) -> Check:
    trial = check_trial(model, precision="bf16", gpus_per_worker=1, batch_size=2, micro_batch_size=2, steps=2)
    loss, seconds, peak, dtypes = engine_step(trial, rows)
    passed = dtypes == {torch.bfloat16} and torch.isfinite(torch.tensor(loss)).item()
    return Check(
        "deepspeed bf16 engine",
        passed,
        f"module dtypes {sorted(map(str, dtypes))}, loss {loss:.4f}, {seconds:.2f} s, peak {peak:,} B",
    )


def shape_check(base: str, rows: list[dict]) -> Check:
    """The deepest ``base`` shape model whose estimate fits GPU 0, then one real step there (OOM: one layer less)."""
    from orchestrator.pricing import Workload, model_shape, price_trial
    from recipes.methods import MethodConfig
    from recipes.models.shapes import full_spec

    memory = torch.cuda.get_device_properties(0).total_memory
    workload = Workload(micro_batch=2, checkpointing=True)
    layers = full_spec(base).layers
    while layers > 1:
        price = price_trial(model_shape(f"{base}@layers={layers}"), "llm", MethodConfig("full"), workload)
        if price.memory_bytes <= memory:
            break
        layers -= 1
    estimated = layers
    while layers >= 1:
        trial = check_trial(
            f"{base}@layers={layers}", precision="bf16", gpus_per_worker=1, batch_size=2, micro_batch_size=2, steps=2
        )
        try:
            loss, seconds, peak, _ = engine_step(trial, rows)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            layers -= 1
            continue
        return Check(
            f"{base} fits at {layers} layers",
            True,
            f"estimate fits {estimated} layers in {memory:,} B; measured peak {peak:,} B, {seconds:.2f} s/step, loss {loss:.3f}",
        )
    return Check(f"{base} fits at some depth", False, f"out of memory at every depth up to {estimated}")


def small_suite(folder: Path, rows: int = 4) -> str:
    from benchmarks.real_widths import small_suite as write_suite

    return write_suite(folder, rows)


def trial_check(folder: Path, suite: str, workers: int) -> Check:
    """``python -m jobs.finetune``: ``workers`` workers of one GPU each (NCCL), bf16, 2 steps."""
    command = [sys.executable, "-m", "jobs.finetune", "--model", "toy-qwen2.5-vl", "--parts", "llm", "--lr", "1e-5"]
    command += ["--steps", "2", "--batch-size", "4", "--micro-batch-size", str(4 // workers), "--eval-every", "2"]
    command += ["--workers", str(workers), "--gpus-per-worker", "1", "--precision", "bf16", "--eval-suite", suite]
    command += ["--eval-signals", "output_drift", "--storage", str(folder / "trial-storage")]
    command += ["--tracking-uri", f"sqlite:///{folder / 'trial-mlflow.db'}", "--experiment", "gpu-acceptance"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    detail = f"exit {done.returncode} in {time.perf_counter() - started:.0f} s"
    if done.returncode:
        detail += "; " + " | ".join(done.stderr.strip().splitlines()[-3:])
    return Check(f"{workers}-worker trial over NCCL", done.returncode == 0, detail)


def sweep_check(folder: Path, suite: str) -> Check:
    """``python -m orchestrator.sweep`` on a 2-trial grid of one GPU per worker."""
    grid = {
        "name": "gpu-acceptance",
        "model": "toy-qwen2.5-vl",
        "train": {"dataset": DATASET, "steps": 2, "batch_size": 4, "eval_every": 2},
        "eval": {"mode": "logits", "suite": suite, "signals": ["output_drift"]},
        "grid": {"parts": ["llm"], "method": ["full"], "lr": [1.0e-5, 1.0e-4], "seed": [0]},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 1},
        "storage": str(folder / "sweeps"),
        "tracking": {"uri": f"sqlite:///{folder / 'sweep-mlflow.db'}"},
        "report": {"enabled": False},
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(path)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    detail = f"exit {done.returncode} in {time.perf_counter() - started:.0f} s"
    if done.returncode:
        detail += "; " + " | ".join(done.stderr.strip().splitlines()[-3:])
    return Check("sweep finishes both trials", done.returncode == 0, detail)


def settings_table(measures: list[Measure]) -> str:
    lines = ["setting                                 loss      seconds  saved activations  peak memory"]
    for m in measures:
        peak = f"{m.peak_bytes / 2**20:,.0f} MiB" if m.peak_bytes is not None else "-"
        lines.append(f"{m.setting:<38} {m.loss:9.5f} {m.seconds:8.3f}  {m.saved_bytes / 2**20:13,.1f} MiB  {peak:>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A release's acceptance checks on a GPU machine (or their CPU part).")
    parser.add_argument("--cpu-only", action="store_true", help="run the checks that make sense on a CPU")
    parser.add_argument("--model", default="toy-qwen2.5-vl-init", help="model of the kernel checks")
    parser.add_argument("--shape", default="qwen2.5-vl-7b", help="shape model searched for its largest depth (GPU)")
    args = parser.parse_args(argv)
    gpus = 0 if args.cpu_only else torch.cuda.device_count()
    if not args.cpu_only and gpus == 0:
        print("FAIL GPUs visible: torch sees no CUDA device (run with --cpu-only on a machine without one)")
        return EXIT_FAILED
    device = "cuda:0" if gpus else "cpu"
    print(f"device {torch.cuda.get_device_name(0) if gpus else 'cpu'} x{max(gpus, 1)}, model {args.model}")
    rows = check_rows()
    measures, checks = kernel_checks(args.model, device, rows)
    if gpus:
        one_rank_nccl()
        checks.append(deepspeed_check(args.model, rows))
        checks.append(shape_check(args.shape, rows))
        with tempfile.TemporaryDirectory(prefix="gpu-acceptance-") as name:
            folder = Path(name)
            suite = small_suite(folder)
            checks.append(trial_check(folder, suite, min(gpus, 2)))
            checks.append(sweep_check(folder, suite))
    print(settings_table(measures))
    for check in checks:
        print(check.line())
    return EXIT_OK if all(check.passed for check in checks) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
