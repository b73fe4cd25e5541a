"""Trial checkpoints hold what trains: trainable tensors and their optimizer state, plus the base's identity.

DeepSpeed engines on one gloo rank in this process (no Ray): saving with ``save_trainable_state``,
resuming from it on a freshly loaded base, and refusing a checkpoint of another base.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import deepspeed
import pytest
import torch
from safetensors.torch import load_file, save_file

from jobs.checkpoints import (
    BASE_KEY,
    CHECKPOINT_TAG,
    TRAINER_STATE,
    BaseMismatchError,
    base_record,
    check_base,
    load_trainable_state,
    load_trial_checkpoint,
    save_trainable_state,
    trained_state_dict,
    weights_only_loading,
)
from jobs.finetune.config import TrialConfig
from jobs.finetune.loss import supervised_loss
from recipes.data.collate import RecordCollator
from recipes.methods import MethodConfig, apply_method
from recipes.models import load_model, resolve_model_dir
from recipes.models.families import family_for_model_type
from recipes.models.registry import weights_fingerprint
from tests.conftest import one_rank_process_group
from tests.tiny_models import mcq_row, tiny_qwen

BASE = "toy-qwen2.5-vl-init"
"""The base of the resume tests (the toy Qwen2.5-VL, untrained)."""


@pytest.fixture(scope="module", autouse=True)
def one_rank_group():
    """A one-rank gloo process group for DeepSpeed, torn down after the module."""
    with one_rank_process_group():
        yield


def engine_for(model: torch.nn.Module, family, parts: str, method: str, stage: int):
    """A DeepSpeed engine (AdamW, constant schedule) of ``method`` on ``parts`` of ``model``."""
    torch.manual_seed(0)
    model, _ = apply_method(model, family, parts, MethodConfig(method, lora_r=4, lora_alpha=8))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    config = {"train_batch_size": 4, "zero_optimization": {"stage": stage}, "steps_per_print": 10**9}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    return engine


def saved_tensors(obj) -> list[torch.Tensor]:
    """Every tensor inside a loaded checkpoint file (nested dicts and lists)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in saved_tensors(value)]
    if isinstance(obj, (list, tuple)):
        return [t for value in obj for t in saved_tensors(value)]
    return []


@pytest.mark.parametrize("stage", [0, 2])
def test_a_lora_checkpoint_of_a_tied_model_holds_no_frozen_tensor(tmp_path, stage):
    """The frozen output head tied to the input embedding (as in Qwen2.5-VL-3B) is saved under neither name.

    (ZeRO-3 is left out: its engine patches ``nn.Linear`` for the whole process; there the module
    state holds empty placeholders, and the same filter drops their keys.)"""
    model, _ = tiny_qwen(tie_embeddings=True)
    family = family_for_model_type(model.config.model_type)
    engine = engine_for(model, family, "llm", "lora", stage)
    named = dict(engine.module.named_parameters(remove_duplicate=False))
    frozen = {name for name, param in named.items() if not param.requires_grad}
    assert {"base_model.model.lm_head.weight", "base_model.model.model.language_model.embed_tokens.weight"} <= frozen
    save_trainable_state(engine, tmp_path)

    files = sorted((tmp_path / CHECKPOINT_TAG).glob("*.pt"))
    assert files
    with weights_only_loading():
        contents = [torch.load(path, map_location="cpu") for path in files]
    module_keys = {key for content in contents for key in (content.get("module") or {})}
    assert module_keys and not module_keys & frozen, sorted(module_keys & frozen)
    frozen_shapes = {tuple(named[name].shape) for name in frozen} - {
        tuple(p.shape) for p in named.values() if p.requires_grad
    }
    leaked = [tuple(t.shape) for c in contents for t in saved_tensors(c) if tuple(t.shape) in frozen_shapes]
    assert not leaked, f"frozen-shaped tensors in the checkpoint: {leaked[:3]}"
    trainable = sum(p.numel() for p in engine.module.parameters() if p.requires_grad)
    total = sum(t.numel() for c in contents for t in saved_tensors(c))
    assert total <= 4 * trainable + 64  # module copy + fp32 master + two AdamW moments, at most


def batches(processor, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` training batches of 2 MCQ questions with pictures."""
    collate = RecordCollator(processor, with_answers=True)
    return [collate([mcq_row(2 * index + row) for row in range(2)]) for index in range(count)]


def train(engine, steps: list[dict[str, torch.Tensor]]) -> list[float]:
    losses = []
    for batch in steps:
        loss = supervised_loss(engine, batch)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return losses


def trial_settings(tmp_path: Path, parts: str, method: str, stage: int) -> TrialConfig:
    return TrialConfig(
        model=BASE,
        parts=parts,
        method=method,
        lora_r=4,
        lora_alpha=8,
        lr=1e-2,
        steps=4,
        eval_every=2,
        batch_size=4,
        micro_batch_size=4,
        zero_stage=stage,
        storage=str(tmp_path / "storage"),
        tracking_uri="sqlite://",
        experiment="checkpoint-state",
    )


def write_trial_checkpoint(engine, directory: Path, trial: TrialConfig, loaded, step: int) -> None:
    """What ``TrialWorker.save`` writes on one rank."""
    save_trainable_state(engine, directory)
    state = {"step": step, "trial": trial.to_dict(), BASE_KEY: base_record(loaded.name, loaded.path)}
    (directory / TRAINER_STATE).write_text(json.dumps(state))


@pytest.mark.parametrize(("parts", "method", "stage"), [("llm", "lora", 0), ("projector", "full", 2)])
def test_resume_from_trainable_state_matches_an_uninterrupted_run(tmp_path, parts, method, stage):
    """A step, a checkpoint, a fresh base + method loading it, two more steps: the losses and the
    trained tensors of an uninterrupted three-step run, bit for bit; the checkpoint is a small share of the model."""
    loaded = load_model(BASE)
    family, processor = loaded.family, loaded.processor
    data = batches(processor, 3)
    straight = engine_for(loaded.model, family, parts, method, stage)
    straight_losses = train(straight, data)
    straight_state = {n: p.detach().clone() for n, p in straight.module.named_parameters() if p.requires_grad}

    first = engine_for(load_model(BASE).model, family, parts, method, stage)
    losses = train(first, data[:1])
    write_trial_checkpoint(first, tmp_path, trial_settings(tmp_path, parts, method, stage), loaded, step=1)
    del first
    resumed = engine_for(load_model(BASE).model, family, parts, method, stage)  # the base, as a restarted worker
    load_trainable_state(resumed, tmp_path)
    losses += train(resumed, data[1:])
    assert losses == straight_losses
    for name, param in resumed.module.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, straight_state[name]), name

    saved = sum(path.stat().st_size for path in (tmp_path / CHECKPOINT_TAG).iterdir())
    model_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    assert saved < 0.5 * model_bytes, f"checkpoint {saved:,} B of a {model_bytes:,} B model"

    # read back outside training: the base from the registry + the checkpoint's tensors = the trained model
    rebuilt, _, step = load_trial_checkpoint(tmp_path)
    trained = trained_state_dict(tmp_path)
    assert step == 1 and trained
    fresh_base = dict(load_model(BASE).model.named_parameters())
    for name, param in rebuilt.model.named_parameters():
        plain = name.removeprefix("base_model.model.")
        expected = trained[name] if name in trained else fresh_base.get(plain, param)
        assert torch.equal(param.detach(), expected.detach()), name
    first_loss = supervised_loss(rebuilt.model.train(), data[1]).item()
    assert first_loss == pytest.approx(losses[1], rel=1e-5), "the rebuilt model is not base + trained state"


def test_a_checkpoint_of_another_base_is_refused(tmp_path):
    """A base with the same config and file sizes but one other weight (which ``weights_fingerprint``
    cannot tell apart): one clear error from the reader; a checkpoint naming no base is refused too."""
    original = resolve_model_dir(BASE)
    other = tmp_path / "other-base"
    shutil.copytree(original, other)
    tensors = load_file(original / "model.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    assert weights_fingerprint(other) == weights_fingerprint(original)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    trial = trial_settings(tmp_path, "projector", "full", 0)
    state = {"step": 2, "trial": trial.to_dict(), BASE_KEY: base_record(str(other), other)}
    (checkpoint / TRAINER_STATE).write_text(json.dumps(state))
    with pytest.raises(BaseMismatchError, match=r"trained on base '.*other-base' .* other weights .* refusing to mix"):
        load_trial_checkpoint(checkpoint)
    state.pop(BASE_KEY)
    with pytest.raises(BaseMismatchError, match="records no base model"):
        check_base(tmp_path, state, load_model(BASE))
