"""Text from models and users shown as text, escaped once for the place it goes: Streamlit renders Markdown
(and :emoji: and :color[] directives) in titles, captions, messages and table cells (`md`); Plotly renders a
subset of HTML in titles, tick labels, annotations, cell text and hover labels (`plotly_text`)."""

from __future__ import annotations

import re
from html import escape

_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|~$:{}])")


def md(text: object) -> str:
    """`text` with every Markdown-active character backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def plotly_text(text: object) -> str:
    """`text` for a place where Plotly reads HTML: <, > and & escaped, so that a token `</s>` or `<b>` shows
    as itself. Quotes stay as they are: Plotly does not decode `&quot;` (it showed literally)."""
    return escape(str(text), quote=False)
