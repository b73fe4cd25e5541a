"""Read JSON the product is given (jsonl rows, config.json, trainer state, prediction files) within bounds.

``json.loads`` recurses once per nesting level: a line nested a few hundred thousand deep ends in
``RecursionError``, and one nested a few hundred deep parses but breaks whatever walks it next.
``load_json`` refuses nesting past ``MAX_DEPTH`` before parsing (a C-speed count skips the scan
for ordinary rows) and names the file or line in every error:

    from recipes.common.json_loading import load_json
    row = load_json(raw, "data/set.jsonl: line 3")   # InputError "data/set.jsonl: line 3: nested ..."
"""

from __future__ import annotations

import json
from typing import Any

from recipes.common.input_errors import InputError, describe
from recipes.common.redaction import redact

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a JSON value may have (data rows and configs use under 10)."""


def json_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep ``text`` nests (stops counting once past ``limit``); brackets inside strings do not count."""
    if text.count("[") + text.count("{") <= limit:
        return 0  # cannot nest past the limit
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(text: str | bytes) -> Any:
    """The value of JSON ``text``; ValueError saying what is wrong (not UTF-8, not JSON, too deep), without a location.

    A leading byte-order mark is ignored.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        text = text.removeprefix("\ufeff")
        if json_depth(text) > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(describe(error)) from None
    except ValueError as error:  # json's own: an integer of more than 4300 digits
        raise ValueError(" ".join(str(error).split(";")[0].split())) from None


def load_json(text: str | bytes, where: str) -> Any:
    """The value of JSON ``text``; ``InputError("<where>: ...")`` when it is not UTF-8, not JSON or too deep."""
    try:
        return parse_json(text)
    except ValueError as error:
        raise InputError(f"{redact(where)}: {error}") from None
