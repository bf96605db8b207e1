"""Text from models and users shown as text: Streamlit renders Markdown (and :emoji: and :color[]
directives) in titles, captions, messages and table cells, so escape what did not come from us."""

from __future__ import annotations

import re

_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|~$:{}])")


def md(text: object) -> str:
    """`text` with every Markdown-active character backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", str(text))
