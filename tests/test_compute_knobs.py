"""The compute knobs of a trial do what they say, on Qwen2.5-VL-3B's real widths where widths matter.

Activation checkpointing keeps fewer activation bytes for backward, bf16 gives bf16 weights and
activations through the DeepSpeed engine, the attention kernel lands in the model's config, pixel
bounds change the number of image tokens the collator makes, and ``max_seq_len`` refuses or
truncates (and counts) long rows. The real-width model is Qwen2.5-VL-3B's configuration at one
decoder layer and one vision block with a 2,048-entry vocabulary (one per module, ~140 M params).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from pydantic import ValidationError
from transformers.initialization import no_init_weights
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from contract.exits import EXIT_BAD_INPUT
from jobs.finetune.__main__ import main as finetune_main
from jobs.finetune.config import TrialConfig, flash_attention_installed
from jobs.finetune.engine import build_engine, deepspeed_config, trial_module
from jobs.finetune.trial_model import load_trial_model
from recipes.data.collate import RecordCollator
from recipes.models import LoadedModel, load_model
from recipes.models.families import family_for_model_type
from recipes.models.processors import set_pixel_bounds
from recipes.models.shapes import SHAPE_CONFIG_DIR, shape_config
from tests.conftest import one_rank_process_group
from tests.data_fixtures import png_bytes
from tests.tiny_models import mcq_row

TOY = "toy-qwen2.5-vl-init"


def trial(**settings) -> TrialConfig:
    return TrialConfig(**{"model": TOY, "parts": "llm", "lr": 1e-4, "batch_size": 2, "micro_batch_size": 2, **settings})


@pytest.fixture(scope="module")
def real_width() -> LoadedModel:
    """Qwen2.5-VL-3B's widths (hidden 2048, MLP 11008, vision 1280) at one layer each, small vocabulary."""
    config = shape_config("qwen2.5-vl-3b@layers=1,vision_layers=1")
    config.text_config.vocab_size = 2048
    with no_init_weights():
        model = transformers.Qwen2_5_VLForConditionalGeneration(config).float()  # the shipped config says bf16
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-0.02, 0.02, generator=generator)
    family = family_for_model_type("qwen2_5_vl")
    return LoadedModel(model=model, processor=None, family=family, name="real-width", path=Path("."), fingerprint="")


def text_batch(length: int = 32) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 2048, (1, length), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def saved_bytes(model: torch.nn.Module) -> int:
    """Bytes of the tensors autograd keeps for backward during one training forward pass (not the weights)."""
    weights = {param.data_ptr() for param in model.parameters()}
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if tensor.data_ptr() not in weights:
            total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(**text_batch()).logits.sum().backward()
    model.zero_grad(set_to_none=True)
    return total


# -- activation checkpointing ------------------------------------------------------------------


def test_activation_checkpointing_defaults_on_for_real_models_and_shapes_off_for_toys():
    assert trial(model="qwen2.5-vl-7b").checkpointing
    assert trial(model="llava-1.5-7b").checkpointing
    assert trial(model="qwen2.5-vl-3b@layers=2").checkpointing
    assert not trial(model=TOY).checkpointing
    assert not trial(model="qwen2.5-vl-7b", activation_checkpointing=False).checkpointing
    assert trial(model=TOY, activation_checkpointing=True).checkpointing


def test_activation_checkpointing_keeps_fewer_activation_bytes(real_width):
    model = real_width.model.eval()  # as from_pretrained returns it: the trial's module must train
    try:
        trial_module(trial(activation_checkpointing=False), real_width)
        without = saved_bytes(model)
        trial_module(trial(activation_checkpointing=True), real_width)
        assert model.model.language_model.gradient_checkpointing
        with_checkpointing = saved_bytes(model)
    finally:
        model.activation_checkpointing_disable()
    # the decoder layer's MLP (11008 wide) and attention activations are recomputed, not kept
    assert with_checkpointing < without / 2, (with_checkpointing, without)


# -- precision ---------------------------------------------------------------------------------


def test_the_deepspeed_bf16_section_follows_precision():
    assert not deepspeed_config(trial(), 1, use_gpu=False)["bf16"]["enabled"]  # auto on CPU: fp32
    assert deepspeed_config(trial(gpus_per_worker=1), 1, use_gpu=True)["bf16"]["enabled"]  # auto on GPU: bf16
    assert deepspeed_config(trial(precision="bf16"), 1, use_gpu=False)["bf16"]["enabled"]
    assert not deepspeed_config(trial(precision="fp32", gpus_per_worker=1), 1, use_gpu=True)["bf16"]["enabled"]


def test_a_deepspeed_json_contradicting_precision_is_refused(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{"zero_optimization": {"stage": 2}, "bf16": {"enabled": true}}')
    with pytest.raises(ValueError, match="bf16.enabled is True but the trial's precision is fp32"):
        deepspeed_config(trial(precision="fp32", deepspeed_config=str(path)), 1, use_gpu=False)


@pytest.fixture
def one_rank_group():
    """A one-rank gloo process group for DeepSpeed."""
    with one_rank_process_group():
        yield


def test_bf16_precision_gives_a_bf16_engine_with_bf16_activations(real_width, one_rank_group):
    settings = {"parts": "projector", "zero_stage": 2, "activation_checkpointing": False, "precision": "bf16"}
    engine, _ = build_engine(trial(**settings), real_width, world_size=1, use_gpu=False)
    try:
        dtypes = {param.dtype for param in engine.module.parameters()}
        assert dtypes == {torch.bfloat16}
        layer = engine.module.model.language_model.layers[0].mlp
        seen = []
        handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        with torch.no_grad():
            engine.module(**text_batch(16))
        handle.remove()
        assert seen == [torch.bfloat16]
    finally:
        real_width.model.float()


def test_precision_sets_the_dtype_a_trial_loads_its_model_in():
    assert next(load_trial_model(trial(precision="bf16")).model.parameters()).dtype == torch.bfloat16
    assert next(load_trial_model(trial(precision="auto")).model.parameters()).dtype == torch.float32


# -- attention kernel --------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_the_attention_kernel_reaches_the_model_config(kernel):
    assert load_trial_model(trial(attn_implementation=kernel)).model.config._attn_implementation == kernel


def test_load_model_passes_the_attention_kernel():
    assert load_model(TOY, attn_implementation="eager").model.config._attn_implementation == "eager"


@pytest.mark.skipif(flash_attention_installed(), reason="flash-attn is installed here")
def test_flash_attention_without_its_package_is_refused_before_compute(capsys):
    with pytest.raises(ValidationError, match="flash_attention_2 needs the flash-attn package"):
        trial(attn_implementation="flash_attention_2", gpus_per_worker=1)
    code = finetune_main(
        ["--model", TOY, "--parts", "llm", "--lr", "1e-5", "--attn-implementation", "flash_attention_2"]
    )
    assert code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.count("\n") == 1


# -- image pixel bounds ------------------------------------------------------------------------


def qwen_3b_processor():
    """The toy tokenizer and chat template with Qwen2.5-VL-3B's real image processor."""
    processor = load_model(TOY).processor
    processor.image_processor = Qwen2VLImageProcessorPil.from_pretrained(SHAPE_CONFIG_DIR / "qwen2.5-vl-3b")
    return processor


def image_tokens(processor, size: int) -> int:
    """Image tokens in the training batch of a row with one ``size`` x ``size`` image."""
    row = {**mcq_row(0), "image": png_bytes(size=size)}
    batch = RecordCollator(processor, with_answers=True, cache_bytes=0)([row])
    return int((batch["input_ids"] == processor.image_token_id).sum())


def test_pixel_bounds_change_the_number_of_image_tokens():
    processor = qwen_3b_processor()
    assert image_tokens(processor, 448) == 256  # 448 x 448 / (28 x 28): within the real bounds
    set_pixel_bounds(processor, max_pixels=64 * 28 * 28)
    assert image_tokens(processor, 448) == 64
    set_pixel_bounds(processor, min_pixels=16 * 28 * 28)
    assert image_tokens(processor, 56) == 16  # a small image is scaled up


def test_a_trial_loads_its_processor_with_its_pixel_bounds():
    processor = load_trial_model(trial(min_pixels=100, max_pixels=200)).processor
    assert (processor.image_processor.size.shortest_edge, processor.image_processor.size.longest_edge) == (100, 200)


def test_pixel_bounds_are_refused_for_llava_and_in_the_wrong_order():
    with pytest.raises(ValidationError, match="LLaVA-1.5 resizes and crops every image to 336 x 336"):
        trial(model="llava-1.5-7b", max_pixels=1000)
    with pytest.raises(ValidationError, match=r"min_pixels \(300\) must be <= max_pixels \(200\)"):
        trial(min_pixels=300, max_pixels=200)


# -- maximum sequence length -------------------------------------------------------------------


def long_row(index: int = 0) -> dict:
    return {**mcq_row(index), "id": f"long{index}", "question": "What is the class of this image? " * 20}


def test_rows_over_max_seq_len_are_refused_naming_the_row():
    processor = load_model(TOY).processor
    length = RecordCollator(processor, with_answers=True)([long_row()])["input_ids"].shape[1]
    collate = RecordCollator(processor, with_answers=True, max_length=length - 1)
    with pytest.raises(ValueError, match=rf"row 'long0' \(fixture\) has {length} tokens, more than max_seq_len"):
        collate([mcq_row(1), long_row()])
    assert RecordCollator(processor, with_answers=True, max_length=length)([long_row()])["input_ids"].shape[1] == length


def test_truncation_cuts_after_the_images_and_counts_rows():
    processor = load_model(TOY).processor
    image_token = processor.image_token_id
    full = RecordCollator(processor, with_answers=True)([long_row()])
    images = int((full["input_ids"] == image_token).sum())
    answer_at = int((full["labels"][0] != -100).nonzero()[0])
    limit = answer_at + 1  # keeps the images and the first answer token, cuts the rest
    collate = RecordCollator(processor, with_answers=True, max_length=limit, overlength="truncate")
    batch = collate([long_row(), mcq_row(1)])
    assert batch["input_ids"].shape[1] == limit
    assert int((batch["input_ids"][0] == image_token).sum()) == images
    assert torch.equal(batch["input_ids"][0], full["input_ids"][0, :limit])
    assert collate.truncated == 1
    collate([long_row()])
    assert collate.truncated == 2


def test_truncation_never_cuts_an_image_or_every_answer_token():
    processor = load_model(TOY).processor
    full = RecordCollator(processor, with_answers=True)([long_row()])
    last_image = int((full["input_ids"][0] == processor.image_token_id).nonzero()[-1])
    answer_at = int((full["labels"][0] != -100).nonzero()[0])
    inside_image = RecordCollator(processor, with_answers=True, max_length=last_image, overlength="truncate")
    with pytest.raises(ValueError, match="truncating would cut an image"):
        inside_image([long_row()])
    before_answer = RecordCollator(processor, with_answers=True, max_length=answer_at, overlength="truncate")
    with pytest.raises(ValueError, match="would cut all of its answer tokens"):
        before_answer([long_row()])
    assert inside_image.truncated == before_answer.truncated == 0


def test_max_seq_len_and_its_policy_reach_the_trial_identity():
    assert "max_seq_len" not in trial().identity()  # trials from before the knob keep their ids
    assert trial(max_seq_len=512).trial_id != trial(max_seq_len=512, overlength="truncate").trial_id
    assert trial(overlength="truncate").trial_id == trial().trial_id  # no limit: the policy changes nothing
