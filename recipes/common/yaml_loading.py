"""Read YAML the product is given (grids, suites) safely and within bounds.

``yaml.safe_load`` builds no objects but still expands aliases without limit (a few hundred
bytes of nested aliases become gigabytes) and recurses once per nesting level (a file nested a
few thousand deep ends in ``RecursionError``). ``load_yaml_text`` walks the file's event stream
first, without building anything, and refuses both:

    from recipes.common.yaml_loading import YamlError, load_yaml_text
    try:
        data = load_yaml_text(text)
    except YamlError as error:
        print(error)      # "YAML aliases expand to more than 10000 values ..." or a syntax error with line/column
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 40
"""Deepest nesting of lists and mappings a file may have."""

MAX_EXPANDED_NODES = 10_000
"""Most values a file may hold once its aliases are expanded (grids and suites hold hundreds)."""


class YamlError(ValueError):
    """A YAML text that is malformed, nested too deep or expands too far; the message says which, with a line."""


def _line(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"


def check_yaml_bounds(text: str) -> None:
    """YamlError when ``text`` nests deeper than ``MAX_DEPTH`` or expands past ``MAX_EXPANDED_NODES`` values."""
    sizes: dict[str, int] = {}
    stack: list[list] = [[0, None]]  # [values so far, anchor] per open collection
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) > MAX_DEPTH:
                raise YamlError(f"nested more than {MAX_DEPTH} levels deep at {_line(event)}")
            stack.append([1, event.anchor])
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size, anchor = stack.pop()
            added = size
        elif isinstance(event, yaml.ScalarEvent):
            anchor, added = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, added = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor:
            sizes[anchor] = added
        stack[-1][0] += added
        if stack[-1][0] > MAX_EXPANDED_NODES or (added > MAX_EXPANDED_NODES):
            raise YamlError(
                f"holds more than {MAX_EXPANDED_NODES} values once its aliases are expanded "
                f"(at {_line(event)}); a grid or suite file needs far fewer"
            )


def _syntax_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    what = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"YAML syntax error: {what}"
    return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {what}"


def compose_yaml_text(text: str) -> yaml.Node | None:
    """The node tree of ``text`` (for line numbers), after the bounds check; YamlError when it fails."""
    try:
        check_yaml_bounds(text)
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise YamlError(_syntax_problem(error)) from None


def load_yaml_text(text: str) -> Any:
    """The data of a YAML text, loaded safely (plain types only) within the bounds; YamlError otherwise."""
    compose_yaml_text(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise YamlError(_syntax_problem(error)) from None
    except ValueError as error:  # a scalar the constructor cannot convert, e.g. an integer of 5,000 digits
        raise YamlError(f"YAML value cannot be read: {str(error).split(';')[0]}") from None
