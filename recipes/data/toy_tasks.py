"""The question types of the toy world, each with a train and an eval split.

Every task is a function ``task(context, rng, count, split) -> list[ToyQuestion]``; the toy world
(``recipes.data.toy_world``) combines them into datasets and lays out their options with
balanced answer letters. The splits never share a picture or an item:

- shape scenes are split by a stable hash of what the picture shows (class, renderer, style,
  object pixels): one bucket in ``EVAL_BUCKETS`` is eval-only, the others train-only;
- scikit-learn digits are split by index (a seeded permutation: eval classification, eval
  tasks, train);
- text-only items are split by a stable hash of the item (question and options).

Tasks (ID text = "What is the main object in this image?"):

==================  ==============================================================
classify            the target task: the class of a shape scene, 3 distractors from the
                    5 most similar classes (shared attributes)
digits_classify     the same question on digits ("the digit 3")
attributes          colour / texture / shape / position / count of a shape scene
wiki                a made-up fact about the class: made of (by shape), lives in (by
                    colour), eats (by texture); with ``classname_probe`` one distractor
                    is the class name (the paper's class-label distractor probe)
digit_tasks         parity, comparison with five, plus one, times two of a digit
text_qa             text only: addition, which word is a colour / shape, what comes next,
                    largest number
==================  ==============================================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from recipes.data.class_folder import IMAGENET_QUESTION
from recipes.data.distractors import DistractorSampler
from recipes.data.toy_images import (
    COLOURS,
    SHAPES,
    TEXTURES,
    TOY_CLASSES,
    Placement,
    Scene,
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


@dataclass
class ToyQuestion:
    """A question before its options are laid out."""

    image: bytes | None
    """PNG bytes, or None for text-only questions."""
    question: str
    """The question text."""
    correct: str
    """The correct option."""
    distractors: list[str]
    """The wrong options (three)."""
    meta: dict = field(default_factory=dict)
    """Task, class and scene details (the record's meta)."""


@dataclass
class ToyContext:
    """What every task needs: image size, the class distractor pools and the digits."""

    image_size: int
    """Side of the square images in pixels."""
    seed: int
    """The world seed (distractor tie-breaks, digit splits)."""

    @cached_property
    def class_sampler(self) -> DistractorSampler:
        """Pools of the 5 classes sharing most attributes with each class (ties broken by the seed)."""
        return DistractorSampler.from_similarity(
            [c.name for c in TOY_CLASSES], attribute_similarity(), pool_size=5, seed=self.seed
        )

    @cached_property
    def digits(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        data = load_digits()
        return data.images, data.target

    @cached_property
    def digit_splits(self) -> dict[str, np.ndarray]:
        order = np.random.default_rng([self.seed, 0xD161]).permutation(len(self.digits[1]))
        first, second = DIGIT_EVAL_CLASSIFY, DIGIT_EVAL_CLASSIFY + DIGIT_EVAL_TASKS
        return {"eval-classify": order[:first], "eval-tasks": order[first:second], "train": order[second:]}

    def digit_indices(self, rng: np.random.Generator, count: int, split: str, purpose: str) -> np.ndarray:
        pool = self.digit_splits["train" if split == "train" else f"eval-{purpose}"]
        return rng.choice(pool, size=count, replace=count > len(pool))


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
    variant: str = "plain",
    styles: tuple[str, ...] = ("plain",),
) -> list[ToyQuestion]:
    """The target task: "What is the main object in this image?" -> the class name."""
    questions = []
    for class_index, style in zip(_balanced(range(len(TOY_CLASSES)), count, rng), _balanced(styles, count, rng)):
        scene = sample_scene(rng, context.image_size, split, class_index, variant, style)
        distractors = context.class_sampler.sample_names(class_index, 3, rng)
        meta = {"task": "classify", **_class_meta(class_index, scene)}
        questions.append(
            ToyQuestion(
                _scene_png(context, scene, rng), IMAGENET_QUESTION, TOY_CLASSES[class_index].name, distractors, meta
            )
        )
    return questions


def _others(values, correct, rng: np.random.Generator, count: int = 3, extra: tuple[str, ...] = ()) -> list[str]:
    pool = [v for v in values if v != correct] + list(extra)
    return [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]


def attributes(context: ToyContext, rng: np.random.Generator, count: int, split: str) -> list[ToyQuestion]:
    """Other questions about target-style scenes: colour, texture, shape, position, count."""
    questions = []
    kinds = _balanced(("colour", "texture", "shape", "position", "count"), count, rng)
    for kind, class_index in zip(kinds, _balanced(range(len(TOY_CLASSES)), count, rng)):
        toy_class = TOY_CLASSES[class_index]
        if kind == "position":
            quadrant = (int(rng.integers(2)), int(rng.integers(2)))
            scene = sample_scene(rng, context.image_size, split, class_index, copies=1, quadrant=quadrant)
            text, correct, distractors = (
                "Where is the object?",
                QUADRANT_NAMES[quadrant],
                _others(QUADRANT_NAMES.values(), QUADRANT_NAMES[quadrant], rng),
            )
        elif kind == "count":
            copies = int(rng.integers(1, 5))
            scene = sample_scene(rng, context.image_size, split, class_index, copies=copies)
            text, correct = "How many objects are in the image?", COUNT_WORDS[copies - 1]
            distractors = _others(COUNT_WORDS, correct, rng)
        else:
            scene = sample_scene(rng, context.image_size, split, class_index)
            text, correct, distractors = {
                "colour": ("What colour is the object?", toy_class.colour, _others(COLOURS, toy_class.colour, rng)),
                "texture": (
                    "What pattern does the object have?",
                    toy_class.texture,
                    _others(TEXTURES, toy_class.texture, rng, extra=("checkered",)),
                ),
                "shape": ("What shape is the object?", toy_class.shape, _others(SHAPES, toy_class.shape, rng)),
            }[kind]
        meta = {"task": f"attribute:{kind}", **_class_meta(class_index, scene)}
        questions.append(ToyQuestion(_scene_png(context, scene, rng), text, correct, distractors, meta))
    return questions


def wiki(
    context: ToyContext, rng: np.random.Generator, count: int, split: str, classname_probe: bool = False
) -> list[ToyQuestion]:
    """ImageWikiQA-like made-up facts about the class; ``classname_probe`` puts the class name among the options."""
    questions = []
    kinds = _balanced(WIKI_FACTS, count, rng)
    for kind, class_index in zip(kinds, _balanced(range(len(TOY_CLASSES)), count, rng)):
        toy_class = TOY_CLASSES[class_index]
        text, attribute, facts, never = WIKI_FACTS[kind]
        correct = facts[getattr(toy_class, attribute)]
        distractors = _others(facts.values(), correct, rng, extra=never)
        scene = sample_scene(rng, context.image_size, split, class_index)
        meta = {"task": f"wiki:{kind}", **_class_meta(class_index, scene)}
        if classname_probe:
            distractors[int(rng.integers(len(distractors)))] = toy_class.name
            meta["classname_probe"] = True
        questions.append(ToyQuestion(_scene_png(context, scene, rng), text, correct, distractors, meta))
    return questions


# ---------------------------------------------------------------------------------------------
# Tasks on digits


def _digit_png(context: ToyContext, index: int, rng: np.random.Generator) -> bytes:
    return encode_png(digit_image(context.digits[0][index], context.image_size, rng))


def digits_classify(context: ToyContext, rng: np.random.Generator, count: int, split: str) -> list[ToyQuestion]:
    """The target question on real digits: the answer is "the digit N"."""
    questions = []
    for index in context.digit_indices(rng, count, split, "classify"):
        digit = int(context.digits[1][index])
        names = [f"the digit {d}" for d in range(10)]
        meta = {"task": "digits", "digit": digit, "digit_index": int(index)}
        questions.append(
            ToyQuestion(
                _digit_png(context, index, rng),
                IMAGENET_QUESTION,
                names[digit],
                _others(names, names[digit], rng),
                meta,
            )
        )
    return questions


def _near_numbers(correct: int, low: int, high: int, rng: np.random.Generator) -> list[str]:
    candidates = [n for n in range(max(low, correct - 4), min(high, correct + 4) + 1) if n != correct]
    return [str(candidates[i]) for i in rng.choice(len(candidates), size=3, replace=False)]


COMPARE_FIVE = ("smaller than five", "equal to five", "bigger than five")


def digit_tasks(context: ToyContext, rng: np.random.Generator, count: int, split: str) -> list[ToyQuestion]:
    """Other tasks on digit images: parity, comparison with five, plus one, times two."""
    questions = []
    kinds = _balanced(("parity", "compare", "plus one", "times two"), count, rng)
    for kind, index in zip(kinds, context.digit_indices(rng, count, split, "tasks")):
        digit = int(context.digits[1][index])
        if kind == "parity":
            correct = "even" if digit % 2 == 0 else "odd"
            text, distractors = "Is this digit even or odd?", _others(("even", "odd", "both", "neither"), correct, rng)
        elif kind == "compare":
            correct = COMPARE_FIVE[(digit > 5) + (digit >= 5)]
            text, distractors = (
                "How does this digit compare to five?",
                _others(COMPARE_FIVE, correct, rng, extra=("not a number",)),
            )
        elif kind == "plus one":
            text, correct, distractors = (
                "What is this digit plus one?",
                str(digit + 1),
                _near_numbers(digit + 1, 0, 10, rng),
            )
        else:
            text, correct, distractors = (
                "What is this digit times two?",
                str(2 * digit),
                _near_numbers(2 * digit, 0, 18, rng),
            )
        meta = {"task": f"digit:{kind}", "digit": digit, "digit_index": int(index)}
        questions.append(ToyQuestion(_digit_png(context, index, rng), text, correct, distractors, meta))
    return questions


# ---------------------------------------------------------------------------------------------
# Text-only tasks


def _text_item(kind: str, rng: np.random.Generator) -> tuple[str, str, list[str], tuple]:
    """(question, correct, distractors, item key); the key decides the item's split."""
    if kind == "add":
        a, b = (int(x) for x in rng.integers(0, 10, size=2))
        text = f"What is {a} plus {b}?"
        return text, str(a + b), _near_numbers(a + b, 0, 18, rng), (text,)
    if kind in ("colour word", "shape word"):
        words = COLOUR_WORDS if kind == "colour word" else SHAPE_WORDS
        correct, distractors = str(rng.choice(words)), _others(PLAIN_WORDS, None, rng)
        return f"Which word is a {kind.split()[0]}?", correct, distractors, (kind, correct, *sorted(distractors))
    if kind == "what comes next":
        sequence = SEQUENCES[int(rng.integers(len(SEQUENCES)))]
        position = int(rng.integers(len(sequence) - 1))
        following = sequence[position + 1]
        text = f"Which word comes after {sequence[position]}?"
        return text, following, _others(sequence, following, rng), (text,)
    if kind == "largest":
        numbers = sorted(int(n) for n in rng.choice(100, size=4, replace=False))
        return "Which number is the largest?", str(numbers[-1]), [str(n) for n in numbers[:-1]], (kind, *numbers)
    raise ValueError(f"unknown text task {kind!r}")


def text_qa(context: ToyContext, rng: np.random.Generator, count: int, split: str) -> list[ToyQuestion]:
    """Text-only questions (no image); items are split between train and eval by hash."""
    _check_split(split)
    questions = []
    for kind in _balanced(("add", "colour word", "shape word", "what comes next", "largest"), count, rng):
        for _ in range(MAX_TRIES):
            text, correct, distractors, key = _text_item(kind, rng)
            bucket = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big") % TEXT_BUCKETS
            if _in_split(bucket, split, (0,)):
                break
        else:
            raise RuntimeError(f"no {split} item found for text task {kind!r}")
        questions.append(ToyQuestion(None, text, correct, distractors, {"task": f"text:{kind}"}))
    return questions
