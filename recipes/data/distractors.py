"""Distractor selection and option layout for classification-style MCQs (one implementation).

The paper's ImageNet-VQA (appendix B.1) asks for an image's class with four options: the true
class and three distractors sampled from the five wrong classes most similar to it. Similarity
is a class-by-class matrix computed once: CLIP text-embedding cosine of "a photo of {class}"
(``clip_text_similarity``) for real datasets, shared attributes for the toy world, or none
(uniformly random distractors).

    similarity = clip_text_similarity(class_names, "/models/clip-vit-base-patch32")
    sampler = DistractorSampler.from_similarity(class_names, similarity, pool_size=5, seed=0)
    positions = balanced_answer_positions(len(images), 4, rng)
    options, answer = layout_options(true_name, sampler.sample_names(true_index, 3, rng), positions[i], rng)

Answer letters are balanced by construction: ``balanced_answer_positions`` deals positions
round-robin and shuffles them, so every letter is the answer equally often (within one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recipes.data.schema import option_letter

CLIP_TEMPLATE = "a photo of {}"
"""The text whose CLIP embedding represents a class."""


def clip_text_similarity(
    class_names: Sequence[str],
    clip_path: str,
    template: str = CLIP_TEMPLATE,
    batch_size: int = 256,
) -> np.ndarray:
    """Cosine similarity (n x n) of the CLIP text embeddings of ``template.format(name)``.

    ``clip_path`` is a local directory (or HF cache name) with a CLIPModel and its tokenizer.
    """
    # Local: only building ImageNet-VQA from real images needs CLIP; the toy world must not load torch.
    import torch
    from transformers import AutoTokenizer, CLIPModel

    try:
        tokenizer = AutoTokenizer.from_pretrained(clip_path, local_files_only=True)
        model = CLIPModel.from_pretrained(clip_path, local_files_only=True).eval()
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"--clip {clip_path!r}: not a CLIP model on this machine ({type(error).__name__}); nothing is downloaded "
            "at run time: fetch one first (e.g. `hf download openai/clip-vit-base-patch32 --local-dir DIR`) "
            "and pass --clip DIR"
        ) from None
    texts = [template.format(name) for name in class_names]
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            inputs = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
            inputs.pop("token_type_ids", None)
            output = model.get_text_features(**inputs)
            features = output if isinstance(output, torch.Tensor) else output.pooler_output
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1))
    embeddings = torch.cat(chunks)
    return (embeddings @ embeddings.T).numpy().astype(np.float64)


def similarity_ranking(class_names: Sequence[str], similarity: np.ndarray, seed: int = 0) -> list[list[int]]:
    """Per class, the indices of every wrong class, most similar first (ties broken by ``seed``).

    Classes with the same name as the true class are never wrong classes (ImageNet has
    duplicate names such as "crane").
    """
    names = list(class_names)
    similarity = np.asarray(similarity, dtype=np.float64)
    count = len(names)
    if similarity.shape != (count, count):
        raise ValueError(f"similarity has shape {similarity.shape}, expected ({count}, {count}) for {count} classes")
    tie_break = np.random.default_rng(seed).random((count, count))
    order = np.lexsort((tie_break, -similarity), axis=-1)
    return [[int(j) for j in order[row] if names[j] != names[row]] for row in range(count)]


@dataclass(frozen=True)
class DistractorSampler:
    """Per class, the pool of wrong classes its distractors are drawn from."""

    class_names: tuple[str, ...]
    """Class names by class index."""
    pools: tuple[tuple[int, ...], ...]
    """``pools[c]``: candidate distractor classes of class ``c``, most similar first."""

    def __post_init__(self) -> None:
        if len(self.pools) != len(self.class_names):
            raise ValueError(
                f"DistractorSampler.pools has {len(self.pools)} entries for {len(self.class_names)} classes"
            )

    @classmethod
    def from_similarity(
        cls, class_names: Sequence[str], similarity: np.ndarray, pool_size: int = 5, seed: int = 0
    ) -> DistractorSampler:
        """Pools of the ``pool_size`` most similar wrong classes (ties broken by ``seed``)."""
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        ranking = similarity_ranking(class_names, similarity, seed)
        return cls(tuple(class_names), tuple(tuple(candidates[:pool_size]) for candidates in ranking))

    @classmethod
    def uniform(cls, class_names: Sequence[str]) -> DistractorSampler:
        """Pools of every other class (uniformly random distractors)."""
        names = list(class_names)
        pools = tuple(tuple(j for j, other in enumerate(names) if other != name) for name in names)
        return cls(tuple(names), pools)

    def sample(self, true_index: int, count: int, rng: np.random.Generator) -> list[int]:
        """``count`` distinct distractor classes for ``true_index`` drawn from its pool."""
        pool = self.pools[true_index]
        if count > len(pool):
            raise ValueError(
                f"class {self.class_names[true_index]!r} has {len(pool)} distractor candidates, {count} needed"
            )
        chosen = rng.choice(len(pool), size=count, replace=False)
        return [pool[int(i)] for i in chosen]

    def sample_names(self, true_index: int, count: int, rng: np.random.Generator) -> list[str]:
        """Names of ``sample(...)``."""
        return [self.class_names[j] for j in self.sample(true_index, count, rng)]


def balanced_answer_positions(rows: int, options: int, rng: np.random.Generator) -> np.ndarray:
    """Answer positions for ``rows`` questions of ``options`` options, each used equally often."""
    positions = np.arange(rows) % options
    rng.shuffle(positions)
    return positions


def layout_options(
    correct: str, distractors: Sequence[str], position: int, rng: np.random.Generator
) -> tuple[list[str], str]:
    """Options with ``correct`` at ``position`` and the distractors shuffled around it; and its letter."""
    others = list(distractors)
    rng.shuffle(others)
    if not 0 <= position <= len(others):
        raise ValueError(f"answer position {position} out of range for {len(others) + 1} options")
    others.insert(position, correct)
    return others, option_letter(position)


# ---------------------------------------------------------------------------------------------
# Option slots: every option text has a fixed position (used by the toy world)


@dataclass(frozen=True)
class SlotDistractorSampler:
    """Distractors for options with fixed slots: one per other slot, from that slot's most similar classes.

    When every option has a fixed slot (its letter is a function of its text), a question's
    options fill the slots one each: the true class takes its own slot and every other slot gets
    a distractor drawn from ``pools[c][slot]``, the wrong classes of that slot most similar to
    ``c`` (the slotted form of "sampled from the most similar classes"):

        sampler = SlotDistractorSampler.from_similarity(names, similarity, slots, pool_size=2, seed=0)
        by_slot = sampler.sample(true_index, rng)      # {slot: class index} for the other slots
    """

    class_names: tuple[str, ...]
    """Class names by class index."""
    slots: tuple[int, ...]
    """Slot of every class (0 = A)."""
    pools: tuple[dict[int, tuple[int, ...]], ...]
    """``pools[c][slot]``: candidate distractor classes of class ``c`` in ``slot``, most similar first."""

    def __post_init__(self) -> None:
        if not len(self.class_names) == len(self.slots) == len(self.pools):
            raise ValueError(
                f"SlotDistractorSampler: {len(self.class_names)} class names, {len(self.slots)} slots and "
                f"{len(self.pools)} pools; they must be equally many"
            )

    @classmethod
    def from_similarity(
        cls,
        class_names: Sequence[str],
        similarity: np.ndarray,
        slots: Sequence[int],
        pool_size: int = 2,
        seed: int = 0,
    ) -> SlotDistractorSampler:
        """Per class and other slot, the ``pool_size`` most similar classes of that slot (ties broken by ``seed``)."""
        slots = [int(s) for s in slots]
        if len(slots) != len(class_names):
            raise ValueError(f"{len(slots)} slots for {len(class_names)} classes; every class needs one")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        pools = []
        for row, ranked in enumerate(similarity_ranking(class_names, similarity, seed)):
            by_slot: dict[int, list[int]] = {}
            for j in ranked:
                if slots[j] != slots[row]:
                    by_slot.setdefault(slots[j], []).append(j)
            pools.append({slot: tuple(candidates[:pool_size]) for slot, candidates in sorted(by_slot.items())})
        return cls(tuple(class_names), tuple(slots), tuple(pools))

    def sample(self, true_index: int, rng: np.random.Generator) -> dict[int, int]:
        """One distractor class per other slot: {slot: class index}."""
        return {slot: pool[int(rng.integers(len(pool)))] for slot, pool in self.pools[true_index].items()}

    def sample_names(self, true_index: int, rng: np.random.Generator) -> list[str]:
        """Names of ``sample(...)``, in slot order."""
        return [self.class_names[j] for _, j in sorted(self.sample(true_index, rng).items())]


class AnswerSlotDealer:
    """Deals answer slots so that every slot is the answer equally often over everything dealt.

    Questions may allow only some slots (a texture question's answer is never the slot of a
    texture no class has); the most constrained questions are dealt first, each to its
    least-used allowed slot (ties at random), so the flexible ones even the counts out:

        dealer = AnswerSlotDealer(4)
        slots = dealer.deal([(0, 1, 2), (0, 1, 2, 3), ...], rng)
        dealer.counts                  # answers per slot so far
    """

    def __init__(self, slots: int) -> None:
        if slots < 2:
            raise ValueError(f"AnswerSlotDealer needs >= 2 slots, got {slots}")
        self.counts = [0] * slots

    def deal(self, allowed: Sequence[Sequence[int]], rng: np.random.Generator) -> list[int]:
        """One slot per question, within the question's allowed slots."""
        for index, choices in enumerate(allowed):
            if not choices or any(not 0 <= int(s) < len(self.counts) for s in choices):
                raise ValueError(
                    f"question {index}: allowed slots {list(choices)} are not all within 0..{len(self.counts) - 1}"
                )
        tie_break = rng.random(len(allowed))
        dealt = [0] * len(allowed)
        for index in sorted(range(len(allowed)), key=lambda i: (len(allowed[i]), tie_break[i])):
            lowest = min(self.counts[int(s)] for s in allowed[index])
            candidates = [int(s) for s in allowed[index] if self.counts[int(s)] == lowest]
            dealt[index] = candidates[int(rng.integers(len(candidates)))]
            self.counts[dealt[index]] += 1
        return dealt
