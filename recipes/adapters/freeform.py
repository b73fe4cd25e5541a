"""python -m recipes.data adapt {mllm-cl,llava-instruct,vqa} --input PATH --out FILE [--domain D | --matcher NAME]

Converters of the formats whose rows may be free-form: a split of an MLLM-CL domain
(multiple-choice rows become MCQ records, the others free-form records scored by the domain's
matcher), LLaVA-Instruct / ShareGPT conversations and free-form VQA rows become records of the
data contract (``ValueError`` for a bad row). The formats are described in
``recipes.adapters.formats``, whose ``adapt`` reads the rows and calls these.

    from recipes.adapters.freeform import vqa_record
    record = vqa_record(row, "line 2", source="ocr-vqa", base_dir="/data/ocr-vqa", matcher="exact")
"""

from __future__ import annotations

import posixpath
from typing import Any

from recipes.adapters.rows import OPTION_LINE, extra_meta, image_bytes, is_missing, question_and_options
from recipes.common.storage import parent_dir
from recipes.data.prompts import IMAGE_PLACEHOLDER
from recipes.data.schema import ASSISTANT_ROLE, FREEFORM_KIND, LETTERS, USER_ROLE

IMAGE_TOKEN = "<image>"
"""LLaVA's image placeholder at the start of a prompt."""

MLLM_CL_MATCHERS = {"RS": "rs", "Med": "med", "AD": "ad", "Sci": "sci", "Fin": "fin"}
"""MLLM-CL domain -> the matcher of its free-form answers (the paper's Listings 2-5)."""


def mllm_cl_answer(answer: str, options: list[str]) -> str:
    """The answer letter of an MLLM-CL answer: "B", "B. text" / "(B)", or an option's text."""
    text = answer.strip()
    match = OPTION_LINE.match(text)
    if match and match.group(1) in LETTERS[: len(options)]:
        return match.group(1)
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return text.upper()
    lowered = [option.strip().lower() for option in options]
    if text.lower() in lowered:
        return LETTERS[lowered.index(text.lower())]
    raise ValueError(f"answer {answer!r} is neither an option letter nor an option's text")


def freeform_fields(matcher: str, images: list[bytes], history: list[dict] | None = None) -> dict:
    """The free-form columns of a record: its kind, its matcher, its images after the first, its history."""
    return {"kind": FREEFORM_KIND, "matcher": matcher, "extra_images": images[1:], "history": history or []}


def mllm_cl_record(row: dict, location: str, *, source: str, base_dir: str, matcher: str = "exact") -> dict:
    """A row of an MLLM-CL ``train.json`` (LLaVA ``conversations``) or ``test.json`` (``text``, ``answer``).

    Multiple-choice rows (lettered option lines, or inline "Options: A. ... B. ...") become MCQ
    records; every other row a free-form record scored by ``matcher`` (the domain's).
    """
    if "conversations" in row:
        turns = row["conversations"] or []
        human = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "human"), None)
        answer = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "gpt"), None)
    else:
        human, answer = row.get("text", row.get("question")), row.get("answer")
    if not isinstance(human, str) or not isinstance(answer, str):
        raise ValueError("expected conversations (human, gpt) or text and answer")
    identifier = row.get("id", row.get("question_id"))
    image = image_bytes(row.get("image"), base_dir)
    record = {
        "id": f"{source}-{identifier}" if not is_missing(identifier) else f"{source}-{location.split()[-1]}",
        "image": image,
        "source": source,
    }
    meta = {"image_path": row.get("image")}
    meta.update(extra_meta(row, {"id", "question_id", "image", "conversations", "text", "question", "answer"}))
    try:
        question, options, instruction = question_and_options(human.replace(IMAGE_TOKEN, "").strip())
    except ValueError:
        if not answer.strip():
            raise ValueError("answer is empty") from None
        text = human.replace(IMAGE_TOKEN, "").strip() if image is None else human.strip()
        return {**record, "question": text, "options": [], "answer": answer.strip(), "meta": meta,
                **freeform_fields(matcher, [image] if image is not None else [])}  # fmt: skip
    meta["instruction"] = instruction
    return {**record, "question": question, "options": options, "answer": mllm_cl_answer(answer, options), "meta": meta}


LLAVA_ROLES = {"human": USER_ROLE, "user": USER_ROLE, "gpt": ASSISTANT_ROLE, "assistant": ASSISTANT_ROLE}
"""ShareGPT ``from`` values -> contract roles (``system`` turns are left out)."""


def _image_list(value: Any, base_dir: str) -> list[bytes]:
    """Images of a source value: one image, a list of them, or nothing."""
    values = value if isinstance(value, list) else [value]
    return [data for data in (image_bytes(item, base_dir) for item in values) if data is not None]


def _check_placeholders(texts: list[str], images: list[bytes]) -> None:
    """ValueError when the texts have more ``<image>`` placeholders than the row has images."""
    count = sum(len(IMAGE_PLACEHOLDER.findall(text)) for text in texts)
    if count and not images:
        raise ValueError(f"has {count} image placeholder(s) but no image")


def llava_instruct_record(row: dict, location: str, *, source: str, base_dir: str, matcher: str = "exact") -> dict:
    """A LLaVA-Instruct / ShareGPT row ``{id, image, conversations: [{from: human|gpt, value}]}`` as a free-form record.

    The last human turn is the question and the gpt reply to it the answer; the turns before
    are the history. ``image`` may be a path, a list of paths or absent (text-only rows).
    """
    conversations = row.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ValueError("conversations must be a non-empty list of {from, value} turns")
    turns = []
    for position, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{position}] must be an object with a string value")
        speaker = turn.get("from")
        if speaker == "system":
            continue
        if speaker not in LLAVA_ROLES:
            raise ValueError(f"conversations[{position}].from is {speaker!r}; expected human or gpt")
        expected = USER_ROLE if len(turns) % 2 == 0 else ASSISTANT_ROLE
        if LLAVA_ROLES[speaker] != expected:
            raise ValueError(f"conversations[{position}].from is {speaker!r}; turns must alternate human, gpt, ...")
        turns.append({"role": expected, "text": turn["value"].strip()})
    if len(turns) < 2 or len(turns) % 2:
        raise ValueError("conversations must end with a gpt turn answering a human turn")
    images = _image_list(row.get("image"), base_dir)
    _check_placeholders([turn["text"] for turn in turns], images)
    identifier = row.get("id")
    meta = {"image_path": row.get("image")} if row.get("image") is not None else {}
    meta.update(extra_meta(row, {"id", "image", "conversations"}))
    return {
        "id": f"{source}-{identifier}" if not is_missing(identifier) else f"{source}-{location.split()[-1]}",
        "image": images[0] if images else None,
        "question": turns[-2]["text"],
        "options": [],
        "answer": turns[-1]["text"],
        "source": source,
        "meta": meta,
        **freeform_fields(matcher, images, turns[:-2]),
    }


def vqa_record(row: dict, location: str, *, source: str, base_dir: str, matcher: str = "exact") -> dict:
    """A free-form VQA row (OCR-VQA style): ``question`` and ``answer`` (or ``answers``, the first kept).

    ``image`` (or ``images``, a list) is a path, base64 text or bytes; ``id`` or ``question_id``
    names the row; other fields go to meta.
    """
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is missing or empty")
    answer = row.get("answer")
    if answer is None and isinstance(row.get("answers"), list) and row["answers"]:
        answer = row["answers"][0]
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError("answer is missing or empty (give answer, or answers as a list)")
    images = _image_list(row.get("images", row.get("image")), base_dir)
    _check_placeholders([question], images)
    identifier = row.get("id", row.get("question_id"))
    meta = extra_meta(row, {"id", "question_id", "image", "images", "question", "answer", "answers"})
    return {
        "id": f"{source}-{identifier}" if not is_missing(identifier) else f"{source}-{location.split()[-1]}",
        "image": images[0] if images else None,
        "question": question.strip(),
        "options": [],
        "answer": answer.strip(),
        "source": source,
        "meta": meta,
        **freeform_fields(matcher, images),
    }


def mllm_cl_domain(path: str, source: str) -> str:
    """The MLLM-CL domain of a split file: its folder name (``RS/train.json``) or the dataset name's prefix."""
    candidates = [posixpath.basename(parent_dir(path).rstrip("/")), source.split("-")[0], source]
    for candidate in candidates:
        for domain in MLLM_CL_MATCHERS:
            if candidate.lower() == domain.lower():
                return domain
    raise ValueError(
        f"{path}: cannot tell the MLLM-CL domain from the folder or the dataset name {source!r}; "
        f"pass --domain ({', '.join(MLLM_CL_MATCHERS)})"
    )
