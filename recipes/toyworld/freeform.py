"""python -m recipes.data toy --out DIR   (writes these next to the toy world's MCQ datasets)

The toy world's free-form datasets: answers in free text and multi-turn conversations, on the
toy world's scenes and words, so that the free-form side of the data contract (training on
assistant turns, mixing conversations into the target task, generating answers scored by a
matcher) runs on a laptop CPU like the rest of the toy world:

=====================  ========  ==========================================================
toy-count-free-train   train     "How many shapes are there? Answer with a number." -> "3"
toy-count-free         eval      the same question on held-out scenes (matcher rs, Listing 2)
toy-chat               train     two-turn conversations: a scene's colour then its shape, or
                                 a sum then one more (LLaVA-665K-like mixing source)
=====================  ========  ==========================================================

They are written into their own cache folder (``recipes.toyworld.datasets.toy_freeform_dir``),
keyed by the toy world's key, so the toy world's MCQ files (and the toy base model pre-trained on
them) stay exactly as they are.

    from recipes.toyworld.freeform import TOY_FREEFORM_NAMES, toy_freeform_records
    records = toy_freeform_records("toy-chat", ToyWorldConfig(size="small"))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recipes.data.writers import write_records
from recipes.toyworld.images import TOY_CLASSES
from recipes.toyworld.tasks import ToyContext, _listed_text_items, _scene_png, sample_scene
from recipes.toyworld.world import ToySizes, ToyWorldConfig, dataset_rng

FREEFORM_VERSION = 1
"""Bump when these datasets' content changes: it is part of their cache key."""

COUNT_QUESTION = "How many shapes are there? Answer with a number."
"""The free-form counting question."""

COUNT_MATCHER = "rs"
"""Counting answers are scored like MLLM-CL's remote-sensing counts (Listing 2)."""

CHAT_MATCHER = "exact"
"""Conversation replies are scored by exact match."""


def count_records(context: ToyContext, rng: np.random.Generator, count: int, split: str, name: str) -> list[dict]:
    """Counting questions: 1-4 copies of a class, answered with the digit (copies balanced)."""
    records = []
    for index in range(count):
        copies = index % 4 + 1
        class_index = int(rng.integers(len(TOY_CLASSES)))
        scene = sample_scene(rng, context.image_size, split, class_index, copies=copies)
        records.append(
            {
                "id": f"{name}-{index:05d}",
                "image": _scene_png(context, scene, rng),
                "question": COUNT_QUESTION,
                "options": [],
                "answer": str(copies),
                "source": name,
                "meta": {"task": "count:free", "classname": TOY_CLASSES[class_index].name, "copies": copies},
                "kind": "freeform",
                "matcher": COUNT_MATCHER,
                "extra_images": [],
                "history": [],
            }
        )
    order = rng.permutation(len(records))
    return [records[i] for i in order]


def chat_records(context: ToyContext, rng: np.random.Generator, count: int, split: str, name: str) -> list[dict]:
    """Two-turn conversations: a scene's colour then its shape, or (text only) a sum then one more.

    Scenes and sums come from ``split`` only (the sums of toy-text-qa's eval split never appear).
    """
    records = []
    for index in range(count):
        if index % 2 == 0:
            class_index = int(rng.integers(len(TOY_CLASSES)))
            toy_class = TOY_CLASSES[class_index]
            scene = sample_scene(rng, context.image_size, split, class_index, copies=1)
            image = _scene_png(context, scene, rng)
            history = [
                {"role": "user", "text": "<image>\nWhat colour is the object?"},
                {"role": "assistant", "text": f"It is {toy_class.colour}."},
            ]
            question, answer = "And what shape is it?", f"It is a {toy_class.shape}."
            meta = {"task": "chat:scene", "classname": toy_class.name}
        else:
            sums = [item for items in _listed_text_items("add", split).values() for item in items]
            text, total, _ = sums[int(rng.integers(len(sums)))]
            image = None
            history = [{"role": "user", "text": text}, {"role": "assistant", "text": total}]
            question, answer = "And plus one more?", str(int(total) + 1)
            meta = {"task": "chat:sum"}
        records.append(
            {
                "id": f"{name}-{index:05d}",
                "image": image,
                "question": question,
                "options": [],
                "answer": answer,
                "source": name,
                "meta": meta,
                "kind": "freeform",
                "matcher": CHAT_MATCHER,
                "extra_images": [],
                "history": history,
            }
        )
    return records


@dataclass(frozen=True)
class ToyFreeformDataset:
    """One free-form dataset of the toy world."""

    name: str
    """Registry name (also the file stem and the ``source`` of its rows)."""
    split: str
    """"train" or "eval" (decides which scenes it may use)."""
    rows: Callable[[ToySizes], int]
    """Row count for a size."""
    make: Callable[[ToyContext, np.random.Generator, int, str, str], list[dict]]
    """The records: ``make(context, rng, count, split, name)``."""


TOY_FREEFORM_DATASETS = (
    ToyFreeformDataset("toy-count-free-train", "train", lambda s: s.train // 4, count_records),
    ToyFreeformDataset("toy-count-free", "eval", lambda s: s.eval, count_records),
    ToyFreeformDataset("toy-chat", "train", lambda s: s.general // 2, chat_records),
)
"""Every free-form dataset of the toy world."""

TOY_FREEFORM_NAMES = tuple(dataset.name for dataset in TOY_FREEFORM_DATASETS)


def toy_freeform_records(name: str, config: ToyWorldConfig, context: ToyContext | None = None) -> list[dict]:
    """The records of one free-form toy dataset (deterministic for the configuration)."""
    dataset = next(d for d in TOY_FREEFORM_DATASETS if d.name == name)
    context = context or ToyContext(config.image_size, config.seed)
    rng = dataset_rng(config, dataset.name)
    return dataset.make(context, rng, dataset.rows(config.sizes), dataset.split, dataset.name)


def generate_toy_freeform(out_dir: str | os.PathLike, config: ToyWorldConfig) -> dict[str, int]:
    """Write every free-form toy dataset into ``out_dir``; returns rows per dataset."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = ToyContext(config.image_size, config.seed)
    rows = {}
    for dataset in TOY_FREEFORM_DATASETS:
        records = toy_freeform_records(dataset.name, config, context)
        write_records(records, out_dir / f"{dataset.name}.parquet", overwrite=True, check_images=False)
        rows[dataset.name] = len(records)
    return rows
