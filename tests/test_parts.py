"""Named parts select exactly the expected parameters of the real Qwen2.5-VL and LLaVA classes."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest

from recipes.models.families import LLAVA, QWEN2_5_VL
from recipes.parts import UnknownPartError, resolve_parts, split_parts, summarize_parts
from tests.tiny_models import tiny_llava, tiny_qwen

# Parameter names written out from the architectures (transformers 5.x), independent of the code under test.
QWEN_VISION_BLOCK = [
    "norm1.weight",
    "norm2.weight",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "mlp.gate_proj.weight",
    "mlp.gate_proj.bias",
    "mlp.up_proj.weight",
    "mlp.up_proj.bias",
    "mlp.down_proj.weight",
    "mlp.down_proj.bias",
]
QWEN_ATTN = [
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
]
LLAMA_ATTN = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
]
GATE_UP = ["mlp.gate_proj.weight", "mlp.up_proj.weight"]
DECODER_OTHER = ["mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight"]
CLIP_LAYER = [
    f"{module}.{kind}"
    for module in (
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.q_proj",
        "self_attn.out_proj",
        "layer_norm1",
        "mlp.fc1",
        "mlp.fc2",
        "layer_norm2",
    )
    for kind in ("weight", "bias")
]


def layers(prefix: str, count: int, names: list[str], start: int = 0) -> set[str]:
    return {f"{prefix}.{i}.{name}" for i in range(start, count) for name in names}


QWEN_LLM_LAYERS = "model.language_model.layers"
QWEN_EXPECTED = {
    "vision": {"model.visual.patch_embed.proj.weight"} | layers("model.visual.blocks", 3, QWEN_VISION_BLOCK),
    "projector": {
        "model.visual.merger.ln_q.weight",
        "model.visual.merger.mlp.0.weight",
        "model.visual.merger.mlp.0.bias",
        "model.visual.merger.mlp.2.weight",
        "model.visual.merger.mlp.2.bias",
    },
    "llm": {"model.language_model.embed_tokens.weight", "model.language_model.norm.weight", "lm_head.weight"}
    | layers(QWEN_LLM_LAYERS, 2, QWEN_ATTN + GATE_UP + DECODER_OTHER),
    "llm.attn": layers(QWEN_LLM_LAYERS, 2, QWEN_ATTN),
    "llm.mlp_gate_up": layers(QWEN_LLM_LAYERS, 2, GATE_UP),
    "lm_head": {"lm_head.weight"},
    "vision.last1": layers("model.visual.blocks", 3, QWEN_VISION_BLOCK, start=2),
    "vision.last2": layers("model.visual.blocks", 3, QWEN_VISION_BLOCK, start=1),
}

LLAVA_LLM_LAYERS = "model.language_model.layers"
LLAVA_EXPECTED = {
    "vision": {
        "model.vision_tower.embeddings.class_embedding",
        "model.vision_tower.embeddings.patch_embedding.weight",
        "model.vision_tower.embeddings.position_embedding.weight",
        "model.vision_tower.pre_layrnorm.weight",
        "model.vision_tower.pre_layrnorm.bias",
        "model.vision_tower.post_layernorm.weight",
        "model.vision_tower.post_layernorm.bias",
    }
    | layers("model.vision_tower.encoder.layers", 3, CLIP_LAYER),
    "projector": {f"model.multi_modal_projector.linear_{i}.{kind}" for i in (1, 2) for kind in ("weight", "bias")},
    "llm": {"model.language_model.embed_tokens.weight", "model.language_model.norm.weight", "lm_head.weight"}
    | layers(LLAVA_LLM_LAYERS, 2, LLAMA_ATTN + GATE_UP + DECODER_OTHER),
    "llm.attn": layers(LLAVA_LLM_LAYERS, 2, LLAMA_ATTN),
    "llm.mlp_gate_up": layers(LLAVA_LLM_LAYERS, 2, GATE_UP),
    "lm_head": {"lm_head.weight"},
    "vision.last1": layers("model.vision_tower.encoder.layers", 3, CLIP_LAYER, start=2),
    "vision.last3": layers("model.vision_tower.encoder.layers", 3, CLIP_LAYER),
}

MODELS = {"qwen2_5_vl": (lambda: tiny_qwen()[0], QWEN2_5_VL), "llava": (tiny_llava, LLAVA)}
EXPECTED = {"qwen2_5_vl": QWEN_EXPECTED, "llava": LLAVA_EXPECTED}


@functools.cache
def built(key: str):
    build, family = MODELS[key]
    return key, build(), family


@pytest.fixture(params=sorted(MODELS))
def family_model(request):
    return built(request.param)


@pytest.mark.parametrize(("key", "part"), [(key, part) for key, table in EXPECTED.items() for part in table])
def test_part_selects_exactly_the_expected_parameters(key, part):
    _, model, family = built(key)
    assert set(resolve_parts(model, family, part)) == EXPECTED[key][part]


def test_parts_cover_the_model_exactly_once(family_model):
    _, model, family = family_model
    names = [name for name, _ in model.named_parameters()]
    pieces = [resolve_parts(model, family, part) for part in ("vision", "projector", "llm")]
    assert sorted(sum(pieces, [])) == sorted(names)


@pytest.mark.parametrize(
    ("combination", "pieces"),
    [
        ("llm+projector", ["llm", "projector"]),
        ("llm.attn+llm.mlp_gate_up", ["llm.attn", "llm.mlp_gate_up"]),
        ("vision.last1+projector", ["vision.last1", "projector"]),
    ],
)
def test_plus_combines_parts(family_model, combination, pieces):
    _, model, family = family_model
    union = set().union(*(resolve_parts(model, family, piece) for piece in pieces))
    assert set(resolve_parts(model, family, combination)) == union


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (
            "llm.mlp",
            "unknown part 'llm.mlp'; valid parts: vision, projector, llm, llm.attn, llm.mlp_gate_up, lm_head, vision.last<N>",
        ),
        ("llm+", "parts 'llm+' is empty or has an empty piece around '+'"),
        ("", "parts '' is empty or has an empty piece around '+'"),
        ("vision.last9", "part 'vision.last9': this model's vision encoder has 3 blocks, use vision.last1..3"),
        ("vision.last0", "part 'vision.last0': this model's vision encoder has 3 blocks, use vision.last1..3"),
    ],
)
def test_bad_part_names_fail_with_the_valid_ones(family_model, parts, message):
    _, model, family = family_model
    with pytest.raises(UnknownPartError) as error:
        resolve_parts(model, family, parts)
    assert str(error.value).startswith(message)


def test_part_names_are_checked_without_a_model():
    assert split_parts("llm + projector") == ["llm", "projector"]
    with pytest.raises(UnknownPartError, match="unknown part 'visoin'"):
        split_parts("llm+visoin")


def test_tied_lm_head_selects_the_shared_embedding():
    model, _ = tiny_qwen(tie_embeddings=True)
    assert resolve_parts(model, QWEN2_5_VL, "lm_head") == ["model.language_model.embed_tokens.weight"]


def test_summary_counts_and_shares():
    model, _ = tiny_qwen()
    total = sum(p.numel() for p in model.parameters())
    (row,) = summarize_parts(model, QWEN2_5_VL, ["lm_head"])
    assert row.parameters == model.lm_head.weight.numel()
    assert row.share == pytest.approx(row.parameters / total)
    assert row.first == row.last == "lm_head.weight"


def test_parts_command_prints_the_table():
    result = subprocess.run(
        [sys.executable, "-m", "recipes.parts", "toy-qwen2.5-vl-init", "--parts", "llm.attn", "--parts", "projector"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:3] == ["part", "parameters", "%"]
    attn = next(line for line in lines if line.startswith("llm.attn "))
    assert "model.language_model.layers.0.self_attn.q_proj.weight" in attn
    assert "model.language_model.layers.3.self_attn.o_proj.weight" in attn


def test_parts_command_rejects_unknown_parts():
    result = subprocess.run(
        [sys.executable, "-m", "recipes.parts", "toy-qwen2.5-vl-init", "--parts", "decoder"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "unknown part 'decoder'; valid parts:" in result.stderr
