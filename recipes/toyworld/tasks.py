"""The question types of the toy world, each with a train and an eval split.

Every task is a function ``task(context, rng, count, split, dealer) -> list[ToyQuestion]``; the
toy world (``recipes.toyworld.world``) combines them into datasets and lays out their options
in slot order (below). The splits never share a picture or an item:

- shape scenes are split by a stable hash of what the picture shows (class, renderer, style,
  object pixels): one bucket in ``EVAL_BUCKETS`` is eval-only, the others train-only;
- scikit-learn digits are split by index (a seeded permutation: eval classification, eval
  tasks, train);
- text-only items are split by a stable hash of the item (question and options).

Option slots. Every option text of the toy world has a fixed slot in A..D (``OPTION_SLOTS``, a
fixed function of the text): colours, shapes, textures, positions, wiki facts, parity and
comparison words by their place in their family's table; counts and sequence words ("one",
"Monday", "March") by their place in the sequence modulo 4; numbers n and "the digit n" by
n % 4; colour, shape and plain words of the text questions by their place in their list modulo
4; a class by (shape index + colour index + texture index) % 4, so that the classes sharing two
attributes with a class lie in all three other slots. A question's four options fill the four
slots, one each, listed in slot order, so the correct letter is the slot of the correct answer.
This is a deliberate property of the toy world: it spares a model of a million parameters the
symbol binding (content -> letter of the line it is on) that real models learn in pre-training;
the questions still follow the MCQ contract (four options, the answer a letter, letters
balanced). Distractors respect the slots: one per other slot, the most similar candidate of
that slot where similarity applies (classes: ``SlotDistractorSampler`` pools of the classes
sharing most attributes). Answer slots are dealt per dataset by an ``AnswerSlotDealer`` so that
letters stay balanced, and the answer (class, digit, item) is then drawn within its slot.

Tasks (ID text = "What is the class of this image?"):

==================  ==============================================================
classify            the target task: the class of a shape scene, one distractor per
                    other slot from the classes most similar to it (shared attributes)
digits_classify     the same question on digits ("the digit 3")
attributes          colour / texture / shape / position / count of a shape scene
wiki                a made-up fact about the class: made of (by shape), lives in (by
                    colour), eats (by texture); with ``classname_probe`` the class name
                    replaces the distractor in the class's slot (the paper's class-label
                    distractor probe: a model that answers the class's slot whatever the
                    question picks it)
digit_tasks         parity, comparison with five, plus one, times two of a digit
text_qa             text only: addition, which word is a colour / shape, what comes next,
                    largest number
==================  ==============================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property

import numpy as np

from recipes.data.distractors import AnswerSlotDealer, SlotDistractorSampler
from recipes.data.prompts import CLASS_QUESTION
from recipes.toyworld.images import (
    COLOURS,
    SHAPES,
    TEXTURES,
    TOY_CLASSES,
    Placement,
    Scene,
    ToyClass,
    attribute_similarity,
    digit_image,
    encode_png,
    render_scene,
)

SCENE_BUCKETS = 8
"""Shape scenes are hashed into this many buckets ..."""
EVAL_BUCKETS = (0,)
"""... and scenes in these buckets are eval-only (the rest train-only)."""
TEXT_BUCKETS = 4
"""Text items are hashed into this many buckets; bucket 0 is eval-only."""
DIGIT_EVAL_CLASSIFY = 300
"""Digits (of 1797) reserved for the digit classification eval set."""
DIGIT_EVAL_TASKS = 300
"""Digits reserved for the digit-tasks eval set (the rest are for training)."""
COPIES = (1, 1, 1, 1, 1, 1, 1, 2, 2, 3)
"""How many copies of the object a classification scene shows (drawn uniformly from this list)."""
MAX_TRIES = 10_000
NUM_SLOTS = 4
"""Option slots A..D: every toy question has four options, one per slot."""
ALL_SLOTS = tuple(range(NUM_SLOTS))
CLASS_DISTRACTOR_POOL = 2
"""Candidate distractor classes per other slot (3 slots x 2: the paper's "5 most similar", slotted)."""

MATERIAL_BY_SHAPE = {"circle": "glass", "square": "wood", "triangle": "stone", "cross": "metal"}
HABITAT_BY_COLOUR = {"red": "the desert", "green": "the forest", "blue": "the ocean", "yellow": "the mountains"}
FOOD_BY_TEXTURE = {"solid": "sunlight", "striped": "leaves", "dotted": "sand"}
FOOD_NEVER = "rain"
"""The fourth food option (no texture eats rain)."""
WIKI_FACTS = {
    "material": ("What is this object made of?", "shape", MATERIAL_BY_SHAPE, ()),
    "habitat": ("Where does this object live?", "colour", HABITAT_BY_COLOUR, ()),
    "food": ("What does this object eat?", "texture", FOOD_BY_TEXTURE, (FOOD_NEVER,)),
}
"""kind -> (question, class attribute, attribute value -> fact, facts no class has)."""
QUADRANT_NAMES = {
    (0, 0): "the top left",
    (1, 0): "the top right",
    (0, 1): "the bottom left",
    (1, 1): "the bottom right",
}
COUNT_WORDS = ("one", "two", "three", "four")
COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black", "white")
SHAPE_WORDS = ("circle", "square", "triangle", "cross", "oval", "star", "diamond", "hexagon")
PLAIN_WORDS = (
    "dog", "table", "river", "apple", "chair", "cloud", "horse", "spoon", "window", "bread",
    "train", "garden", "pencil", "mountain", "cup", "shoe", "bird", "lamp", "book", "door",
)  # fmt: skip
SEQUENCES = (
    ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
)
"""Word sequences of the "what comes next" text task (words, not letters, so options never look like answer letters)."""
TEXTURE_OPTIONS = (*TEXTURES, "checkered")
"""Options of the texture question in slot order (no class is checkered)."""
PARITY_OPTIONS = ("both", "even", "neither", "odd")
"""Options of the parity question in slot order (answers in B and D; times two's answers are in A and C)."""
COMPARE_FIVE = ("smaller than five", "equal to five", "bigger than five")
COMPARE_OPTIONS = ("not a number", *COMPARE_FIVE)
"""Options of the comparison question in slot order."""
LARGEST_MAX = 99
"""Numbers of the "largest number" text task are 0..LARGEST_MAX."""


def class_slot(toy_class: ToyClass) -> int:
    """The slot of a class name: (shape index + colour index + texture index) % 4.

    Changing one attribute moves a class to another slot, and the shape (or colour) changes
    alone reach all three other slots, so the most similar classes fill the other slots.
    """
    indices = SHAPES.index(toy_class.shape) + list(COLOURS).index(toy_class.colour) + TEXTURES.index(toy_class.texture)
    return indices % NUM_SLOTS


CLASS_SLOTS = tuple(class_slot(toy_class) for toy_class in TOY_CLASSES)
"""Slot of every class, by class index."""

SLOT_TABLES = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "texture": TEXTURE_OPTIONS,
    "position": tuple(QUADRANT_NAMES.values()),
    "material": tuple(MATERIAL_BY_SHAPE[shape] for shape in SHAPES),
    "habitat": tuple(HABITAT_BY_COLOUR[colour] for colour in COLOURS),
    "food": (*(FOOD_BY_TEXTURE[texture] for texture in TEXTURES), FOOD_NEVER),
    "parity": PARITY_OPTIONS,
    "compare": COMPARE_OPTIONS,
}
"""Option families with exactly four members, each in slot order (member i sits in slot i)."""
SLOT_LISTS = (COLOUR_WORDS, SHAPE_WORDS, PLAIN_WORDS, *SEQUENCES)
"""Word lists whose member i sits in slot i % 4 (counts "one".."four" are the number sequence's start)."""


def _option_slot_table() -> dict[str, int]:
    entries = [(toy_class.name, slot) for toy_class, slot in zip(TOY_CLASSES, CLASS_SLOTS)]
    for words in (*SLOT_TABLES.values(), *SLOT_LISTS):
        entries += [(text, index % NUM_SLOTS) for index, text in enumerate(words)]
    entries += [(f"the digit {digit}", digit % NUM_SLOTS) for digit in range(10)]
    entries += [(str(number), number % NUM_SLOTS) for number in range(LARGEST_MAX + 1)]
    table: dict[str, int] = {}
    for text, slot in entries:
        if table.setdefault(text, slot) != slot:
            raise RuntimeError(f"option {text!r} has two slots ({table[text]} and {slot}); option slots must be unique")
    return table


OPTION_SLOTS = _option_slot_table()
"""Every option text of the toy world -> its slot (0 = A): the letter it always has."""


def option_slot(text: str) -> int:
    """The slot (0 = A) of a toy option text."""
    try:
        return OPTION_SLOTS[text]
    except KeyError:
        raise KeyError(f"toy option {text!r} has no slot; every toy option text must be in OPTION_SLOTS") from None


def slots_of(values: Sequence, slot: Callable[[object], int]) -> dict[int, list]:
    """``values`` grouped by ``slot(value)``."""
    grouped: dict[int, list] = {}
    for value in values:
        grouped.setdefault(slot(value), []).append(value)
    return grouped


@dataclass
class ToyQuestion:
    """A question before its options are laid out (in slot order, by ``recipes.toyworld.world``)."""

    image: bytes | None
    """PNG bytes, or None for text-only questions."""
    question: str
    """The question text."""
    correct: str
    """The correct option."""
    distractors: list[str]
    """The wrong options (three, one in each slot the correct option is not in)."""
    meta: dict = field(default_factory=dict)
    """Task, class and scene details (the record's meta)."""


class Rounds:
    """Values by slot, handed out in shuffled rounds (each value of a slot once before any repeats)."""

    def __init__(self, values_by_slot: dict[int, list], rng: np.random.Generator) -> None:
        self.values_by_slot, self.rng = values_by_slot, rng
        self.queues: dict[int, list] = {}

    def next(self, slot: int):
        """The next value of ``slot``."""
        if not self.queues.get(slot):
            values = self.values_by_slot[slot]
            self.queues[slot] = [values[i] for i in self.rng.permutation(len(values))]
        return self.queues[slot].pop()


@dataclass
class ToyContext:
    """What every task needs: image size, the class distractor pools and the digits."""

    image_size: int
    """Side of the square images in pixels."""
    seed: int
    """The world seed (distractor tie-breaks, digit splits)."""

    @cached_property
    def class_sampler(self) -> SlotDistractorSampler:
        """Per class and other slot, the classes there sharing most attributes with it (ties broken by the seed)."""
        return SlotDistractorSampler.from_similarity(
            [c.name for c in TOY_CLASSES],
            attribute_similarity(),
            CLASS_SLOTS,
            pool_size=CLASS_DISTRACTOR_POOL,
            seed=self.seed,
        )

    @cached_property
    def digits(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits  # local: scikit-learn takes seconds to import, only digits need it

        data = load_digits()
        return data.images, data.target

    @cached_property
    def digit_splits(self) -> dict[str, np.ndarray]:
        order = np.random.default_rng([self.seed, 0xD161]).permutation(len(self.digits[1]))
        first, second = DIGIT_EVAL_CLASSIFY, DIGIT_EVAL_CLASSIFY + DIGIT_EVAL_TASKS
        return {"eval-classify": order[:first], "eval-tasks": order[first:second], "train": order[second:]}

    def digit_deck(self, rng: np.random.Generator, split: str, purpose: str) -> Rounds:
        """Digit images of a split by digit: ``deck.next(digit)`` is the index of a picture of ``digit``."""
        pool = self.digit_splits["train" if split == "train" else f"eval-{purpose}"]
        labels = self.digits[1]
        return Rounds({digit: [int(i) for i in pool if labels[i] == digit] for digit in range(10)}, rng)


def _check_split(split: str) -> None:
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")


def _in_split(bucket: int, split: str, eval_buckets: tuple[int, ...]) -> bool:
    return (bucket in eval_buckets) == (split == "eval")


def _balanced(values, count: int, rng: np.random.Generator) -> list:
    """``count`` values cycling through ``values`` in shuffled order (each used equally often)."""
    values = list(values)
    picks = [values[i % len(values)] for i in range(count)]
    order = rng.permutation(count)
    return [picks[i] for i in order]


def _deal(dealer: AnswerSlotDealer | None, allowed: Sequence[Sequence[int]], rng: np.random.Generator) -> list[int]:
    """Answer slots for questions allowing ``allowed`` slots (a fresh dealer when none is given)."""
    return (dealer or AnswerSlotDealer(NUM_SLOTS)).deal(allowed, rng)


def _family_question(family: Sequence[str], slot: int) -> tuple[str, list[str]]:
    """(correct, distractors) of a question whose options are a whole four-member family."""
    return family[slot], [text for index, text in enumerate(family) if index != slot]


def _one_per_other_slot(slot: int, candidates: Sequence[str], rng: np.random.Generator) -> list[str]:
    """One random candidate in each slot other than ``slot``."""
    grouped = slots_of(candidates, option_slot)
    missing = [s for s in ALL_SLOTS if s != slot and not grouped.get(s)]
    if missing:
        raise RuntimeError(f"no candidate in slot(s) {missing} among {list(candidates)}")
    return [grouped[s][int(rng.integers(len(grouped[s])))] for s in ALL_SLOTS if s != slot]


def _near_numbers(correct: int, low: int, high: int, rng: np.random.Generator) -> list[str]:
    """One number within 4 of ``correct`` (in low..high) in each other slot."""
    window = [str(n) for n in range(max(low, correct - 4), min(high, correct + 4) + 1) if n != correct]
    return _one_per_other_slot(option_slot(str(correct)), window, rng)


# ---------------------------------------------------------------------------------------------
# Scenes


def _single_placement(rng: np.random.Generator, variant: str, quadrant: tuple[int, int] | None = None) -> Placement:
    if quadrant is not None:
        size = int(rng.integers(24, 31))
        half = size // 2
        low, high = (half + 1, 24) if quadrant[0] == 0 else (32, 55 - half)
        cx = int(rng.integers(low, high + 1))
        low, high = (half + 1, 24) if quadrant[1] == 0 else (32, 55 - half)
        return Placement(cx, int(rng.integers(low, high + 1)), size)
    if variant == "v2":
        size = int(rng.choice(np.r_[19:24, 38:45]))
    else:
        size = int(rng.integers(26, 37))
    half = size // 2 + 1
    return Placement(int(rng.integers(half, 57 - half)), int(rng.integers(half, 57 - half)), size)


def _multi_placements(rng: np.random.Generator, copies: int, variant: str) -> tuple[Placement, ...]:
    cells = rng.choice(4, size=copies, replace=False)
    low, high = (17, 21) if variant == "v2" else (20, 25)
    return tuple(
        Placement(
            14 + 28 * int(cell % 2) + int(rng.integers(-2, 3)),
            14 + 28 * int(cell // 2) + int(rng.integers(-2, 3)),
            int(rng.integers(low, high)),
        )
        for cell in sorted(cells)
    )


def sample_scene(
    rng: np.random.Generator,
    image_size: int,
    split: str,
    class_index: int,
    variant: str = "plain",
    style: str = "plain",
    copies: int | None = None,
    quadrant: tuple[int, int] | None = None,
) -> Scene:
    """A random scene of ``class_index`` in ``split`` (scenes of the other split are redrawn)."""
    _check_split(split)
    for _ in range(MAX_TRIES):
        count = copies if copies is not None else int(rng.choice(COPIES))
        placements = (
            (_single_placement(rng, variant, quadrant),) if count == 1 else _multi_placements(rng, count, variant)
        )
        scene = Scene(class_index, placements, variant, style)
        if _in_split(scene.split_bucket(SCENE_BUCKETS, image_size), split, EVAL_BUCKETS):
            return scene
    raise RuntimeError(f"no {split} scene found for class {class_index}")


def _scene_png(context: ToyContext, scene: Scene, rng: np.random.Generator) -> bytes:
    return encode_png(render_scene(scene, context.image_size, rng))


def _class_meta(class_index: int, scene: Scene) -> dict:
    toy_class = TOY_CLASSES[class_index]
    return {
        "classname": toy_class.name,
        "shape": toy_class.shape,
        "colour": toy_class.colour,
        "texture": toy_class.texture,
        "copies": len(scene.placements),
        "variant": scene.variant,
        "style": scene.style,
    }


# ---------------------------------------------------------------------------------------------
# Tasks on shape scenes


def classify(
    context: ToyContext,
    rng: np.random.Generator,
    count: int,
    split: str,
    dealer: AnswerSlotDealer | None = None,
    variant: str = "plain",
    styles: tuple[str, ...] = ("plain",),
) -> list[ToyQuestion]:
    """The target task: "What is the class of this image?" -> the class name."""
    classes = Rounds(slots_of(range(len(TOY_CLASSES)), CLASS_SLOTS.__getitem__), rng)
    questions = []
    for slot, style in zip(_deal(dealer, [ALL_SLOTS] * count, rng), _balanced(styles, count, rng)):
        class_index = classes.next(slot)
        scene = sample_scene(rng, context.image_size, split, class_index, variant, style)
        distractors = context.class_sampler.sample_names(class_index, rng)
        meta = {"task": "classify", **_class_meta(class_index, scene)}
        questions.append(
            ToyQuestion(
                _scene_png(context, scene, rng), CLASS_QUESTION, TOY_CLASSES[class_index].name, distractors, meta
            )
        )
    return questions


ATTRIBUTE_QUESTIONS = {
    "colour": "What colour is the object?",
    "texture": "What pattern does the object have?",
    "shape": "What shape is the object?",
    "position": "Where is the object?",
    "count": "How many objects are in the image?",
}
CLASS_ATTRIBUTES = ("colour", "texture", "shape")
"""Attribute questions answered by an attribute of the class (the others by the scene)."""


def _classes_by_answer_slot(answer: Callable[[ToyClass], str], classname_probe: bool = False) -> dict[int, list[int]]:
    """Class indices by the slot of their answer (probe: only classes whose own slot differs from it)."""
    grouped: dict[int, list[int]] = {}
    for index, toy_class in enumerate(TOY_CLASSES):
        slot = option_slot(answer(toy_class))
        if not (classname_probe and CLASS_SLOTS[index] == slot):
            grouped.setdefault(slot, []).append(index)
    return grouped


def attributes(
    context: ToyContext, rng: np.random.Generator, count: int, split: str, dealer: AnswerSlotDealer | None = None
) -> list[ToyQuestion]:
    """Other questions about target-style scenes: colour, texture, shape, position, count."""
    by_slot = {kind: _classes_by_answer_slot(lambda c, k=kind: getattr(c, k)) for kind in CLASS_ATTRIBUTES}
    classes = {kind: Rounds(grouped, rng) for kind, grouped in by_slot.items()}
    any_class = Rounds({0: list(range(len(TOY_CLASSES)))}, rng)
    kinds = _balanced(ATTRIBUTE_QUESTIONS, count, rng)
    allowed = [tuple(sorted(by_slot[kind])) if kind in by_slot else ALL_SLOTS for kind in kinds]
    questions = []
    for kind, slot in zip(kinds, _deal(dealer, allowed, rng)):
        if kind in CLASS_ATTRIBUTES:
            class_index = classes[kind].next(slot)
            scene = sample_scene(rng, context.image_size, split, class_index)
        else:
            class_index = any_class.next(0)
            if kind == "position":
                quadrant = list(QUADRANT_NAMES)[slot]
                scene = sample_scene(rng, context.image_size, split, class_index, copies=1, quadrant=quadrant)
            else:
                scene = sample_scene(rng, context.image_size, split, class_index, copies=slot + 1)
        correct, distractors = _family_question(COUNT_WORDS if kind == "count" else SLOT_TABLES[kind], slot)
        meta = {"task": f"attribute:{kind}", **_class_meta(class_index, scene)}
        questions.append(
            ToyQuestion(_scene_png(context, scene, rng), ATTRIBUTE_QUESTIONS[kind], correct, distractors, meta)
        )
    return questions


def wiki(
    context: ToyContext,
    rng: np.random.Generator,
    count: int,
    split: str,
    dealer: AnswerSlotDealer | None = None,
    classname_probe: bool = False,
) -> list[ToyQuestion]:
    """ImageWikiQA-like made-up facts about the class.

    With ``classname_probe`` the class name replaces the distractor in the class's own slot,
    and only classes whose slot differs from the fact's slot are asked about.
    """

    def fact(kind: str) -> Callable[[ToyClass], str]:
        _, attribute, facts, _ = WIKI_FACTS[kind]
        return lambda toy_class: facts[getattr(toy_class, attribute)]

    by_slot = {kind: _classes_by_answer_slot(fact(kind), classname_probe) for kind in WIKI_FACTS}
    classes = {kind: Rounds(grouped, rng) for kind, grouped in by_slot.items()}
    kinds = _balanced(WIKI_FACTS, count, rng)
    questions = []
    for kind, slot in zip(kinds, _deal(dealer, [tuple(sorted(by_slot[kind])) for kind in kinds], rng)):
        class_index = classes[kind].next(slot)
        toy_class = TOY_CLASSES[class_index]
        correct, distractors = _family_question(SLOT_TABLES[kind], slot)
        scene = sample_scene(rng, context.image_size, split, class_index)
        meta = {"task": f"wiki:{kind}", **_class_meta(class_index, scene)}
        if classname_probe:
            own = CLASS_SLOTS[class_index]
            distractors = [toy_class.name if option_slot(text) == own else text for text in distractors]
            meta["classname_probe"] = True
        questions.append(ToyQuestion(_scene_png(context, scene, rng), WIKI_FACTS[kind][0], correct, distractors, meta))
    return questions


# ---------------------------------------------------------------------------------------------
# Tasks on digits


def _digit_png(context: ToyContext, index: int, rng: np.random.Generator) -> bytes:
    return encode_png(digit_image(context.digits[0][index], context.image_size, rng))


DIGIT_NAMES = tuple(f"the digit {digit}" for digit in range(10))


def digits_classify(
    context: ToyContext, rng: np.random.Generator, count: int, split: str, dealer: AnswerSlotDealer | None = None
) -> list[ToyQuestion]:
    """The target question on real digits: the answer is "the digit N"."""
    deck = context.digit_deck(rng, split, "classify")
    digits = Rounds(slots_of(range(10), lambda d: option_slot(DIGIT_NAMES[d])), rng)
    questions = []
    for slot in _deal(dealer, [ALL_SLOTS] * count, rng):
        digit = digits.next(slot)
        index = deck.next(digit)
        meta = {"task": "digits", "digit": digit, "digit_index": index}
        questions.append(
            ToyQuestion(
                _digit_png(context, index, rng),
                CLASS_QUESTION,
                DIGIT_NAMES[digit],
                _one_per_other_slot(slot, DIGIT_NAMES, rng),
                meta,
            )
        )
    return questions


DIGIT_TASKS = {
    "parity": ("Is this digit even or odd?", lambda d: "even" if d % 2 == 0 else "odd"),
    "compare": ("How does this digit compare to five?", lambda d: COMPARE_FIVE[(d > 5) + (d >= 5)]),
    "plus one": ("What is this digit plus one?", lambda d: str(d + 1)),
    "times two": ("What is this digit times two?", lambda d: str(2 * d)),
}
"""kind -> (question, digit -> correct option)."""


def digit_tasks(
    context: ToyContext, rng: np.random.Generator, count: int, split: str, dealer: AnswerSlotDealer | None = None
) -> list[ToyQuestion]:
    """Other tasks on digit images: parity, comparison with five, plus one, times two."""
    deck = context.digit_deck(rng, split, "tasks")
    by_slot = {kind: slots_of(range(10), lambda d, k=kind: option_slot(DIGIT_TASKS[k][1](d))) for kind in DIGIT_TASKS}
    digits = {kind: Rounds(grouped, rng) for kind, grouped in by_slot.items()}
    kinds = _balanced(DIGIT_TASKS, count, rng)
    questions = []
    for kind, slot in zip(kinds, _deal(dealer, [tuple(sorted(by_slot[kind])) for kind in kinds], rng)):
        digit = digits[kind].next(slot)
        index = deck.next(digit)
        text, answer = DIGIT_TASKS[kind]
        correct = answer(digit)
        if kind in SLOT_TABLES:
            distractors = _family_question(SLOT_TABLES[kind], slot)[1]
        else:
            distractors = _near_numbers(int(correct), 0, 10 if kind == "plus one" else 18, rng)
        meta = {"task": f"digit:{kind}", "digit": digit, "digit_index": index}
        questions.append(ToyQuestion(_digit_png(context, index, rng), text, correct, distractors, meta))
    return questions


# ---------------------------------------------------------------------------------------------
# Text-only tasks


def _text_bucket(key: tuple) -> int:
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big") % TEXT_BUCKETS


def _next_candidates(sequence: tuple[str, ...], position: int) -> tuple[str, ...]:
    """Distractor candidates of "what comes after sequence[position]": the other words, the asked
    word itself only where it is the one word of its slot."""
    asked = sequence[position]
    alone = sum(option_slot(word) == option_slot(asked) for word in sequence) == 1
    return tuple(word for word in sequence if word != asked or alone)


@cache
def _listed_text_items(kind: str, split: str) -> dict[int, list[tuple[str, str, tuple[str, ...]]]]:
    """Items of the text tasks with few items ("add", "what comes next") in ``split``, by answer slot.

    An item is (question, correct, candidate distractors); its key (the question) decides its split.
    """
    if kind == "add":
        near = {total: tuple(str(n) for n in range(max(0, total - 4), min(18, total + 4) + 1)) for total in range(19)}
        items = [(f"What is {a} plus {b}?", str(a + b), near[a + b]) for a in range(10) for b in range(10)]
    else:
        items = [
            (f"Which word comes after {words[position]}?", words[position + 1], _next_candidates(words, position))
            for words in SEQUENCES
            for position in range(len(words) - 1)
        ]
    in_split = [item for item in items if _in_split(_text_bucket((item[0],)), split, (0,))]
    return slots_of(in_split, lambda item: option_slot(item[1]))


TEXT_KINDS = ("add", "colour word", "shape word", "what comes next", "largest")
LISTED_TEXT_KINDS = ("add", "what comes next")
"""Text tasks with few items: their items are listed, and only the slots their split has are dealt."""


def _text_item(kind: str, slot: int, split: str, rng: np.random.Generator) -> tuple[str, str, list[str]]:
    """(question, correct, distractors) of a ``split`` item whose answer is in ``slot``."""
    if kind in LISTED_TEXT_KINDS:
        items = _listed_text_items(kind, split)[slot]
        text, correct, candidates = items[int(rng.integers(len(items)))]
        return text, correct, _one_per_other_slot(slot, [c for c in candidates if c != correct], rng)
    for _ in range(MAX_TRIES):
        if kind == "largest":
            numbers = [int(rng.choice(np.arange(r, LARGEST_MAX + 1, NUM_SLOTS))) for r in ALL_SLOTS]
            if max(numbers) % NUM_SLOTS != slot:
                continue
            text, correct = "Which number is the largest?", str(max(numbers))
            distractors, key = [str(n) for n in numbers if n != max(numbers)], (kind, *sorted(numbers))
        else:
            words = COLOUR_WORDS if kind == "colour word" else SHAPE_WORDS
            correct = str(rng.choice(slots_of(words, option_slot)[slot]))
            distractors = _one_per_other_slot(slot, PLAIN_WORDS, rng)
            text, key = f"Which word is a {kind.split()[0]}?", (kind, correct, *sorted(distractors))
        if _in_split(_text_bucket(key), split, (0,)):
            return text, correct, distractors
    raise RuntimeError(f"no {split} item found for text task {kind!r} in slot {slot}")


def text_qa(
    context: ToyContext, rng: np.random.Generator, count: int, split: str, dealer: AnswerSlotDealer | None = None
) -> list[ToyQuestion]:
    """Text-only questions (no image); items are split between train and eval by hash."""
    _check_split(split)
    kinds = _balanced(TEXT_KINDS, count, rng)
    allowed = [tuple(sorted(_listed_text_items(k, split))) if k in LISTED_TEXT_KINDS else ALL_SLOTS for k in kinds]
    questions = []
    for kind, slot in zip(kinds, _deal(dealer, allowed, rng)):
        text, correct, distractors = _text_item(kind, slot, split, rng)
        questions.append(ToyQuestion(None, text, correct, distractors, {"task": f"text:{kind}"}))
    return questions
