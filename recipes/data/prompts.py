"""The user prompt text of a multiple-choice question (model-family independent).

    from recipes.data.prompts import mcq_prompt
    mcq_prompt("What is the main object in this image?", ["red circle", "blue square"])
    # 'What is the main object in this image?\\nA. red circle\\nB. blue square\\n'
    # "Answer with the option's letter from the given choices directly."

The text follows the LLaVA / Qwen2.5-VL multiple-choice evaluation prompt: the question, the
lettered options one per line, then the instruction to answer with the letter only. The chat
template, image placeholders and tokenization belong to ``recipes.data.collate``.
"""

from __future__ import annotations

import re
from typing import Sequence

from recipes.data.schema import option_letter

IMAGE_PLACEHOLDER = re.compile(r"<image(?: ?(\d+))?>")
"""An image's place in a text: ``<image>`` (the next image) or ``<image k>`` (image k, from 1)."""

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
"""The last line of every MCQ prompt."""


def mcq_prompt(question: str, options: Sequence[str]) -> str:
    """The user prompt: question, "A. option" lines, then ``MCQ_INSTRUCTION``."""
    if not options:
        raise ValueError("mcq_prompt needs at least one option")
    lines = [question.strip()]
    lines += [f"{option_letter(position)}. {option}" for position, option in enumerate(options)]
    lines.append(MCQ_INSTRUCTION)
    return "\n".join(lines)
