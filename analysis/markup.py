"""HTML of the report: the Jinja2 templates in analysis/templates and the one place markup is made.

    html = render("table1_page.html.j2", title=title, table=table, legend=legend_lines(table))
    rich_text("Δ OOD^T-ID^I (pp)")    # Markup('Δ OOD<sup>T</sup>-ID<sup>I</sup> (pp)')

Templates are autoescaped: every value is text unless it is ``Markup``, and the only Markup
the report makes is here (``rich_text``: quadrant names with superscripts; ``legend_html``:
the colour words of the Table 1 legend in their colours; ``render``: a rendered template, so
a section can be placed in the page). Templates use both as filters: ``{{ name|rich }}``.
"""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).with_name("templates")
"""Folder of the templates (package data)."""
_QUADRANT_NAME = re.compile(r"(ID|OOD)\^T-(ID|OOD)\^I")
_TONE_WORDS = (("(red)", "drop"), ("(blue)", "stable"), ("(grey row)", "kept"))
"""Words of the legend shown in the colour of a cell tone (CSS class)."""


def rich_text(text: str) -> Markup:
    """Escaped text with plain quadrant names (OOD^T-ID^I) written with <sup>."""
    return Markup(_QUADRANT_NAME.sub(r"\1<sup>T</sup>-\2<sup>I</sup>", str(escape(text))))


def legend_html(line: str) -> Markup:
    """A legend line as ``rich_text``, with the colour words in their colours."""
    text = rich_text(line)
    for word, tone in _TONE_WORDS:
        text = text.replace(escape(word), Markup('<span class="{}">{}</span>').format(tone, word))
    return text


ENVIRONMENT = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
ENVIRONMENT.filters.update(rich=rich_text, legend=legend_html)


def render(template: str, **context) -> Markup:
    """The template rendered with ``context`` (values are escaped unless they are Markup)."""
    return Markup(ENVIRONMENT.get_template(template).render(**context))


def macro(template: str, name: str):
    """A macro of a template as a function returning Markup, e.g. ``macro("table1.html.j2", "table")``."""
    return getattr(ENVIRONMENT.get_template(template).module, name)
