"""A lesson's question: what it asks, the answer the app computed from the model, and the check of a
student's answer against it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

CHOICE, MANY, NUMBER = "choice", "many", "number"


@dataclass(frozen=True)
class Question:
    """`prompt` is Markdown (token strings in it already escaped). For CHOICE the answer is one of
    `options`; for MANY, the tuple of options that are right (order free); for NUMBER, a float, and an
    answer within `tolerance` of it (absolute) is right. `why` says how the model gives the answer."""

    prompt: str
    kind: str
    answer: object
    options: tuple[str, ...] = ()
    tolerance: float = 0.0
    why: str = ""
    unit: str = ""  # NUMBER: what the number counts, shown beside the box

    def __post_init__(self) -> None:
        if self.kind == CHOICE and self.answer not in self.options:
            raise ValueError(f"The answer {self.answer!r} is not among the options {self.options!r}")
        if self.kind == MANY and not set(self.answer) <= set(self.options):
            raise ValueError(f"The answers {self.answer!r} are not all among the options {self.options!r}")

    def check(self, given) -> bool:
        """Whether `given` (an option, a list of options, or the text typed for a number) is right."""
        if self.kind == CHOICE:
            return given == self.answer
        if self.kind == MANY:
            return set(given or ()) == set(self.answer)
        value = parse_number(given)
        return value is not None and abs(value - float(self.answer)) <= self.tolerance

    def answer_text(self) -> str:
        """The answer as a student would give it (Markdown-free: the page escapes it)."""
        if self.kind == CHOICE:
            return str(self.answer)
        if self.kind == MANY:
            return ", ".join(o for o in self.options if o in self.answer)
        return number_text(float(self.answer), self.tolerance)


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$")


def parse_number(text) -> float | None:
    """A number typed by a person: spaces, thin spaces and thousands separators (1,234 or 1 234) are
    allowed, a decimal comma when there is no point and one comma (0,25); None for anything else."""
    if text is None:
        return None
    s = re.sub(r"[\s\u202f\u2009_']", "", str(text)).lower()
    if "." not in s and s.count(",") == 1 and not re.fullmatch(r"[+-]?\d{1,3},\d{3}", s):
        s = s.replace(",", ".")
    s = s.replace(",", "")
    if not _NUMBER.match(s):
        return None
    value = float(s)
    return value if math.isfinite(value) else None


def number_text(value: float, tolerance: float = 0.0) -> str:
    """`value` with as many decimals as the tolerance asks for (an integer without any)."""
    if tolerance < 0.5 and tolerance > 0:
        decimals = max(0, math.ceil(-math.log10(tolerance)) + 1)
        return f"{value:.{decimals}f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:g}"
