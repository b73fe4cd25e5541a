"""Run the forgetting probes on a model: class-label distractors and counting bias.

``classname_probe`` answers an ImageWikiQA-style dataset whose rows carry the letter of the
class-name distractor (``meta.classname_option``, as in ``toy-wiki-classname``) and reports the
share of errors that picked the class name (the paper's Figure 3: 42.95% -> 5.55% accuracy
after task-specific overfitting). ``counting_probe`` generates greedily on held-out prompts and
measures the probability mass the model puts on number tokens at every step (the counting-bias
probe of the selective-tuning paper); the numeric part lives in ``jobs.evaluate.probe_math``:

    stats = classname_probe(model, processor, load_dataset("toy-wiki-classname").to_pylist())
    bias = counting_probe(model, processor, rows[:64], max_new_tokens=8)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from jobs.evaluate.probe_math import CountingBias, classname_mischoice, counting_bias, number_token_ids
from jobs.evaluate.scoring import BatchScorer, batches, to_model
from recipes.data.collate import RecordCollator


def classname_probe(model: torch.nn.Module, processor: Any, rows: Sequence[dict], batch_size: int = 32) -> dict:
    """Accuracy and 'mischoice on class name' (% of errors choosing the class-name option)."""
    missing = [row["id"] for row in rows if "classname_option" not in json.loads(row["meta"] or "{}")]
    if missing:
        raise ValueError(
            f"classname probe needs meta.classname_option on every row (like toy-wiki-classname); missing on {missing[:3]}"
        )
    scorer = BatchScorer(RecordCollator(processor, padding_side="left"), mode="logits")
    probe_rows = []
    for batch in batches(list(rows), batch_size):
        for row, result in zip(batch, scorer(model, batch)):
            meta = json.loads(row["meta"])
            probe_rows.append(
                {"chosen": result["prediction"], "correct": row["answer"], "class_name": meta["classname_option"]}
            )
    return classname_mischoice(probe_rows)


@torch.no_grad()
def counting_probe(
    model: torch.nn.Module, processor: Any, rows: Sequence[dict], max_new_tokens: int = 8, batch_size: int = 32
) -> CountingBias:
    """Number-token probability at every greedy generation step, over ``rows`` as probe prompts."""
    collate = RecordCollator(processor, padding_side="left")
    tokenizer = processor.tokenizer
    number_ids = number_token_ids(tokenizer)
    if number_ids.numel() == 0:
        raise ValueError("the tokenizer has no number tokens to probe")
    probs, masks = [], []
    model.eval()
    for batch_rows in batches(list(rows), batch_size):
        batch = to_model(collate(batch_rows), model)
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id,
        )
        step_probs = torch.stack(output.scores, dim=1).float().softmax(dim=-1).cpu()
        generated = output.sequences[:, batch["input_ids"].shape[1] :].cpu()
        ended = (generated == tokenizer.eos_token_id).int().cumsum(dim=1)
        mask = (ended == 0) | ((ended == 1) & (generated == tokenizer.eos_token_id))  # steps up to the end token
        padded = torch.zeros(step_probs.shape[0], max_new_tokens, step_probs.shape[2])
        padded[:, : step_probs.shape[1]] = step_probs
        full_mask = torch.zeros(step_probs.shape[0], max_new_tokens, dtype=torch.bool)
        full_mask[:, : mask.shape[1]] = mask
        probs.append(padded)
        masks.append(full_mask)
    return counting_bias(torch.cat(probs), number_ids, torch.cat(masks))
