"""bertviz's head view and model view, made safe and small enough for a web page.

bertviz 1.4.1 as it ships puts the token strings inside a `<script>` as raw JSON (a token
`</script><img src=x onerror=...>` ends the script and runs as HTML), loads require.js, d3 and jQuery
from a CDN (nothing draws offline), and writes the data twice (about 100 MB of HTML for 12 x 12 heads
of 128 tokens). Here the page is put together from bertviz's own drawing code (`head_view.js`,
`model_view.js`, read from the installed package) with:

- the data written once, as JSON with `<`, `>`, `&` and the line separators escaped, so nothing inside
  it can end the script; bertviz draws token labels with d3's `.text()`, which does not parse HTML;
- d3 and jQuery inline from the set-up's copies (`explorer.web.webassets`), and a two-line stand-in for
  require.js;
- weights rounded, and only the layers asked for.
"""

from __future__ import annotations

import json
import re
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from explorer.errors import InputError
from explorer.runs.capture import AttentionSet
from explorer.web import webassets

VIEWS = {"head": "head_view.js", "model": "model_view.js"}
MAX_TOKENS = 256
DECIMALS = 3
_REQUIRE_SHIM = """
var require = {config: function () {}};
function requirejs(names, body) {
  var modules = {jquery: window.jQuery, d3: window.d3};
  body.apply(null, names.map(function (n) { return modules[n]; }));
}
"""


def script_json(value: object) -> str:
    """JSON that is inert inside an HTML <script>: no `</script>`, `<!--` or line separators survive."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(raw, escaped)
    return text


@lru_cache(maxsize=None)
def _bertviz_js(view: str) -> str:
    import bertviz

    return (Path(bertviz.__file__).parent / VIEWS[view]).read_text(encoding="utf-8")


def numbers_json(a: np.ndarray) -> str:
    """A nested JSON array of weights rounded to DECIMALS, written short (`.25` for 0.25, `0` for 0.0).
    Only digits, `.`, `-`, `,`, `[` and `]`: nothing in it can end a script."""
    text = json.dumps(np.round(a.astype(np.float64), DECIMALS).tolist(), separators=(",", ":"))
    text = re.sub(r"\.0(?=[,\]])", "", text)  # 1.0 -> 1, 0.0 -> 0
    return re.sub(r"(?<![\d.])0\.(?=\d)", ".", text)  # 0.25 -> .25


def _chosen(maps: np.ndarray, layers: Sequence[int], heads: Sequence[int] | None) -> np.ndarray:
    chosen = maps[list(layers)]
    return chosen if heads is None else chosen[:, list(heads)]


def bertviz_html(
    sets: Sequence[AttentionSet],
    view: str = "head",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    first: int = 0,
) -> str:
    """A complete HTML page showing bertviz's `view` ("head" or "model") of `sets` (several sets, such as
    encoder, decoder and cross-attention, get bertviz's own chooser, opened on `sets[first]`). `layers`:
    which layers to include (all by default); `heads`: for the model view, which heads."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}")
    missing = webassets.missing()
    if missing:
        raise InputError(
            f"The bertviz views need {', '.join(missing)}, which the set-up fetches: run `make setup` "
            "(or `.venv/bin/python -m explorer.web.webassets`)."
        )
    longest = max(max(len(s.queries), len(s.keys)) for s in sets)
    if longest > MAX_TOKENS:
        raise InputError(
            f"bertviz draws every token pair as a line: {longest} tokens is too many to read (at most "
            f"{MAX_TOKENS}). Use the heatmaps, or shorten the text."
        )
    n_layers = min(s.n_layers for s in sets)
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if not layers or any(not 0 <= x < n_layers for x in layers):
        raise InputError(f"Choose layers between 0 and {n_layers - 1}.")
    root = f"bertviz-{uuid.uuid4().hex}"
    # the weights go in after the JSON is escaped, as placeholders replaced by numbers-only JSON
    data = [
        {"name": s.title, "attn": f"@@ATTN{i}@@", "left_text": list(s.queries.tokens),
         "right_text": list(s.keys.tokens)}
        for i, s in enumerate(sets)
    ]  # fmt: skip
    if not 0 <= first < len(sets):
        raise ValueError(f"first must index one of the {len(sets)} sets")
    params: dict = {
        "attention": data, "default_filter": str(first), "root_div_id": root, "include_layers": layers
    }  # fmt: skip
    if view == "head":
        params.update(layer=layers[0], heads=None)
        controls = 'Layer: <select id="layer"></select>'
    else:
        n_heads = sets[0].n_heads
        params.update(
            display_mode="light",
            include_heads=list(range(n_heads)) if heads is None else [int(h) for h in heads],
            total_heads=n_heads,
        )
        controls = ""
    if len(sets) > 1:
        options = "".join(
            f'<option value="{i}"{" selected" if i == first else ""}>{_plain(s.title)}</option>'
            for i, s in enumerate(sets)
        )
        controls += f' Attention: <select id="filter">{options}</select>'
    payload = script_json(params)
    for i, s in enumerate(sets):
        weights = numbers_json(_chosen(s.maps, layers, heads if view == "model" else None))
        payload = payload.replace(f'"@@ATTN{i}@@"', weights, 1)
    code = _bertviz_js(view).replace("PYTHON_PARAMS", payload, 1)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bertviz {view} view</title></head>
<body style="margin:0; background:#fff">
<div id="{root}" style="font-family:'Helvetica Neue', Helvetica, Arial, sans-serif;">
<span style="user-select:none; font-size:14px">{controls}</span>
<div id="vis"></div>
</div>
<script>{webassets.read("d3")}</script>
<script>{webassets.read("jquery")}</script>
<script>{_REQUIRE_SHIM}</script>
<script>
{code}
</script>
</body></html>"""


def _plain(title: str) -> str:
    """Our own set titles, reduced to characters that need no escaping in HTML."""
    return "".join(ch for ch in title if ch.isalnum() or ch in " -()→")


def view_height(sets: Sequence[AttentionSet], view: str, n_layers: int) -> int:
    """Pixels the iframe needs to show the view without an inner scroll bar, roughly."""
    longest = max(max(len(s.queries), len(s.keys)) for s in sets)
    if view == "head":
        return int(min(6000, 120 + 23 * longest))
    n_heads = sets[0].n_heads
    thumb = 7 * 12 / n_heads * longest + 10
    return int(min(20000, 120 + n_layers * thumb))
