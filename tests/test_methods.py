"""full trains only the selected parts; lora trains only adapters and merges back exactly."""

from __future__ import annotations

import pytest
import torch

from recipes.data.collate import RecordCollator
from recipes.methods import MethodConfig, apply_method, lora_target_modules, merge_lora
from recipes.models.families import LLAVA, QWEN2_5_VL
from recipes.parts import resolve_parts
from tests.tiny_models import llava_batch, mcq_row, tiny_llava, tiny_qwen


def qwen_case():
    model, processor = tiny_qwen()
    batch = RecordCollator(processor, with_answers=True)([mcq_row(0), mcq_row(1, answer="C")])
    return model, QWEN2_5_VL, batch


def llava_case():
    model = tiny_llava()
    return model, LLAVA, llava_batch(model)


CASES = {"qwen2_5_vl": qwen_case, "llava": llava_case}
PARTS = ["llm", "vision", "projector", "llm.attn", "llm.mlp_gate_up", "lm_head", "vision.last1", "llm.attn+projector"]


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def train_steps(model, batch, steps: int = 1, lr: float = 1e-2) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()


def changed(before: dict[str, torch.Tensor], model) -> set[str]:
    return {name for name, param in model.named_parameters() if not torch.equal(before[name], param.detach())}


@pytest.mark.parametrize("family_key", sorted(CASES))
@pytest.mark.parametrize("parts", PARTS)
def test_full_changes_only_the_selected_parameters(family_key, parts):
    model, family, batch = CASES[family_key]()
    selected = set(resolve_parts(model, family, parts))
    model, report = apply_method(model, family, parts, MethodConfig("full"))
    assert report.trainable == sum(p.numel() for n, p in model.named_parameters() if n in selected)
    assert report.total == sum(p.numel() for p in model.parameters())
    before = snapshot(model)
    train_steps(model, batch)
    with_gradient = {name for name, param in model.named_parameters() if param.grad is not None}
    assert with_gradient <= selected
    assert changed(before, model) == with_gradient  # frozen tensors are bit-identical
    assert len(with_gradient) >= 0.8 * len(selected)


@pytest.mark.parametrize("family_key", sorted(CASES))
@pytest.mark.parametrize("parts", ["llm", "vision", "projector", "llm.attn", "llm.mlp_gate_up"])
def test_lora_changes_only_adapter_weights(family_key, parts):
    model, family, batch = CASES[family_key]()
    targets = lora_target_modules(model, family, parts)
    model, report = apply_method(model, family, parts, MethodConfig("lora", lora_r=4, lora_alpha=8))
    adapters = {name for name, _ in model.named_parameters() if ".lora_" in name}
    assert adapters and {name for name, p in model.named_parameters() if p.requires_grad} == adapters
    assert report.trainable == sum(p.numel() for n, p in model.named_parameters() if n in adapters)
    wrapped = {name.split(".lora_")[0].removeprefix("base_model.model.") for name in adapters}
    assert wrapped == set(targets)
    before = snapshot(model)
    train_steps(model, batch, steps=2)
    moved = changed(before, model)
    assert moved and moved <= adapters


@pytest.mark.parametrize(
    ("family_key", "parts", "expected"),
    [
        ("qwen2_5_vl", "llm.attn", {"q_proj", "k_proj", "v_proj", "o_proj"}),
        ("qwen2_5_vl", "llm.mlp_gate_up", {"gate_proj", "up_proj"}),
        ("qwen2_5_vl", "llm", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
        ("qwen2_5_vl", "lm_head", {"lm_head"}),
        ("qwen2_5_vl", "projector", {"0", "2"}),
        ("llava", "projector", {"linear_1", "linear_2"}),
        ("llava", "vision", {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}),
    ],
)
def test_lora_targets_the_linear_layers_of_the_parts(family_key, parts, expected):
    model, family, _ = CASES[family_key]()
    assert {name.rsplit(".", 1)[-1] for name in lora_target_modules(model, family, parts)} == expected


@pytest.mark.parametrize("family_key", sorted(CASES))
def test_lora_merge_gives_the_same_logits(family_key):
    model, family, batch = CASES[family_key]()
    model, _ = apply_method(model, family, "llm+projector", MethodConfig("lora", lora_r=4, lora_alpha=8))
    train_steps(model, batch, steps=3)
    model.eval()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        adapted = model(**inputs).logits
        merged_model = merge_lora(model)
        merged = merged_model(**inputs).logits
    assert not any(".lora_" in name for name, _ in merged_model.named_parameters())
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "qlora"}, "method 'qlora' is not one of full, lora"),
        ({"name": "lora", "lora_r": 0}, "lora.r must be >= 1, got 0"),
        ({"name": "lora", "lora_alpha": 0}, "lora.alpha must be > 0, got 0"),
        ({"name": "lora", "lora_dropout": 1.0}, "lora.dropout must be in [0, 1), got 1.0"),
    ],
)
def test_method_config_validation(kwargs, message):
    with pytest.raises(ValueError) as error:
        MethodConfig(**kwargs)
    assert str(error.value) == message
