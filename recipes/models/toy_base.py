"""python -m recipes.models.toy_base

The toy base model: the tiny Qwen2.5-VL pre-trained on the toy world, so that fine-tuning it
on the toy target task can really forget what it knew.

Pre-training runs once on the ``toy-pretrain`` mix (every toy task, the target task weak) and is
cached by a content hash of the model config, the pre-training config and the toy world, under
``$FORGETLESS_CACHE/models/`` (see ``recipes.cache``). The registry names ``toy-qwen2.5-vl``
and ``toy-qwen2.5-vl-init`` resolve here:

    from recipes.models.toy_base import toy_model_dir
    path = toy_model_dir(pretrained=True)   # builds on first use (5-15 minutes on 2 CPU cores)

Running the module builds (or finds) the base and prints where it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from recipes.cache import cached_dir, content_key
from recipes.data.collate import MCQCollator
from recipes.data.prompts import mcq_prompt
from recipes.data.registry import load_dataset, toy_world_dir, toy_world_key
from recipes.data.schema import read_mcq
from recipes.data.toy_world import ToyWorldConfig
from recipes.schedules import lr_multiplier
from recipes.models.toy import ToyModelConfig, build_toy_components, load_toy_processor, save_toy

PRETRAIN_DATASET = "toy-pretrain"
"""The toy world's pre-training mix."""
TOKENIZER_DATASETS = ("toy-pretrain", "toy-general")
"""Datasets whose texts train the toy tokenizer."""


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
            table.column("question").to_pylist(), table.column("options").to_pylist(), table.column("answer").to_pylist()
        ):
            texts.append(mcq_prompt(question, options) + answer)
    return texts


def pretrain(model, processor, config: PretrainConfig, rows: list[dict], log=print) -> list[float]:
    """Pre-train ``model`` in place on ``rows`` (the toy pre-training mix); returns the loss per step."""
    collate = MCQCollator(processor, with_answers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, config.steps, config.warmup_ratio, "cosine")
    )
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(rows), generator=generator).tolist()
    cursor, losses, started = 0, [], time.perf_counter()
    model.train()
    for step in range(config.steps):
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


def toy_model_dir(
    pretrained: bool,
    model_config: ToyModelConfig = ToyModelConfig(),
    pretrain_config: PretrainConfig = PretrainConfig(),
    pretrain_world: ToyWorldConfig | None = None,
) -> Path:
    """Directory of the toy model (random init, or pre-trained on the toy world), built once.

    ``pretrain_world`` is the toy world whose ``toy-pretrain`` mix the base learns (default: the
    world the registered names resolve to; tests use a smaller mix).
    """
    init_key = content_key({"model": model_config.to_dict(), "world": toy_world_key(), "format": 1})
    init_dir = cached_dir("models", f"toy-qwen2.5-vl-init-{init_key}", lambda tmp: _build_init(tmp, model_config))
    if not pretrained:
        return init_dir

    def build(directory: Path) -> None:
        from transformers import Qwen2_5_VLForConditionalGeneration

        log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
        log(f"building the toy base model once (cached under {directory.parent}) ...")
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(init_dir)
        processor = load_toy_processor(init_dir)
        torch.manual_seed(pretrain_config.seed)
        rows = read_mcq(toy_world_dir(pretrain_world) / f"{PRETRAIN_DATASET}.parquet").to_pylist()
        losses = pretrain(model, processor, pretrain_config, rows, log=log)
        save_toy(model, processor, directory)
        report = {"pretrain": asdict(pretrain_config), "final_loss": sum(losses[-100:]) / len(losses[-100:])}
        (directory / "pretrain_report.json").write_text(json.dumps(report, indent=2))

    identity = {"init": init_key, "pretrain": asdict(pretrain_config)}
    if pretrain_world is not None:
        identity["world"] = toy_world_key(pretrain_world)
    key = content_key(identity)
    return cached_dir("models", f"toy-qwen2.5-vl-{key}", build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.models.toy_base", description=__doc__.split("\n\n")[1])
    parser.parse_args(argv)
    path = toy_model_dir(pretrained=True)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
