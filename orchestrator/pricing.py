"""python -m orchestrator.plan GRID.yaml --gpu h100-80 [--mfu 0.4]

What a trial costs before it runs: trainable parameters, memory per worker, FLOPs and time per
step, GPU-hours and checkpoint storage, from the model's shape alone (a model built on the meta
device from its config, no weights):

    from orchestrator.pricing import Workload, model_shape, price_trial
    shape = model_shape("qwen2.5-vl-3b")
    price = price_trial(shape, "llm", MethodConfig(), Workload(micro_batch=8, workers=2, zero_stage=2))
    price.memory_bytes, price.flops_per_sample

The formulas (P = parameters, G = the trial's workers, b = bytes per activation value: 2 in
bf16 on GPUs, 4 in fp32 on CPUs):

- Trainable parameters: ``full`` trains every tensor of the recipe's parts (``recipes.parts``);
  ``lora`` adds r x (in + out) per adapted ``nn.Linear`` (``recipes.methods.lora_target_modules``).
- Model state per worker, mixed-precision AdamW as DeepSpeed runs it (bf16 on GPUs): 2 B per
  parameter of bf16 weights for all parameters; per trainable parameter 2 B bf16 gradient, 4 B
  fp32 gradient partition (DeepSpeed's optimizer step reads the gradient in fp32), 4 B fp32
  master weight and 8 B Adam m and v. ZeRO-1 divides the 16 B of fp32 state by G, ZeRO-2 also
  the bf16 gradients, ZeRO-3 also the bf16 weights, plus the gathered bf16 weights and
  gradients of the largest layer (4 B per parameter of it). These are exactly DeepSpeed's
  ``estimate_zero2/3_model_states_mem_needs`` (no offload) when every parameter trains, except
  that DeepSpeed's stage-3 multiplier is 18 where this one counts 20 (2 + 2 + 4 + 4 + 8): the
  fp32 gradient partition exists at stage 3 as well. Frozen parameters only hold weights.
  On CPUs (fp32) weights and gradients are 4 B each; ZeRO 1-3 still keep a 4 B fp32 partition
  copy of the trainable weights next to Adam's 8 B. Beside the state, ZeRO-1/2 stage gradients
  in DeepSpeed's contiguous bucket of ``reduce_bucket_size`` (5e8) elements: 1 GB in bf16 (ZeRO-2)
  or 2 GB in fp32 (ZeRO-1) on a GPU; on a CPU the written part, min(trainable, 5e8) x 4 B.
- Activations per micro-batch sample, stored for the backward pass by the layers that lie after
  the first trainable tensor (frozen layers before it run without saving anything): per decoder
  layer s x (8h + 4 kv + 4i) x b bytes for sequence length s, width h, key/value width kv and
  MLP width i -- Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", Eq. 1) counted for a SwiGLU/GQA layer without dropout and with a fused
  attention kernel (SDPA keeps no s x s score matrix, so their 5 a s / h term drops out);
  likewise per vision block over its patches. With activation checkpointing a layer keeps only
  its input, s x h x b, plus one layer's full activations while it is recomputed. The logits add
  s x V x (b + 4 + 4) (the logits, their fp32 copy and the log-softmax the loss keeps), large at
  Qwen's V = 151,936.
- FLOPs per sample: forward 2 x (matmul weights) x (tokens through them) -- s tokens for the
  LLM and ``lm_head``, the patches for the vision encoder, the merged patches for the
  projector -- plus attention 4 x s x s_attn x h per layer (s_attn: the window of a windowed
  vision block). Backward: the activation gradient (1 x forward) of every matmul after the
  first trainable tensor, the weight gradient (1 x forward) of every trained matmul, 2 x forward
  attention for layers on the backward path. So full tuning of everything is the familiar
  6 N per token, a frozen part after the trained one costs 4 N, a frozen part before it 2 N.
  LoRA adapters add 3 x 2 r (in + out) per token. Activation checkpointing repeats the forward
  pass of the checkpointed layers. Seconds per step = FLOPs per worker per step (recomputation
  included) / (peak x MFU).
- Checkpoint bytes: the trainable tensors in the training dtype plus their optimizer state
  (fp32 master and Adam m, v), i.e. 14 B per trainable parameter in bf16 (16 B in fp32 on CPUs
  with ZeRO 1-3, 12 B at ZeRO-0), ``keep_last`` of them per trial.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from recipes.methods import MethodConfig
from recipes.models.families import ModelFamily, family_for_model_type

if TYPE_CHECKING:
    from torch import nn

DEFAULT_SEQ_LEN = 512
"""LLM tokens per sample when the trial sets none: 256 image tokens (a ~448 x 448 image after
Qwen2.5-VL's 2 x 2 patch merge) plus the chat template, question and answer, rounded up."""
DEFAULT_IMAGE_PATCHES = 1024
"""Vision patches (14 x 14 pixels) per sample when the trial sets none: a ~448 x 448 image."""
DEFAULT_MFU = 0.4
"""Model FLOPs utilisation the time estimate assumes (a share of the GPU's dense bf16 peak)."""
DEFAULT_HEADROOM = 0.1
"""Share of GPU memory kept free for the CUDA context, allocator fragmentation and communication buffers."""

REDUCE_BUCKET_ELEMENTS = 500_000_000
"""DeepSpeed's default ``zero_optimization.reduce_bucket_size``: ZeRO-1/2 stage gradients in a contiguous
bucket of this many elements (``contiguous_gradients``, on by default)."""

LOGIT_BYTES_EXTRA = 8
"""Bytes per logit beyond the activation dtype: the loss's fp32 copy (4) and its saved log-softmax (4)."""


@dataclass(frozen=True)
class LinearShape:
    """One matmul of the model: where it is and how many tokens pass through it."""

    name: str
    """Module name (``model.language_model.layers.0.self_attn.q_proj``)."""
    weights: int
    """Weight elements (in x out; a patch-embedding convolution counts as the linear map it is)."""
    in_features: int
    """Input width (what a LoRA A matrix spans)."""
    out_features: int
    """Output width."""
    region: str
    """``vision``, ``projector``, ``llm`` or ``lm_head``: which token count applies."""
    weight: str
    """Name of its weight tensor (a tied ``lm_head`` names the input embedding's)."""
    order: int
    """Position among the model's modules (data flows from lower to higher)."""


@dataclass(frozen=True)
class StackShape:
    """A stack of transformer layers (the LLM's decoder or the vision encoder)."""

    path: str
    """Module path of the layer list (``model.language_model.layers``)."""
    layers: int
    """Layers in the stack."""
    hidden: int
    """Width h."""
    kv: int
    """Width of the keys (= of the values): heads_kv x head_dim."""
    intermediate: int
    """MLP width i."""
    last_order: tuple[int, ...]
    """Position of each layer's last module: a layer lies on the backward path when the first
    trainable tensor sits at or before it."""
    full_attention: tuple[bool, ...]
    """Per layer: attends over the whole sequence (else over a window)."""
    window: int | None
    """Patches per attention window of the windowed layers (None: every layer attends fully)."""


@dataclass(frozen=True)
class ModelShape:
    """What pricing needs from a model: its parameters, matmuls and layer stacks."""

    name: str
    """The grid's model name."""
    model: Any
    """The model on the meta device (to resolve parts and LoRA targets)."""
    family: ModelFamily
    """Its family (part names to module paths)."""
    parameters: dict[str, int]
    """Parameter name -> elements (tied tensors once)."""
    parameter_order: dict[str, int]
    """Parameter name -> position of its module."""
    linears: tuple[LinearShape, ...]
    """Every matmul."""
    llm: StackShape
    """The language model's decoder."""
    vision: StackShape
    """The vision encoder."""
    vocab: int
    """Vocabulary size V."""
    patches_per_token: int
    """Vision patches merged into one LLM image token (4 for Qwen2.5-VL, 1 for LLaVA)."""

    @property
    def total(self) -> int:
        """All parameters."""
        return sum(self.parameters.values())

    @property
    def largest_layer(self) -> int:
        """Elements of the largest single tensor (ZeRO-3 gathers one such layer at a time)."""
        return max(self.parameters.values())


@dataclass(frozen=True)
class Workload:
    """How one trial runs: what a step processes and how the state is split."""

    micro_batch: int = 8
    """Samples per worker per forward pass."""
    grad_accumulation: int = 1
    """Micro-batches per worker per optimizer step."""
    workers: int = 1
    """Data-parallel workers G (ZeRO shards over them)."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage 0-3."""
    checkpointing: bool = False
    """Activation checkpointing (each layer keeps only its input; recomputed in the backward pass)."""
    seq_len: int = DEFAULT_SEQ_LEN
    """LLM tokens per sample s."""
    image_patches: int = DEFAULT_IMAGE_PATCHES
    """Vision patches per sample."""
    fp32: bool = False
    """fp32 weights and activations (CPU workers) instead of bf16 mixed precision (GPU workers)."""


@dataclass(frozen=True)
class TrialPrice:
    """The estimate for one trial kind."""

    total: int
    """Parameters of the model (LoRA adapters included)."""
    trainable: int
    """Trainable parameters."""
    state_bytes: int
    """Weights, gradients and optimizer state per worker at the trial's ZeRO stage."""
    buffer_bytes: int
    """DeepSpeed's ZeRO-1/2 gradient bucket per worker."""
    activation_bytes: int
    """Activations kept for the backward pass per micro-batch, with the trial's checkpointing setting."""
    activation_bytes_plain: int
    """The same without activation checkpointing."""
    activation_bytes_checkpointed: int
    """The same with activation checkpointing."""
    flops_per_sample: float
    """Forward + backward FLOPs of one sample (the model FLOPs MFU is quoted in)."""
    recompute_flops_per_sample: float
    """Forward FLOPs activation checkpointing repeats per sample (0 without it)."""
    checkpoint_bytes: int
    """One checkpoint: trainable tensors and their optimizer state."""

    @property
    def memory_bytes(self) -> int:
        """Peak memory per worker: model state, DeepSpeed's gradient bucket and one micro-batch's activations."""
        return self.state_bytes + self.buffer_bytes + self.activation_bytes


# -- the model's shape ---------------------------------------------------------------------------


def _region(name: str, family: ModelFamily) -> str:
    dotted = name + "."
    if dotted.startswith(family.projector):
        return "projector"
    if dotted.startswith(family.vision):
        return "vision"
    if dotted.startswith(family.lm_head):
        return "lm_head"
    return "llm"


def _stack(model: nn.Module, path: str, config: Any, orders: dict[str, int], vision: bool) -> StackShape:
    layers = model.get_submodule(path)
    hidden = config.hidden_size
    heads = getattr(config, "num_attention_heads", None) or config.num_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    full = getattr(config, "fullatt_block_indexes", None)
    window = getattr(config, "window_size", None) if vision else None
    patch = getattr(config, "patch_size", 14)
    return StackShape(
        path=path,
        layers=len(layers),
        hidden=hidden,
        kv=kv_heads * hidden // heads,
        intermediate=config.intermediate_size,
        last_order=tuple(
            max(
                order
                for name, order in orders.items()
                if name.startswith(f"{path}.{index}.") or name == f"{path}.{index}"
            )
            for index in range(len(layers))
        ),
        full_attention=tuple(full is None or index in full for index in range(len(layers))),
        window=(window // patch) ** 2 if window and full is not None else None,
    )


def shape_of(name: str, model: nn.Module, family: ModelFamily, config: Any) -> ModelShape:
    """The ``ModelShape`` of ``model`` (any device; the meta device costs nothing)."""
    from torch import nn

    modules = dict(model.named_modules())
    orders = {module_name: index for index, module_name in enumerate(modules)}
    parameters, parameter_order, tensor_names = {}, {}, {}
    for param_name, param in model.named_parameters():
        parameters[param_name] = param.numel()
        parameter_order[param_name] = orders[param_name.rsplit(".", 1)[0]]
        tensor_names[id(param)] = param_name
    linears = []
    for module_name, module in modules.items():
        if isinstance(module, nn.Linear):
            weights, fan_in, fan_out = module.weight.numel(), module.in_features, module.out_features
        elif isinstance(module, (nn.Conv2d, nn.Conv3d)):  # a patch embedding: one kernel application per patch
            weights, fan_in, fan_out = module.weight.numel(), module.weight[0].numel(), module.out_channels
        else:
            continue
        region = _region(module_name, family)
        weight = tensor_names[id(module.weight)]
        linears.append(LinearShape(module_name, weights, fan_in, fan_out, region, weight, orders[module_name]))
    text = getattr(config, "text_config", config)
    vision_config = config.vision_config
    merge = getattr(vision_config, "spatial_merge_size", 1) ** 2
    return ModelShape(
        name=name,
        model=model,
        family=family,
        parameters=parameters,
        parameter_order=parameter_order,
        linears=tuple(linears),
        llm=_stack(model, family.llm_layers, text, orders, vision=False),
        vision=_stack(model, family.vision_blocks, vision_config, orders, vision=True),
        vocab=text.vocab_size,
        patches_per_token=merge,
    )


def model_config(name: str) -> Any:
    """The transformers config of the grid's model ``name``, without its weights.

    The registered real models and their ``@layers=N`` spellings come from
    ``recipes.models.shapes`` (shipped configs); the toy base from the shipped toy base's
    ``config.json``; the toy init, local or cached models from theirs.
    """
    from transformers import AutoConfig

    try:
        from recipes.models.shapes import shape_config
    except ImportError:
        shape_config = None
    if shape_config is not None:
        try:
            return shape_config(name)
        except (KeyError, ValueError, FileNotFoundError):
            pass
    from recipes.models.catalog import TOY_BASE, resolve_model_dir

    if name == TOY_BASE:  # the shipped base's shape (resolving the name may pre-train one first)
        from recipes.toyworld.base import SHIPPED_BASE_DIR

        directory = SHIPPED_BASE_DIR
    else:
        directory = resolve_model_dir(name)
    return AutoConfig.for_model(**json.loads((directory / "config.json").read_text()))


@cache
def model_shape(name: str) -> ModelShape:
    """The shape of the grid's model ``name``, built on the meta device from its config."""
    return shape_from_config(name, model_config(name))


def shape_from_config(name: str, config: Any) -> ModelShape:
    """The shape of the model ``config`` describes, built on the meta device (no weights, no memory)."""
    import torch
    import transformers

    family = family_for_model_type(config.model_type)
    with torch.device("meta"):
        model = getattr(transformers, family.model_class)._from_config(config)
    return shape_of(name, model, family, config)


# -- what a recipe trains ------------------------------------------------------------------------


def trainable_tensors(shape: ModelShape, parts: str, method: MethodConfig) -> dict[str, tuple[int, int]]:
    """What trains: ``{name: (elements, module position)}`` -- the selected tensors (full) or the
    LoRA adapters of the selected linears (lora, r x (in + out) each)."""
    from recipes.methods import lora_target_modules
    from recipes.parts import resolve_parts

    if method.name == "full":
        names = resolve_parts(shape.model, shape.family, parts)
        return {name: (shape.parameters[name], shape.parameter_order[name]) for name in names}
    linears = {linear.name: linear for linear in shape.linears}
    adapted = (linears[name] for name in lora_target_modules(shape.model, shape.family, parts))
    return {
        f"{linear.name}.lora": (method.lora_r * (linear.in_features + linear.out_features), linear.order)
        for linear in adapted
    }


def state_bytes(total: int, trainable: int, largest_layer: int, workers: int, zero_stage: int, fp32: bool) -> int:
    """Weights, gradients and optimizer state per worker (the module docstring's formula)."""
    frozen = total - trainable
    if fp32:
        weights, grads, grad_copy, master = 4, 4, 0, 4 if zero_stage >= 1 else 0
    else:
        weights, grads, grad_copy, master = 2, 2, 4, 4
    optimizer = (grad_copy + master + 8) * trainable
    sharded_optimizer = optimizer / workers if zero_stage >= 1 else optimizer
    gradients = grads * trainable / (workers if zero_stage >= 2 else 1)
    if zero_stage >= 3:
        held = weights * total / workers + (weights + grads) * largest_layer
    else:
        held = weights * (trainable + frozen)
    return int(held + gradients + sharded_optimizer)


def buffer_bytes(trainable: int, zero_stage: int, fp32: bool) -> int:
    """DeepSpeed's ZeRO-1/2 contiguous gradient bucket: ``REDUCE_BUCKET_ELEMENTS`` in fp32 (ZeRO-1) or the
    training dtype (ZeRO-2). A GPU allocator reserves all of it; on a CPU only the pages written
    (one per trainable parameter, at most the bucket) count in the process's memory."""
    if zero_stage not in (1, 2):
        return 0
    dtype = 4 if fp32 or zero_stage == 1 else 2
    return dtype * (min(trainable, REDUCE_BUCKET_ELEMENTS) if fp32 else REDUCE_BUCKET_ELEMENTS)


def _layer_elements(stack: StackShape) -> int:
    """Activation values one layer keeps per token (8h + 4 kv + 4i)."""
    return 8 * stack.hidden + 4 * stack.kv + 4 * stack.intermediate


def activation_bytes(shape: ModelShape, first: int, workload: Workload, checkpointing: bool) -> int:
    """Activations one micro-batch keeps for the backward pass (the module docstring's formula),
    counting the layers at module positions >= ``first`` (those after the first trainable tensor)."""
    act = 4 if workload.fp32 else 2
    per_sample = 0
    working = 0  # one layer's activations: always live while it runs (or is recomputed)
    for stack, tokens in ((shape.vision, workload.image_patches), (shape.llm, workload.seq_len)):
        on_path = sum(order >= first for order in stack.last_order)
        layer = tokens * _layer_elements(stack) * act
        working = max(working, layer)
        per_sample += on_path * (tokens * stack.hidden * act if checkpointing else layer)
    per_sample += workload.seq_len * shape.vocab * (act + LOGIT_BYTES_EXTRA)
    return int(workload.micro_batch * (per_sample + working))


def _tokens(shape: ModelShape, region: str, workload: Workload) -> int:
    if region == "vision":
        return workload.image_patches
    if region == "projector":
        return workload.image_patches // shape.patches_per_token
    return workload.seq_len


def _attention_flops(stack: StackShape, tokens: int) -> list[float]:
    """Forward attention FLOPs per layer: Q K^T and the weighted sum of V, 2 x 2 x s x s_attn x h."""
    return [
        4 * tokens * (tokens if full or not stack.window else min(tokens, stack.window)) * stack.hidden
        for full in stack.full_attention
    ]


def flops_per_sample(
    shape: ModelShape, trained: dict[str, tuple[int, int]], method: MethodConfig, workload: Workload
) -> float:
    """Forward + backward FLOPs of one sample (the module docstring's formula)."""
    first = min(order for _, order in trained.values())
    trained_weights = set(trained)
    total = 0.0
    for linear in shape.linears:
        forward = 2 * linear.weights * _tokens(shape, linear.region, workload)
        total += forward
        if linear.order > first:  # a trainable tensor before it needs the gradient of its input
            total += forward
        if method.name == "full" and linear.weight in trained_weights:
            total += forward
        if f"{linear.name}.lora" in trained:
            lora = 2 * trained[f"{linear.name}.lora"][0] * _tokens(shape, linear.region, workload)
            total += 3 * lora  # forward, activation gradient, weight gradient
    for stack, tokens in ((shape.vision, workload.image_patches), (shape.llm, workload.seq_len)):
        for order, forward in zip(stack.last_order, _attention_flops(stack, tokens), strict=True):
            total += forward + (2 * forward if order >= first else 0)
    return total


def recompute_flops(shape: ModelShape, first: int, workload: Workload) -> float:
    """Forward FLOPs of the checkpointed layers (those on the backward path), run again in the backward pass."""
    total = 0.0
    for stack, tokens in ((shape.vision, workload.image_patches), (shape.llm, workload.seq_len)):
        prefixes = [f"{stack.path}.{index}." for index, last in enumerate(stack.last_order) if last >= first]
        for linear in shape.linears:
            if prefixes and linear.name.startswith(tuple(prefixes)):
                total += 2 * linear.weights * _tokens(shape, linear.region, workload)
        attention = _attention_flops(stack, tokens)
        total += sum(flops for flops, last in zip(attention, stack.last_order, strict=True) if last >= first)
    return total


def checkpoint_bytes(trainable: int, zero_stage: int, fp32: bool) -> int:
    """One checkpoint: the trainable tensors in the training dtype plus fp32 master and Adam m, v."""
    if fp32:
        return trainable * (4 + 8 + (4 if zero_stage >= 1 else 0))
    return trainable * (2 + 4 + 8)


def price_trial(shape: ModelShape, parts: str, method: MethodConfig, workload: Workload) -> TrialPrice:
    """The estimate for one trial: ``parts`` tuned by ``method`` under ``workload``."""
    trained = trainable_tensors(shape, parts, method)
    trainable = sum(count for count, _ in trained.values())
    total = shape.total + (trainable if method.name == "lora" else 0)
    first = min(order for _, order in trained.values())
    plain = activation_bytes(shape, first, workload, checkpointing=False)
    checkpointed = activation_bytes(shape, first, workload, checkpointing=True)
    return TrialPrice(
        total=total,
        trainable=trainable,
        state_bytes=state_bytes(
            total, trainable, shape.largest_layer, workload.workers, workload.zero_stage, workload.fp32
        ),
        buffer_bytes=buffer_bytes(trainable, workload.zero_stage, workload.fp32),
        activation_bytes=checkpointed if workload.checkpointing else plain,
        activation_bytes_plain=plain,
        activation_bytes_checkpointed=checkpointed,
        flops_per_sample=flops_per_sample(shape, trained, method, workload),
        recompute_flops_per_sample=recompute_flops(shape, first, workload) if workload.checkpointing else 0.0,
        checkpoint_bytes=checkpoint_bytes(trainable, workload.zero_stage, workload.fp32),
    )


def step_seconds(price: TrialPrice, workload: Workload, peak_flops: float, mfu: float) -> float:
    """Seconds per optimizer step: one worker's FLOPs per step, recomputation included, at ``mfu`` of ``peak_flops``."""
    samples = workload.micro_batch * workload.grad_accumulation
    return (price.flops_per_sample + price.recompute_flops_per_sample) * samples / (peak_flops * mfu)


def fits(price: TrialPrice, memory_bytes: int, headroom: float = DEFAULT_HEADROOM) -> bool:
    """Whether a worker's peak memory fits ``memory_bytes`` with ``headroom`` of it left free."""
    return price.memory_bytes <= memory_bytes * (1 - headroom)


def remedies(
    shape: ModelShape,
    parts: str,
    method: MethodConfig,
    workload: Workload,
    memory_bytes: int,
    headroom: float = DEFAULT_HEADROOM,
) -> list[str]:
    """Changes that would make a trial that does not fit fit, each with the memory it would need."""
    candidates: list[tuple[str, Workload]] = []
    for stage in range(workload.zero_stage + 1, 4):
        candidates.append((f"train.deepspeed.zero_stage {stage}", replace(workload, zero_stage=stage)))
    if not workload.checkpointing:
        candidates.append(("train.activation_checkpointing true", replace(workload, checkpointing=True)))
    micro = workload.micro_batch // 2
    while micro >= 1:
        candidates.append((f"train.micro_batch_size {micro}", replace(workload, micro_batch=micro)))
        micro //= 2
    if workload.zero_stage >= 1:
        for workers in (2, 4, 8, 16, 32, 64):
            if workers > workload.workers:
                candidates.append((f"resources.workers_per_trial {workers}", replace(workload, workers=workers)))
    found: dict[str, str] = {}  # the first change of each kind that fits
    for label, changed in candidates:
        kind = label.split(" ")[0]
        if kind in found:
            continue
        price = price_trial(shape, parts, method, changed)
        if fits(price, memory_bytes, headroom):
            found[kind] = f"{label} ({gigabytes(price.memory_bytes)})"
    if found:
        return list(found.values())
    fully_sharded = replace(workload, zero_stage=3, checkpointing=True)  # no single change fits: combine them
    for workers in (2, 4, 8, 16, 32, 64):
        price = price_trial(shape, parts, method, replace(fully_sharded, workers=max(workers, workload.workers)))
        if fits(price, memory_bytes, headroom):
            return [
                f"train.deepspeed.zero_stage 3 with train.activation_checkpointing true and "
                f"resources.workers_per_trial {max(workers, workload.workers)} ({gigabytes(price.memory_bytes)})"
            ]
    return []


def gigabytes(count: float) -> str:
    """Bytes as decimal GB, the unit GPU datasheets use."""
    return f"{count / 1e9:.1f} GB"
