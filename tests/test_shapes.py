"""Shape models: the real models' shipped configurations at a chosen depth, with random seeded weights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from jobs.finetune.loss import supervised_loss
from jobs.input_checks import model_problems, parts_problems
from recipes.data.collate import RecordCollator
from recipes.data.registry import load_dataset
from recipes.methods import MethodConfig, apply_method
from recipes.models.catalog import HUB_MODELS, ModelNotFoundError, model_family, resolve_model_dir
from recipes.models.registry import load_model
from recipes.models.shapes import (
    SHAPE_CONFIG_DIR,
    SHAPE_MODELS,
    ShapeSpec,
    build_shape_model,
    build_shape_tokenizer,
    parse_shape_name,
    shape_config,
)
from recipes.parts import main as parts_main

PUBLISHED_TOTALS = {"qwen2.5-vl-3b": "3.75", "qwen2.5-vl-7b": "8.29", "llava-1.5-7b": "7.06"}
"""Parameter counts of the real checkpoints in billions, as published (Hub model cards)."""


def test_every_real_model_has_a_shipped_configuration():
    assert set(SHAPE_MODELS) == set(HUB_MODELS)
    for name in SHAPE_MODELS:
        assert {"config.json", "preprocessor_config.json", "chat_template.json"} <= {
            path.name for path in (SHAPE_CONFIG_DIR / name).iterdir()
        }


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTALS))
def test_full_depth_shape_has_the_published_parameter_count(name):
    model = build_shape_model(name, device="meta")
    total = sum(param.numel() for param in model.parameters())
    assert f"{total / 1e9:.2f}" == PUBLISHED_TOTALS[name]


@pytest.mark.parametrize(
    "name, spec",
    [
        ("qwen2.5-vl-7b@layers=2", ShapeSpec("qwen2.5-vl-7b", 2, 2, 0)),
        ("qwen2.5-vl-3b@layers=2,vision_layers=5", ShapeSpec("qwen2.5-vl-3b", 2, 5, 0)),
        ("qwen2.5-vl-3b@vision_layers=3,seed=7", ShapeSpec("qwen2.5-vl-3b", 36, 3, 7)),
        ("llava-1.5-7b@layers=30", ShapeSpec("llava-1.5-7b", 30, 24, 0)),
        ("qwen2.5-vl-3b", None),
        ("/models/run@2", None),
        ("Qwen/Qwen2.5-VL-3B-Instruct", None),
    ],
)
def test_shape_spellings(name, spec):
    assert parse_shape_name(name) == spec


@pytest.mark.parametrize(
    "name, message",
    [
        ("qwen2.5-vl-9b@layers=2", "'qwen2.5-vl-9b' has no shipped configuration"),
        ("qwen2.5-vl-3b@layers=0", "layers=0 is outside 1..36"),
        ("qwen2.5-vl-7b@vision_layers=33", "vision_layers=33 is outside 1..32"),
        ("qwen2.5-vl-3b@layers=two", "layers='two' is not a whole number"),
        ("qwen2.5-vl-3b@depth=2", "'depth=2' is not one of layers=N, vision_layers=N, seed=N"),
        ("qwen2.5-vl-3b@layers=2,layers=3", "layers is given twice"),
    ],
)
def test_a_bad_shape_spelling_names_the_bad_part(name, message):
    with pytest.raises(ValueError, match=message):
        parse_shape_name(name)
    (problem,) = model_problems(name, check_paths=True)
    assert problem.startswith(f"model: {name!r}: " + message)
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model_dir(name)


def test_reduced_qwen_keeps_window_and_full_attention_blocks():
    config = shape_config("qwen2.5-vl-3b@layers=2,vision_layers=10")
    assert config.text_config.num_hidden_layers == 2 and len(config.text_config.layer_types) == 2
    assert config.vision_config.depth == 10 and config.vision_config.fullatt_block_indexes == [7, 9]
    assert shape_config("qwen2.5-vl-3b@layers=2").vision_config.fullatt_block_indexes == [1]
    assert config.tie_word_embeddings and config.text_config.vocab_size == 151936
    full = shape_config("qwen2.5-vl-7b")
    assert full.vision_config.fullatt_block_indexes == [7, 15, 23, 31] and full.text_config.num_hidden_layers == 28


def test_grid_checks_take_shape_names_without_loading_torch():
    script = textwrap.dedent(
        """
        import sys
        from jobs.input_checks import model_problems, parts_problems
        from recipes.models.catalog import model_family
        assert model_problems("qwen2.5-vl-3b@layers=2", check_paths=True) == []
        assert model_family("llava-1.5-7b@layers=2").name == "llava"
        assert parts_problems("parts", "vision.last3", "qwen2.5-vl-3b@layers=2", check_paths=False)
        print(sorted({"torch", "transformers"} & set(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr
    assert model_family("qwen2.5-vl-7b@layers=1").name == "qwen2_5_vl"
    assert parts_problems("parts", "vision.last2", "qwen2.5-vl-3b@layers=2", check_paths=False) == []


@pytest.mark.parametrize(
    "base, special",
    [
        ("qwen2.5-vl-3b", {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                           "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655,
                           "<|video_pad|>": 151656, "<|file_sep|>": 151664}),
        ("llava-1.5-7b", {"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<pad>": 32001}),
    ],
)  # fmt: skip
def test_shape_tokenizer_puts_special_tokens_at_the_real_ids(base, special):
    tokenizer = build_shape_tokenizer(base)
    config = json.loads((SHAPE_CONFIG_DIR / base / "config.json").read_text())
    assert len(tokenizer) <= config["text_config"]["vocab_size"]
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in special} == special
    image_id = config.get("image_token_id", config.get("image_token_index"))
    assert tokenizer.convert_tokens_to_ids(tokenizer.image_token) == image_id
    row = load_dataset("toy-imagenet-vqa-val").slice(0, 1).to_pylist()[0]
    text = row["question"] + " " + " ".join(row["options"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 2, "toy-world words are single tokens of the toy world's BPE"


def test_parts_command_counts_a_shape_without_weights(capsys):
    assert parts_main(["qwen2.5-vl-7b@layers=2", "--parts", "llm.attn"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("qwen2.5-vl-7b@layers=2 (qwen2_5_vl, 1,641,598,064 parameters; ")
    assert "meta device" in header


@pytest.mark.slow
def test_shape_model_directory_loads_and_trains_a_lora_step_on_a_toy_batch():
    """The 3B shape at 2 layers (543M parameters, built once into the cache): load_model, LoRA, one step."""
    loaded = load_model("qwen2.5-vl-3b@layers=2")
    saved = json.loads((loaded.path / "config.json").read_text())
    assert saved["text_config"]["num_hidden_layers"] == 2 and saved["vision_config"]["depth"] == 2
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert loaded.family.name == "qwen2_5_vl" and loaded.processor.image_token_id == 151655
    model, _ = apply_method(loaded.model, loaded.family, "llm", MethodConfig(name="lora", lora_r=4, lora_alpha=8))
    rows = load_dataset("toy-imagenet-vqa-val").slice(0, 2).to_pylist()
    batch = RecordCollator(loaded.processor, with_answers=True)(rows)
    assert (batch["input_ids"] == 151655).sum() > 0, "the toy images reach the model as image tokens"
    loss = supervised_loss(model, batch)
    loss.backward()
    grads = [param.grad for name, param in model.named_parameters() if param.requires_grad]
    assert torch.isfinite(loss) and grads and all(grad is not None for grad in grads)
    assert any(grad.abs().sum() > 0 for grad in grads)
