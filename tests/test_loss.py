"""The training loss over supervised positions only (``jobs.finetune.loss``) against the model's own.

Table-driven over tiny models of the real architectures and the batches a trial trains on: MCQ
rows of different lengths (right padding), a free-form conversation with two assistant turns, a
LLaVA batch whose every text token is supervised, and LoRA on the language model. For each, the
loss and every trainable gradient equal what the model computes from ``labels`` itself, and the
vocabulary projection sees only the positions that some row supervises.
"""

from __future__ import annotations

import pytest
import torch

from jobs.finetune.loss import next_token_targets, supervised_loss, supervised_positions
from recipes.data.collate import IGNORE_INDEX, RecordCollator
from recipes.methods import MethodConfig, apply_method
from recipes.models.families import QWEN2_5_VL
from tests.test_freeform import freeform_record
from tests.tiny_models import llava_batch, mcq_row, tiny_llava, tiny_qwen


def qwen_mcq():
    model, processor = tiny_qwen()
    rows = [mcq_row(0), mcq_row(1, answer="D"), {**mcq_row(2), "question": "Which shape is the largest one here?"}]
    return model, RecordCollator(processor, with_answers=True)(rows)


def qwen_freeform():
    model, processor = tiny_qwen()
    return model, RecordCollator(processor, with_answers=True)([freeform_record(0), mcq_row(1)])


def qwen_lora():
    model, batch = qwen_mcq()
    lora, _ = apply_method(model, QWEN2_5_VL, "llm", MethodConfig("lora", lora_r=4, lora_alpha=8))
    return lora, batch


def llava():
    model = tiny_llava()
    return model, llava_batch(model)


CASES = {"qwen-mcq": qwen_mcq, "qwen-freeform": qwen_freeform, "qwen-lora": qwen_lora, "llava": llava}


def gradients(model) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def projected_positions(model, batch) -> int:
    """How many sequence positions reach the vocabulary projection in ``supervised_loss``."""
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    try:
        supervised_loss(model, batch)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("case", CASES)
def test_loss_and_gradients_equal_the_models_own(case):
    torch.manual_seed(0)
    model, batch = CASES[case]()
    model.train()
    own = model(**batch).loss
    own.backward()
    expected = gradients(model)
    loss = supervised_loss(model, batch)
    loss.backward()
    got = gradients(model)
    assert torch.allclose(loss, own, rtol=1e-6, atol=1e-6), (loss.item(), own.item())
    assert expected.keys() == got.keys() and expected
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("case", CASES)
def test_only_supervised_positions_are_projected(case):
    model, batch = CASES[case]()
    targets = next_token_targets(batch["labels"])
    wanted = int((targets != IGNORE_INDEX).any(dim=0).sum())
    assert projected_positions(model, batch) == wanted < batch["labels"].shape[1]


def test_positions_are_where_the_next_token_is_supervised():
    labels = torch.tensor(
        [[IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX], [IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    )
    targets = next_token_targets(labels)
    assert targets.tolist() == [
        [IGNORE_INDEX, 7, 8, IGNORE_INDEX, IGNORE_INDEX],
        [5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
    assert supervised_positions(targets).tolist() == [0, 1, 2]
