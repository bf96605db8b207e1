"""Shareable links: what a page shows, written into its URL's query parameters and read back.

A link carries the model, the text (or source and target) and the choices that make the picture: layer,
head, view, and on the Generate page the settings and the tokens generated so far. `read` turns query
parameters into values with a message for each one that cannot be used (the rest still apply);
`write` turns values into query parameters. Both are plain functions of dicts, so the rules are tested
without a browser; `explorer.session` moves the values in and out of `st.session_state`.

Values that can only be checked against the loaded model (a layer past the last one, a view the model
does not have) are checked where the page offers its choices (`views.common.choice`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from explorer.models import zoo
from explorer.models.devices import DTYPE_CHOICES, device_choices
from explorer.models.loading import LoadRequest

TEXT_LIMIT = 2_000  # characters of text a link carries; longer texts stay out of the URL
PICKS_LIMIT = 256  # generated tokens a link carries
SOURCES = ("embedded", "hub", "folder", "gguf")


@dataclass(frozen=True)
class Param:
    """One query parameter: its name in the URL, the session key it fills, its type and bounds."""

    name: str
    key: str
    kind: str = "str"  # str | int | float | bool | picks
    low: float | None = None
    high: float | None = None
    label: str = ""  # how a message names it

    def parse(self, raw: str) -> Any:
        """The value of `raw`; ValueError with a message a user understands."""
        what = self.label or self.name
        if self.kind == "str":
            if len(raw) > TEXT_LIMIT * 4:
                raise ValueError(f"the link's {what} is {len(raw):,} characters long")
            return raw
        if self.kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"the link's {what} {raw!r} is not on/off")
        if self.kind == "picks":
            return parse_picks(raw)
        try:
            value = int(raw) if self.kind == "int" else float(raw)
        except ValueError:
            raise ValueError(f"the link's {what} {raw!r} is not a number") from None
        if (
            value != value
            or (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
        ):
            raise ValueError(f"the link's {what} {raw} is outside {_range(self.low, self.high)}")
        return value


def _range(low: float | None, high: float | None) -> str:
    if high is None:
        return f"{low:g} and up"
    return f"{low:g}–{high:g}"


def parse_picks(raw: str) -> tuple[tuple[int, bool], ...]:
    """'12,=345,67' -> ((12, False), (345, True), (67, False)): token ids, True where the user picked
    the token by hand (the others are what the settings chose)."""
    picks = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        forced = part.startswith("=")
        digits = part[1:] if forced else part
        if not digits.isdigit():
            raise ValueError(f"the link's generated tokens contain {part!r}, which is not a token id")
        picks.append((int(digits), forced))
    if len(picks) > PICKS_LIMIT:
        raise ValueError(f"the link has {len(picks)} generated tokens; {PICKS_LIMIT} at most are replayed")
    return tuple(picks)


def write_picks(picks: tuple[tuple[int, bool], ...]) -> str:
    return ",".join(f"={i}" if forced else str(i) for i, forced in picks)


def model_request(params: Mapping[str, str]) -> tuple[LoadRequest | None, list[str]]:
    """The model a link names (`model`, with `via` for a source other than the embedded models and
    optional `device`, `dtype`), or None; messages for what cannot be used. A link never turns on
    trust_remote_code: running a checkpoint's code is the user's own choice in the sidebar."""
    problems = []
    ref = params.get("model", "").strip()
    if not ref:
        return None, problems
    via = params.get("via", "embedded" if ref in zoo.ZOO else "").strip()
    if via and via not in SOURCES:
        return None, [f"the link's model source {via!r} is not one of {', '.join(SOURCES)}"]
    if via == "embedded" and ref not in zoo.ZOO:
        names = ", ".join(zoo.ZOO)
        return None, [f"the link's model {ref!r} is not an embedded model (they are: {names})"]
    request = LoadRequest(via, ref) if via else LoadRequest.parse(ref)
    device = params.get("device", "auto")
    if device not in device_choices():
        problems.append(f"the link's device {device!r} is not one of this server's; using auto")
        device = "auto"
    dtype = params.get("dtype", "auto")
    if dtype not in DTYPE_CHOICES:
        problems.append(f"the link's dtype {dtype!r} is not one of {', '.join(DTYPE_CHOICES)}; using auto")
        dtype = "auto"
    if params.get("remote_code"):
        problems.append("a link cannot turn on running the checkpoint's code; turn it on in the sidebar")
    return LoadRequest(request.source, request.ref, device, dtype), problems


def model_params(request: LoadRequest) -> dict[str, str]:
    """The query parameters that name `request`."""
    out = {"model": request.ref}
    if request.source != "embedded":
        out["via"] = request.source
    if request.device != "auto":
        out["device"] = request.device
    if request.dtype != "auto":
        out["dtype"] = request.dtype
    return out


def read(schema: tuple[Param, ...], params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """{session key: value} for the parameters of `schema` present in `params`, and a message for each
    one that cannot be used. Parameters not in the schema are ignored."""
    values, problems = {}, []
    for p in schema:
        if p.name not in params:
            continue
        try:
            values[p.key] = p.parse(params[p.name])
        except ValueError as err:
            problems.append(str(err))
    return values, problems


def write(schema: tuple[Param, ...], values: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Query parameters for the values of `schema` found in `values` (None is left out), and the names of
    texts too long to carry."""
    out, left_out = {}, []
    for p in schema:
        value = values.get(p.key)
        if value is None:
            continue
        if p.kind == "str":
            if len(value) > TEXT_LIMIT:
                left_out.append(p.label or p.name)
                continue
            out[p.name] = value
        elif p.kind == "bool":
            out[p.name] = "1" if value else "0"
        elif p.kind == "picks":
            if value:
                out[p.name] = write_picks(tuple(value)[:PICKS_LIMIT])
        elif p.kind == "float":
            out[p.name] = f"{float(value):g}"
        else:
            out[p.name] = str(int(value))
    return out, left_out
