"""Dates written many ways, and their ISO form: the data of the embedded date normalizer.

`render(day, fmt, rng)` writes a `datetime.date` in one of `FORMATS` ("23rd Nov 2026", "Monday,
November 23, 2026", "23.11.2026" ...); the target is always `day.isoformat()` ("2026-11-23"). Weekdays,
when written, are the date's own. A fixed 5 % of the days of 1900-2099 is held out (`split_days`): the
model never trains on them, and its accuracy is measured on them.

`char_tokenizer()` is the model's tokenizer: one token per character, `</s>` appended, saved as a
plain `tokenizer.json` that `AutoTokenizer.from_pretrained` reads.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import string
from typing import Any

FIRST_YEAR, LAST_YEAR = 1900, 2099
HOLDOUT_SEED = 20261123
HOLDOUT_FRACTION = 0.05

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# The format names: per-format accuracy is reported under these.
FORMATS = (
    "iso",  # 2026-11-23
    "numeric-slash",  # 23/11/2026, 3/1/2026 (day first)
    "numeric-dot",  # 23.11.2026
    "numeric-dash",  # 23-11-2026
    "day-month-year",  # 23rd Nov 2026, Monday 23 November, 2026
    "month-day-year",  # November 23, 2026, Mon, Nov 23rd 2026
    "day-of-month-year",  # the 23rd of November 2026
    "year-month-day",  # 2026 November 23, 2026, Nov. 23rd
)

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIALS = [PAD, EOS, UNK]  # ids 0, 1, 2: T5's pad (also the decoder start) and eos
SUFFIXES = {1: "st", 2: "nd", 3: "rd"}
CHARACTERS = " ,-./" + string.digits + string.ascii_uppercase + string.ascii_lowercase


def ordinal(n: int) -> str:
    """1 -> 1st, 2 -> 2nd, 11 -> 11th, 23 -> 23rd."""
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{SUFFIXES.get(n % 10, 'th')}"


def all_days() -> list[dt.date]:
    start, end = dt.date(FIRST_YEAR, 1, 1), dt.date(LAST_YEAR, 12, 31)
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def split_days() -> tuple[list[dt.date], list[dt.date]]:
    """(train days, held-out days): the same split on every machine (a seeded shuffle)."""
    days = all_days()
    random.Random(HOLDOUT_SEED).shuffle(days)
    cut = int(len(days) * HOLDOUT_FRACTION)
    return sorted(days[cut:]), sorted(days[:cut])


def _month(day: dt.date, rng: random.Random) -> str:
    full = MONTHS[day.month - 1]
    if rng.random() < 0.5:
        return full
    abbr = "Sept" if day.month == 9 and rng.random() < 0.3 else full[:3]
    return abbr + "." if abbr != full and rng.random() < 0.25 else abbr


def _day(day: dt.date, rng: random.Random) -> str:
    if rng.random() < 0.4:
        return ordinal(day.day)
    return f"{day.day:02d}" if rng.random() < 0.2 else str(day.day)


def _weekday(day: dt.date, rng: random.Random) -> str:
    """'' or the date's weekday ('Monday, ', 'Mon '), in front of the date."""
    if rng.random() < 0.6:
        return ""
    name = WEEKDAYS[day.weekday()]
    name = name if rng.random() < 0.5 else name[:3]
    return name + rng.choice([", ", " "])


def _numeric(day: dt.date, sep: str, rng: random.Random) -> str:
    pad = rng.random() < 0.6
    d, m = (f"{day.day:02d}", f"{day.month:02d}") if pad else (str(day.day), str(day.month))
    return f"{d}{sep}{m}{sep}{day.year}"


def render(day: dt.date, fmt: str, rng: random.Random) -> str:
    """`day` written in format `fmt` (one of FORMATS), with the variations drawn from `rng`."""
    if fmt == "iso":
        return day.isoformat()
    if fmt.startswith("numeric-"):
        sep = {"numeric-slash": "/", "numeric-dot": ".", "numeric-dash": "-"}[fmt]
        text = _numeric(day, sep, rng)
        return (_weekday(day, rng) if rng.random() < 0.5 else "") + text
    month, year = _month(day, rng), str(day.year)
    if fmt == "day-month-year":
        text = f"{_day(day, rng)} {month}{rng.choice([' ', ', '])}{year}"
    elif fmt == "month-day-year":
        text = f"{month} {_day(day, rng)}{rng.choice([', ', ' '])}{year}"
    elif fmt == "day-of-month-year":
        the = "the " if rng.random() < 0.3 else ""
        text = f"{the}{ordinal(day.day)} of {month}{rng.choice([' ', ', '])}{year}"
    elif fmt == "year-month-day":
        text = f"{year}{rng.choice([' ', ', '])}{month} {_day(day, rng)}"
    else:
        raise ValueError(f"unknown date format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt != "year-month-day":  # "Monday 2026 Nov 23" is written by nobody
        text = _weekday(day, rng) + text
    case = rng.random()
    return text.lower() if case < 0.15 else text.upper() if case < 0.25 else text


def examples(days: list[dt.date], n: int, seed: int) -> list[tuple[str, str, str]]:
    """n (source, target, format) triples: formats in turn, days drawn from `days` with `seed`."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        day = rng.choice(days)
        fmt = FORMATS[i % len(FORMATS)]
        out.append((render(day, fmt, rng), day.isoformat(), fmt))
    return out


YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")


def year_span(source: str) -> tuple[int, int]:
    """Character positions [start, end) of the four-digit year in a rendered date."""
    found = YEAR.findall(source)
    if len(found) != 1:
        raise ValueError(f"{source!r} does not hold exactly one four-digit year")
    match = YEAR.search(source)
    return match.start(), match.end()


def char_tokenizer() -> Any:
    """A character tokenizer (a `PreTrainedTokenizerFast`): every character its own token, `</s>`
    appended to each text, `<pad>` = 0, `</s>` = 1, `<unk>` = 2."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(CHARACTERS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=64
    )
