"""python -m recipes.data toy --out DIR [--seed N] [--size small|default]

The toy world: a deterministic synthetic multimodal world at CPU scale, generated in seconds,
on which a tiny Qwen2.5-VL is pre-trained (``toy-pretrain``) and then fine-tuned on the target
task (``toy-imagenet-vqa``) so that the paper's forgetting patterns can appear on a laptop.

Pictures are shape x colour x texture objects (48 classes, e.g. "red striped circle"; see
``recipes.toyworld.images``) and real scikit-learn digits; questions are the tasks of
``recipes.toyworld.tasks``. Datasets, by quadrant of the 2 x 2 evaluation matrix:

=====================  ========  =========================================================
toy-imagenet-vqa       id_id     target task, train split (4-option class questions)
toy-imagenet-vqa-val   id_id     target task on held-out scenes
toy-imagenet-vqa-v2    id_id     target task, shifted renderer (sizes, positions, background)
toy-styles             id_ood    target question, other styles (cartoon, noisy, dark, blurred)
toy-digits             id_ood    target question on real digits ("the digit 3")
toy-attributes         ood_id    colour / texture / shape / position / count questions
toy-wiki               ood_id    made-up facts about the class (ImageWikiQA-like)
toy-wiki-classname     ood_id    the same with the class name as one distractor (probe)
toy-digit-tasks        ood_ood   parity, compare with five, plus one, times two of digits
toy-text-qa            ood_ood   text-only questions (no image)
toy-general            mix       train splits of the OOD-text tasks (LLaVA-665K-like mix)
toy-pretrain           pretrain  every task's train split; the target task weak (10%)
=====================  ========  =========================================================

Eval sets never share a picture or text item with a train set (see ``recipes.toyworld.tasks``);
answer letters are balanced in every dataset.

Free-form datasets (a counting question answered with a number, two-turn conversations) are
``recipes.toyworld.freeform``'s; they sit in a cache folder of their own, so the files above
stay exactly as they are.

Every option text has a fixed slot (``recipes.toyworld.tasks.OPTION_SLOTS``: "red" is always A,
"the digit 6" always C, a class by (shape + colour + texture index) % 4), and a question's four
options fill the four slots in slot order, so the answer letter is the slot of the correct
answer. This is a deliberate property of the toy world: it spares the million-parameter toy
model the symbol binding (content -> letter of its line) that real models learn in pre-training,
while the questions keep the MCQ contract. Recognising the answer is what the model learns; a
model fine-tuned too hard on the target task answers the class's slot whatever the question,
which is the task-specific overfitting that ``toy-wiki-classname`` probes (the class name sits
in the class's slot, never the correct one). The output folder also gets ``suite.yaml`` (the
eval suite: quadrant -> dataset files) and ``manifest.json`` (dataset -> file, rows, quadrant,
description). ``recipes.toyworld.datasets`` builds the world once per configuration into the
cache, and the data registry (``recipes.data.registry``) resolves the names above to its files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from contract.layout import QUADRANTS
from recipes.data.distractors import AnswerSlotDealer
from recipes.data.sampling import block_slots
from recipes.data.writers import write_records
from recipes.toyworld.images import STYLES
from recipes.toyworld.tasks import (
    NUM_SLOTS,
    ToyContext,
    ToyQuestion,
    attributes,
    classify,
    digit_tasks,
    digits_classify,
    option_slot,
    text_qa,
    wiki,
)

logger = logging.getLogger("forgetless.data")

GENERATOR_VERSION = 3
"""Bump when the generator's output changes: it is part of the cache key."""

NUM_OPTIONS = NUM_SLOTS


@dataclass(frozen=True)
class ToySizes:
    """Row counts of the toy datasets for one size."""

    train: int
    """Rows of the target train split (toy-imagenet-vqa)."""
    eval: int
    """Rows of each eval set."""
    general: int
    """Rows of the mixing source (toy-general)."""
    pretrain: int
    """Rows of the pre-training mix (toy-pretrain)."""


SIZES = {
    "small": ToySizes(train=400, eval=40, general=400, pretrain=1000),
    "default": ToySizes(train=4000, eval=200, general=4000, pretrain=10000),
}

TaskMaker = Callable[[ToyContext, np.random.Generator, int, AnswerSlotDealer], list[ToyQuestion]]

TRAIN_TASKS: dict[str, TaskMaker] = {
    "classify": lambda c, r, n, d: classify(c, r, n, "train", d),
    "styles": lambda c, r, n, d: classify(c, r, n, "train", d, styles=STYLES),
    "digits": lambda c, r, n, d: digits_classify(c, r, n, "train", d),
    "attributes": lambda c, r, n, d: attributes(c, r, n, "train", d),
    "wiki": lambda c, r, n, d: wiki(c, r, n, "train", d),
    "digit-tasks": lambda c, r, n, d: digit_tasks(c, r, n, "train", d),
    "text-qa": lambda c, r, n, d: text_qa(c, r, n, "train", d),
}
"""Train splits of every task, by name (the parts of the mixes); ``d`` deals the answer slots."""

PRETRAIN_SHARES = (
    ("classify", 0.10),
    ("styles", 0.05),
    ("digits", 0.05),
    ("attributes", 0.30),
    ("wiki", 0.25),
    ("digit-tasks", 0.15),
    ("text-qa", 0.10),
)
"""Default composition of toy-pretrain: the target task weak, the OOD tasks well represented."""

GENERAL_SHARES = (("attributes", 0.25), ("wiki", 0.25), ("digit-tasks", 0.25), ("text-qa", 0.25))
"""Composition of toy-general (train splits of the OOD-text tasks)."""


def _check_shares(name: str, shares: tuple[tuple[str, float], ...]) -> None:
    unknown = [task for task, _ in shares if task not in TRAIN_TASKS]
    if unknown:
        raise ValueError(f"ToyWorldConfig.{name}: unknown task(s) {unknown}; tasks are {sorted(TRAIN_TASKS)}")
    if any(share < 0 for _, share in shares) or abs(sum(share for _, share in shares) - 1) > 1e-6:
        raise ValueError(f"ToyWorldConfig.{name}: shares must be >= 0 and sum to 1, got {dict(shares)}")


@dataclass(frozen=True)
class ToyWorldConfig:
    """Everything the toy world's content depends on (its cache key)."""

    seed: int = 0
    """Seed of every random choice."""
    size: str = "default"
    """Row counts: "small" (CPU tests) or "default" (the demo)."""
    image_size: int = 56
    """Side of the square images in pixels (4 x 4 patches of 14 px at 56)."""
    pretrain_shares: tuple[tuple[str, float], ...] = field(default=PRETRAIN_SHARES)
    """(task, share of rows) of toy-pretrain; tasks are the keys of ``TRAIN_TASKS``."""

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"ToyWorldConfig.seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.size not in SIZES:
            raise ValueError(f"ToyWorldConfig.size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if not isinstance(self.image_size, int) or self.image_size < 28:
            raise ValueError(f"ToyWorldConfig.image_size must be an integer >= 28, got {self.image_size!r}")
        object.__setattr__(self, "pretrain_shares", tuple((str(t), float(s)) for t, s in self.pretrain_shares))
        _check_shares("pretrain_shares", self.pretrain_shares)

    @property
    def sizes(self) -> ToySizes:
        return SIZES[self.size]

    def describe(self) -> dict:
        """The configuration with the generator version (what the cache key hashes)."""
        return {"generator_version": GENERATOR_VERSION, **asdict(self)}


def mixed(
    context: ToyContext,
    rng: np.random.Generator,
    count: int,
    dealer: AnswerSlotDealer,
    shares: tuple[tuple[str, float], ...],
) -> list[ToyQuestion]:
    """``count`` questions from the train tasks in ``shares`` (exact counts), shuffled together."""
    counts = block_slots([share for _, share in shares], count)
    questions = [q for (task, _), n in zip(shares, counts) if n > 0 for q in TRAIN_TASKS[task](context, rng, n, dealer)]
    return [questions[i] for i in rng.permutation(len(questions))]


@dataclass(frozen=True)
class ToyDataset:
    """One dataset of the toy world."""

    name: str
    """Registry name (also the file stem and the ``source`` of its rows)."""
    quadrant: str
    """Quadrant of the evaluation matrix, or "mix" / "pretrain" for training mixes."""
    split: str
    """"train" or "eval"."""
    description: str
    """One line for the manifest."""
    rows: Callable[[ToySizes], int]
    """Row count for a size."""
    make: Callable[[ToyContext, np.random.Generator, int, AnswerSlotDealer, ToyWorldConfig], list[ToyQuestion]]
    """The questions; the dealer deals their answer slots (balanced over the dataset)."""
    classname_probe: bool = False
    """Record the letter of the class-name distractor in meta ("classname_option")."""

    def __post_init__(self) -> None:
        if self.quadrant not in (*QUADRANTS, "mix", "pretrain"):
            raise ValueError(f"ToyDataset {self.name!r}: quadrant must be one of {QUADRANTS} or mix / pretrain")
        if self.split not in ("train", "eval"):
            raise ValueError(f"ToyDataset {self.name!r}: split must be 'train' or 'eval', got {self.split!r}")


TOY_DATASETS = (
    ToyDataset("toy-imagenet-vqa", "id_id", "train",
               "target task (train): the class of a shape scene, distractors from the most similar classes "
               "(one per other slot)",
               lambda s: s.train, lambda c, r, n, d, cfg: classify(c, r, n, "train", d)),
    ToyDataset("toy-imagenet-vqa-val", "id_id", "eval", "target task on held-out scenes",
               lambda s: s.eval, lambda c, r, n, d, cfg: classify(c, r, n, "eval", d)),
    ToyDataset("toy-imagenet-vqa-v2", "id_id", "eval", "target task, shifted renderer (other sizes, positions, background)",
               lambda s: s.eval, lambda c, r, n, d, cfg: classify(c, r, n, "eval", d, variant="v2")),
    ToyDataset("toy-styles", "id_ood", "eval", "target question on other styles: cartoon, noisy, dark, blurred",
               lambda s: s.eval, lambda c, r, n, d, cfg: classify(c, r, n, "eval", d, styles=STYLES)),
    ToyDataset("toy-digits", "id_ood", "eval", "target question on real scikit-learn digits ('the digit 3')",
               lambda s: s.eval, lambda c, r, n, d, cfg: digits_classify(c, r, n, "eval", d)),
    ToyDataset("toy-attributes", "ood_id", "eval", "colour / texture / shape / position / count of target-style scenes",
               lambda s: s.eval, lambda c, r, n, d, cfg: attributes(c, r, n, "eval", d)),
    ToyDataset("toy-wiki", "ood_id", "eval", "made-up facts about the class (ImageWikiQA-like)",
               lambda s: s.eval, lambda c, r, n, d, cfg: wiki(c, r, n, "eval", d)),
    ToyDataset("toy-wiki-classname", "ood_id", "eval", "toy-wiki with the class name as one distractor (class-label distractor probe)",
               lambda s: s.eval, lambda c, r, n, d, cfg: wiki(c, r, n, "eval", d, classname_probe=True), classname_probe=True),
    ToyDataset("toy-digit-tasks", "ood_ood", "eval", "parity, compare with five, plus one, times two of digits",
               lambda s: s.eval, lambda c, r, n, d, cfg: digit_tasks(c, r, n, "eval", d)),
    ToyDataset("toy-text-qa", "ood_ood", "eval", "text-only questions: addition, colour/shape words, what comes next, largest number",
               lambda s: s.eval, lambda c, r, n, d, cfg: text_qa(c, r, n, "eval", d)),
    ToyDataset("toy-general", "mix", "train", "mixing source: train splits of attributes, wiki, digit tasks, text QA",
               lambda s: s.general, lambda c, r, n, d, cfg: mixed(c, r, n, d, GENERAL_SHARES)),
    ToyDataset("toy-pretrain", "pretrain", "train", "pre-training mix: every task's train split, the target task weak",
               lambda s: s.pretrain, lambda c, r, n, d, cfg: mixed(c, r, n, d, cfg.pretrain_shares)),
)  # fmt: skip
"""Every dataset of the toy world."""

TOY_DATASET_NAMES = tuple(dataset.name for dataset in TOY_DATASETS)


def dataset_rng(config: ToyWorldConfig, name: str) -> np.random.Generator:
    """The random stream of one dataset (independent of the others and of their order)."""
    return np.random.default_rng([config.seed, *name.encode()])


def slot_layout(question: ToyQuestion) -> tuple[list[str], str]:
    """The options of a toy question in slot order (one per slot) and the answer letter."""
    options = sorted([question.correct, *question.distractors], key=option_slot)
    if [option_slot(option) for option in options] != list(range(NUM_OPTIONS)):
        raise RuntimeError(
            f"question {question.question!r}: options {options} do not fill the {NUM_OPTIONS} slots one each"
        )
    return options, "ABCD"[option_slot(question.correct)]


def toy_records(dataset: ToyDataset, config: ToyWorldConfig, context: ToyContext | None = None) -> list[dict]:
    """The MCQ records of one toy dataset (options in slot order, answer letters balanced)."""
    context = context or ToyContext(config.image_size, config.seed)
    rng = dataset_rng(config, dataset.name)
    dealer = AnswerSlotDealer(NUM_OPTIONS)
    questions = dataset.make(context, rng, dataset.rows(config.sizes), dealer, config)
    if max(dealer.counts) - min(dealer.counts) > 1:
        raise RuntimeError(f"{dataset.name}: answer letters are unbalanced ({dealer.counts} per letter)")
    records = []
    for index, question in enumerate(questions):
        options, answer = slot_layout(question)
        meta = dict(question.meta)
        if dataset.classname_probe:
            meta["classname_option"] = "ABCD"[options.index(meta["classname"])]
        records.append(
            {
                "id": f"{dataset.name}-{index:05d}",
                "image": question.image,
                "question": question.question,
                "options": options,
                "answer": answer,
                "source": dataset.name,
                "meta": meta,
            }
        )
    return records


def suite_spec() -> dict:
    """The toy eval suite with file names relative to the world folder (what suite.yaml holds)."""
    return {
        "name": "toy",
        "quadrants": {
            q: [f"{d.name}.parquet" for d in TOY_DATASETS if d.quadrant == q and d.split == "eval"] for q in QUADRANTS
        },
    }


def generate_toy_world(
    out_dir: str | os.PathLike, config: ToyWorldConfig = ToyWorldConfig(), *, overwrite: bool = False
) -> dict:
    """Write every toy dataset, suite.yaml and manifest.json into ``out_dir``; returns the manifest."""
    out_dir = Path(out_dir)
    targets = [out_dir / f"{d.name}.parquet" for d in TOY_DATASETS] + [
        out_dir / "suite.yaml",
        out_dir / "manifest.json",
    ]
    existing = [t.name for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already has {', '.join(existing)}; pass overwrite=True (--overwrite) to replace them"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    context = ToyContext(config.image_size, config.seed)
    entries = {}
    for dataset in TOY_DATASETS:
        records = toy_records(dataset, config, context)
        path = out_dir / f"{dataset.name}.parquet"
        write_records(records, path, overwrite=overwrite, check_images=False)  # PNGs made here by PIL
        entries[dataset.name] = {
            "file": path.name,
            "rows": len(records),
            "quadrant": dataset.quadrant,
            "split": dataset.split,
            "description": dataset.description,
        }
    manifest = {**config.describe(), "datasets": entries, "suite": "suite.yaml"}
    (out_dir / "suite.yaml").write_text(yaml.safe_dump(suite_spec(), sort_keys=False))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    logger.info(
        "toy world (%s, seed %d) written to %s in %.1fs",
        config.size,
        config.seed,
        out_dir,
        time.perf_counter() - started,
    )
    return manifest
