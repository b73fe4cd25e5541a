"""python -m recipes.toyworld pretrain [--ship]

The toy base model: the tiny Qwen2.5-VL pre-trained on the toy world, so that fine-tuning it
on the toy target task can really forget what it knew.

The project ships the pre-trained base (``recipes/toyworld/shipped/toy-qwen2.5-vl``, about 5 MB,
with a manifest of what it was built from and each file's sha256), so every machine starts from
the same weights and the first sweep does not wait for pre-training. The registry names
``toy-qwen2.5-vl`` and ``toy-qwen2.5-vl-init`` resolve here, into ``$FORGETLESS_CACHE/models/``
(see ``recipes.common.cache``):

    from recipes.toyworld.base import toy_model_dir
    path = toy_model_dir(pretrained=True)   # the shipped base, copied once into the cache

When the toy world, the prompts, the model or the pre-training settings change, the shipped
base no longer matches what it was built from (``pretraining_inputs_key``) and the base is
pre-trained here on first use (5-15 minutes on 2 CPU cores, 0.2-0.6 s per step);
``python -m recipes.toyworld pretrain --ship`` rebuilds the shipped copy and its manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from recipes.common.cache import cached_dir, content_key
from recipes.common.progress_bar import progress_bar
from recipes.data.collate import RecordCollator
from recipes.data.prompts import MCQ_INSTRUCTION_TEMPLATE, mcq_prompt
from recipes.data.readers import read_records
from recipes.data.registry import load_dataset
from recipes.schedules import lr_multiplier
from recipes.toyworld.datasets import toy_world_dir, toy_world_key
from recipes.toyworld.model import ToyModelConfig, build_toy_components, load_toy_processor, save_toy
from recipes.toyworld.world import ToyWorldConfig

PRETRAIN_DATASET = "toy-pretrain"
"""The toy world's pre-training mix."""
TOKENIZER_DATASETS = ("toy-pretrain", "toy-general")
"""Datasets whose texts train the toy tokenizer."""
SHIPPED_BASE_DIR = Path(__file__).with_name("shipped") / "toy-qwen2.5-vl"
"""The pre-trained toy base shipped with the project (written by ``python -m recipes.toyworld pretrain --ship``)."""
MANIFEST_NAME = "manifest.json"
"""The shipped base's manifest: what it was built from and each file's sha256."""
PRETRAIN_REPORT_NAME = "pretrain_report.json"
"""Pre-training settings and final loss, written next to the weights."""


@dataclass(frozen=True)
class PretrainConfig:
    """How the toy base is pre-trained (single process, plain PyTorch).

    The defaults take 5-15 minutes on 2 CPU cores (0.2-0.6 s per step) and give a base that
    answers the OOD toy tasks well and the target task only in part (the demo's starting point).
    """

    steps: int = 1500
    """Optimizer steps (3 epochs of toy-pretrain at batch 32)."""
    batch_size: int = 32
    """Questions per step."""
    lr: float = 3e-4
    """Peak AdamW learning rate (from ~6e-4 up the toy model stays at chance on the mixed tasks)."""
    warmup_ratio: float = 0.05
    """Share of steps with linear warm-up before cosine decay."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seed of the data order."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("PretrainConfig.steps and batch_size must be >= 1")
        if self.lr <= 0 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("PretrainConfig.lr must be > 0 and warmup_ratio in [0, 1)")


def _tokenizer_texts() -> list[str]:
    texts = []
    for name in TOKENIZER_DATASETS:
        table = load_dataset(name)
        for question, options, answer in zip(
            table.column("question").to_pylist(),
            table.column("options").to_pylist(),
            table.column("answer").to_pylist(),
        ):
            texts.append(mcq_prompt(question, options) + answer)
    return texts


def pretrain(model, processor, config: PretrainConfig, rows: list[dict], log=print) -> list[float]:
    """Pre-train ``model`` in place on ``rows`` (the toy pre-training mix); returns the loss per step.

    On a terminal a progress bar shows the steps, their rate, the time left and the recent loss;
    elsewhere ``log`` gets a line every 100 steps."""
    collate = RecordCollator(processor, with_answers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, config.steps, config.warmup_ratio, "cosine")
    )
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(rows), generator=generator).tolist()
    cursor, losses, started = 0, [], time.perf_counter()
    model.train()
    bar = progress_bar(range(config.steps), desc="toy base pre-training", unit="step")
    for step in bar:
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(len(rows), generator=generator).tolist(), 0
        batch = collate([rows[i] for i in order[cursor : cursor + config.batch_size]])
        cursor += config.batch_size
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            recent = sum(losses[-100:]) / len(losses[-100:])
            if not bar.disable:  # the bar has the rate and the time left
                bar.set_postfix_str(f"loss {recent:.4f}")
                continue
            elapsed = time.perf_counter() - started
            left = elapsed / (step + 1) * (config.steps - step - 1)
            log(
                f"toy base pre-training: step {step + 1}/{config.steps}  loss {recent:.4f}  "
                f"{elapsed:.0f}s elapsed, ~{left / 60:.1f} min left"
            )
    model.eval()
    return losses


def _build_init(directory: Path, model_config: ToyModelConfig) -> None:
    model, processor = build_toy_components(model_config, _tokenizer_texts())
    save_toy(model, processor, directory)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pretraining_inputs_key(world: ToyWorldConfig | None = None) -> str:
    """Content hash of everything the base learns from: the tokenizer's texts (prompts included) and
    every row of the pre-training mix (images as bytes). Equal keys mean an equal toy base."""
    digest = hashlib.sha256()
    for text in _tokenizer_texts():
        digest.update(text.encode() + b"\0")
    table = read_records(toy_world_dir(world) / f"{PRETRAIN_DATASET}.parquet")
    for row in table.select(["id", "image", "question", "options", "answer"]).to_pylist():
        digest.update(json.dumps([row["id"], row["question"], row["options"], row["answer"]]).encode())
        digest.update(row["image"] or b"")
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shipped_identity(
    model_config: ToyModelConfig, pretrain_config: PretrainConfig, world: ToyWorldConfig | None
) -> dict:
    return {
        "model": model_config.to_dict(),
        "pretrain": asdict(pretrain_config),
        "inputs": pretraining_inputs_key(world),
    }


def shipped_base(identity: dict) -> Path | None:
    """The shipped base's folder if it was built from ``identity`` (checked file by file), else None."""
    manifest_path = SHIPPED_BASE_DIR / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("identity") != identity:
        return None
    for name, expected in manifest["files"].items():
        actual = _file_sha256(SHIPPED_BASE_DIR / name)
        if actual != expected:
            raise RuntimeError(
                f"{SHIPPED_BASE_DIR / name}: sha256 {actual[:12]}... is not the manifest's {expected[:12]}...; "
                "restore the file from the repository or rebuild it with `python -m recipes.toyworld pretrain --ship`"
            )
    return SHIPPED_BASE_DIR


def _pretrain_into(
    directory: Path, init_dir: Path, pretrain_config: PretrainConfig, world: ToyWorldConfig | None
) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    _log(f"pre-training the toy base ({pretrain_config.steps} steps, once; cached under {directory.parent}) ...")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(init_dir)
    processor = load_toy_processor(init_dir)
    torch.manual_seed(pretrain_config.seed)
    rows = read_records(toy_world_dir(world) / f"{PRETRAIN_DATASET}.parquet").to_pylist()
    losses = pretrain(model, processor, pretrain_config, rows, log=_log)
    save_toy(model, processor, directory)
    report = {"pretrain": asdict(pretrain_config), "final_loss": sum(losses[-100:]) / len(losses[-100:])}
    (directory / PRETRAIN_REPORT_NAME).write_text(json.dumps(report, indent=2))


def _init_dir(model_config: ToyModelConfig) -> Path:
    init_key = content_key(
        {"model": model_config.to_dict(), "world": toy_world_key(), "prompt": MCQ_INSTRUCTION_TEMPLATE, "format": 2}
    )
    return cached_dir("models", f"toy-qwen2.5-vl-init-{init_key}", lambda tmp: _build_init(tmp, model_config))


def toy_model_dir(
    pretrained: bool,
    model_config: ToyModelConfig = ToyModelConfig(),
    pretrain_config: PretrainConfig = PretrainConfig(),
    pretrain_world: ToyWorldConfig | None = None,
) -> Path:
    """Directory of the toy model (random init, or pre-trained on the toy world), built once.

    The pre-trained base is copied from the shipped one when that was built from the same
    inputs (``shipped_base``), so every machine gets the same weights; otherwise it is pre-trained
    here. ``pretrain_world`` is the toy world whose ``toy-pretrain`` mix the base learns (default:
    the world the registered names resolve to; tests use a smaller mix).
    """
    init_dir = _init_dir(model_config)
    if not pretrained:
        return init_dir

    def build(directory: Path) -> None:
        shipped = shipped_base(_shipped_identity(model_config, pretrain_config, pretrain_world))
        if shipped is None:
            _pretrain_into(directory, init_dir, pretrain_config, pretrain_world)
            return
        _log(f"using the shipped toy base ({shipped})")
        for path in shipped.iterdir():
            shutil.copy2(path, directory / path.name)

    identity = {"init": init_dir.name, "pretrain": asdict(pretrain_config)}
    if pretrain_world is not None:
        identity["world"] = toy_world_key(pretrain_world)
    return cached_dir("models", f"toy-qwen2.5-vl-{content_key(identity)}", build)


def ship_base(log=_log) -> Path:
    """Pre-train the default toy base from scratch and write it, with its manifest, to ``SHIPPED_BASE_DIR``."""
    model_config, pretrain_config = ToyModelConfig(), PretrainConfig()
    init_dir = _init_dir(model_config)
    with tempfile.TemporaryDirectory() as scratch:
        built = Path(scratch) / "base"
        built.mkdir()
        _pretrain_into(built, init_dir, pretrain_config, None)
        if SHIPPED_BASE_DIR.exists():
            shutil.rmtree(SHIPPED_BASE_DIR)
        SHIPPED_BASE_DIR.mkdir(parents=True)
        for path in sorted(built.iterdir()):
            shutil.copy2(path, SHIPPED_BASE_DIR / path.name)
    files = {path.name: _file_sha256(path) for path in sorted(SHIPPED_BASE_DIR.iterdir())}
    manifest = {
        "identity": _shipped_identity(model_config, pretrain_config, None),
        "files": files,
        "command": "python -m recipes.toyworld pretrain --ship",
    }
    (SHIPPED_BASE_DIR / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"shipped toy base written to {SHIPPED_BASE_DIR}")
    return SHIPPED_BASE_DIR
