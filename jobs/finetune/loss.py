"""A trial's training loss: next-token cross-entropy computed at the supervised positions only.

    loss = supervised_loss(engine, batch)   # jobs.finetune.loop.TrialWorker.train_step

A Hugging Face vision-language model given ``labels`` projects every position of the batch onto
the vocabulary and then ignores the positions labelled -100: the prompt, the image tokens and the
padding. An MCQ answer supervises 2 of a toy question's 76 tokens, and at Qwen2.5-VL's 151,936
entries the logits of 16 rows of 1,024 tokens are 10 GB in fp32 (the loss upcasts them). Here the
model is asked for logits only at the sequence positions where some row's next token is supervised
(``logits_to_keep`` given as a tensor of positions, which Qwen2.5-VL and LLaVA both accept), and
the loss is the mean cross-entropy over the supervised tokens: the quantity the model's own loss
computes (``ForCausalLMLoss``: shift by one, ignore -100, mean), with fewer rows in the vocabulary
projection and the softmax. A free-form answer spread over many positions keeps them all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recipes.data.collate import IGNORE_INDEX


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """``labels`` shifted one to the left: the token each position predicts (-100 at the last)."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def supervised_positions(targets: torch.Tensor) -> torch.Tensor:
    """Sequence positions (ascending) where at least one row's next token is supervised."""
    return (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)


def supervised_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on ``batch`` over its supervised tokens.

    ``batch`` is a collator's output with ``labels``; ``model`` is anything that forwards to a
    Hugging Face model taking ``logits_to_keep`` (a DeepSpeed engine, a PEFT model, the model).
    """
    inputs = {name: value for name, value in batch.items() if name != "labels"}
    targets = next_token_targets(batch["labels"])
    positions = supervised_positions(targets)
    logits = model(**inputs, logits_to_keep=positions).logits.float()
    kept = targets[:, positions]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), kept.reshape(-1), ignore_index=IGNORE_INDEX)
