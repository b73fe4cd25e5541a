"""Image features kept between evaluations of a frozen image path (``jobs.evaluate.image_features``).

Table-driven: which recipes leave the image path frozen (the only ones that get the memo); on
the shipped toy base over two toy datasets and on a tiny Qwen2.5-VL with an MCQ and a free-form
row, in both evaluation modes, an evaluation that reads the kept features answers exactly as one
that runs the vision tower, and runs the vision tower not once; on a tiny LLaVA, the model's
output from kept features equals its output from pixels.
"""

from __future__ import annotations

import pytest
import torch

from jobs.evaluate.image_features import FrozenImageFeatures, image_path_frozen
from jobs.evaluate.scoring import BatchScorer
from jobs.evaluate.suite_eval import DatasetEvaluator
from recipes.data.collate import RecordCollator
from recipes.methods import MethodConfig, apply_method
from recipes.models import load_model
from recipes.models.families import LLAVA, QWEN2_5_VL
from recipes.toyworld.base import SHIPPED_BASE_DIR
from tests.test_freeform import freeform_record
from tests.tiny_models import llava_batch, mcq_row, tiny_llava, tiny_qwen

FAMILIES = {"qwen2.5-vl": (lambda: tiny_qwen()[0], QWEN2_5_VL), "llava": (tiny_llava, LLAVA)}

FROZEN_IMAGE_PATH = [
    ("qwen2.5-vl", "llm", "full", True),
    ("qwen2.5-vl", "llm.attn", "full", True),
    ("qwen2.5-vl", "llm.mlp_gate_up", "full", True),
    ("qwen2.5-vl", "lm_head", "full", True),
    ("qwen2.5-vl", "llm", "lora", True),
    ("qwen2.5-vl", "vision", "full", False),
    ("qwen2.5-vl", "vision.last1", "full", False),
    ("qwen2.5-vl", "projector", "full", False),
    ("qwen2.5-vl", "llm+projector", "full", False),
    ("qwen2.5-vl", "vision", "lora", False),
    ("llava", "llm", "full", True),
    ("llava", "llm", "lora", True),
    ("llava", "vision", "full", False),
    ("llava", "projector", "full", False),
]


@pytest.mark.parametrize("family_name,parts,method,frozen", FROZEN_IMAGE_PATH)
def test_only_recipes_that_train_no_image_module_keep_features(family_name, parts, method, frozen):
    build, family = FAMILIES[family_name]
    model = build()
    apply_method(model, family, parts, MethodConfig(method, lora_r=4, lora_alpha=4))
    assert image_path_frozen(model, family) is frozen
    assert (FrozenImageFeatures.for_model(model, family) is not None) is frozen


def vision_forwards(module: torch.nn.Module) -> list[int]:
    """A list that grows by one at every forward of ``module``."""
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.fixture(scope="module")
def toy_base():
    return load_model(str(SHIPPED_BASE_DIR))


@pytest.mark.parametrize("mode", ["logits", "generate"])
def test_an_evaluation_from_kept_features_answers_like_one_from_pixels(toy_base, mode):
    evaluator = DatasetEvaluator(["toy-styles", "toy-text-qa"], toy_base.processor, mode=mode, batch_size=32)
    model = toy_base.model
    expected = evaluator.evaluate(model).predictions.to_pylist()
    memo = FrozenImageFeatures()
    calls = vision_forwards(model.model.visual)
    first = evaluator.evaluate(model, image_features=memo).predictions.to_pylist()
    encoded = len(calls)
    second = evaluator.evaluate(model, image_features=memo).predictions.to_pylist()
    image_batches = sum(name == "toy-styles" for name, _ in evaluator.batches)  # toy-text-qa has no images
    assert first == expected and second == expected
    assert encoded == len(memo) == memo.hits == image_batches > 0
    assert len(calls) == encoded  # the second evaluation ran the vision tower not once


@pytest.mark.parametrize("mode", ["logits", "generate"])
def test_a_scorer_reads_kept_features_of_mcq_and_freeform_rows(mode):
    torch.manual_seed(0)
    model, processor = tiny_qwen()
    model.eval()
    scorer = BatchScorer(RecordCollator(processor, padding_side="left"), mode=mode, max_new_tokens=4)
    rows = [mcq_row(0), freeform_record(1), mcq_row(2, with_image=False), mcq_row(3)]
    expected = scorer(model, rows)
    memo = FrozenImageFeatures()
    assert scorer(model, rows, image_features=memo, key=0) == expected
    assert scorer(model, rows, image_features=memo, key=0) == expected
    assert (len(memo), memo.misses, memo.hits) == (2, 2, 2)  # the MCQ and the free-form part of batch 0


def test_llava_output_from_kept_features_equals_its_output_from_pixels():
    torch.manual_seed(0)
    model = tiny_llava().eval().requires_grad_(False)  # nothing trained: a frozen image path
    batch = {name: value for name, value in llava_batch(model).items() if name != "labels"}
    memo = FrozenImageFeatures.for_model(model, LLAVA)
    with torch.no_grad():
        expected = model(**batch).logits
        for _ in range(2):
            inputs = memo.inputs("batch", model, batch)
            assert "pixel_values" not in inputs
            assert torch.equal(model(**inputs).logits, expected)
    assert (memo.misses, memo.hits) == (1, 1)


def test_features_beyond_the_budget_are_encoded_again():
    model, processor = tiny_qwen()
    batch = RecordCollator(processor, padding_side="left")([mcq_row(0)])
    one_batch = sum(f.numel() * f.element_size() for f in FrozenImageFeatures.encode(model, batch))
    memo = FrozenImageFeatures(max_bytes=one_batch)
    for key in (0, 1, 0, 1):
        memo.inputs(key, model, batch)
    assert (len(memo), memo.bytes, memo.hits, memo.misses) == (1, one_batch, 1, 3)
