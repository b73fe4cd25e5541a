"""The user prompt text of a multiple-choice question (model-family independent).

    from recipes.data.prompts import mcq_prompt
    mcq_prompt("What is the class of this image?", ["red circle", "blue square", "green star", "red star"])
    # 'What is the class of this image?\\nA. red circle\\nB. blue square\\nC. green star\\nD. red star\\n'
    # 'Please answer with a single letter (A, B, C, or D).'

The text follows the paper's evaluation protocol (Appendix B.1): the question, the lettered
options one per line, then the formatting instruction "Please answer with a single letter (A, B,
C, or D)." with the letters of the question's own options, so that the result depends on what the
model knows and not on how it formats its answer. The question text is the dataset's (the
classification builders write ``CLASS_QUESTION``, "What is the class of this image?"). The chat
template, image placeholders and tokenization belong to ``recipes.data.collate``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from recipes.data.schema import option_letter

IMAGE_PLACEHOLDER = re.compile(r"<image(?: ?(\d+))?>")
"""An image's place in a text: ``<image>`` (the next image) or ``<image k>`` (image k, from 1)."""

CLASS_QUESTION = "What is the class of this image?"
"""The classification question of the paper's protocol (Appendix B.1): ImageNet-VQA, every class-folder set and the toy world."""

MCQ_INSTRUCTION_TEMPLATE = "Please answer with a single letter ({letters})."
"""The last line of every MCQ prompt; ``{letters}`` lists the question's option letters."""


def mcq_instruction(option_count: int) -> str:
    """The formatting instruction for ``option_count`` options: "... (A, B, C, or D)." for four."""
    if option_count < 1:
        raise ValueError("mcq_instruction needs at least one option")
    letters = [option_letter(position) for position in range(option_count)]
    if len(letters) == 1:
        listed = letters[0]
    elif len(letters) == 2:
        listed = f"{letters[0]} or {letters[1]}"
    else:
        listed = f"{', '.join(letters[:-1])}, or {letters[-1]}"
    return MCQ_INSTRUCTION_TEMPLATE.format(letters=listed)


def mcq_prompt(question: str, options: Sequence[str]) -> str:
    """The user prompt: question, "A. option" lines, then ``mcq_instruction`` for the options."""
    if not options:
        raise ValueError("mcq_prompt needs at least one option")
    lines = [question.strip()]
    lines += [f"{option_letter(position)}. {option}" for position, option in enumerate(options)]
    lines.append(mcq_instruction(len(options)))
    return "\n".join(lines)
