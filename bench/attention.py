"""What keeping every attention map costs, and what drawing them costs.

- overhead_N: time of `explorer.runs.capture.capture` on SmolLM2 (eager attention, every attention map and
  hidden state copied out) over a plain forward of the same tokens with the default `sdpa` attention,
  at N = 32, 128, 512 tokens (median of several interleaved runs; both compute only the last position's
  logits);
- capture_mb_N: the size of the kept capture;
- grid_bytes_512 / grid_draw_s_512: the all-heads grid of Gemma 3 270M (18 layers x 4 heads) at 512
  tokens: the figure's JSON payload, and the time Chromium takes to draw it (Plotly.newPlot, in a page
  with plotly.js inline);
- naive_grid_bytes_512: for comparison, the same maps as 72 float32 Plotly heatmaps.

Prints one JSON object on its last line. Run: `make bench` or `.venv/bin/python bench/attention.py`.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.figures.attention import heads_grid  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402
from explorer.runs.capture import capture  # noqa: E402

PROSE = (
    "The history of the printing press begins in the fifteenth century, when craftsmen in Mainz combined "
    "movable metal type, oil-based ink and a wooden screw press. Books that had taken scribes months to "
    "copy could now be printed in days, and ideas travelled across Europe faster than ever before. "
)
LENGTHS = (32, 128, 512)
REPEATS = 5


def text_of(tokenizer, n: int) -> str:
    """A text that the tokenizer splits into exactly n tokens (special tokens included)."""
    ids = tokenizer(PROSE * 40, add_special_tokens=False)["input_ids"]
    extra = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])
    text = tokenizer.decode(ids[: n - extra])
    assert len(tokenizer(text)["input_ids"]) == n, (len(tokenizer(text)["input_ids"]), n)
    return text


def overhead(loaded, plain) -> dict:
    out = {}
    for n in LENGTHS:
        text = text_of(loaded.tokenizer, n)
        ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
        captured, baseline = [], []
        capture(loaded, text)  # warm-up
        with torch.inference_mode():
            plain(input_ids=ids, use_cache=False, logits_to_keep=1)
        for _ in range(REPEATS):
            t = time.perf_counter()
            cap = capture(loaded, text)
            captured.append(time.perf_counter() - t)
            with torch.inference_mode():
                t = time.perf_counter()
                plain(input_ids=ids, use_cache=False, logits_to_keep=1)
                baseline.append(time.perf_counter() - t)
        out[f"overhead_{n}"] = round(statistics.median(captured) / statistics.median(baseline), 3)
        out[f"capture_s_{n}"] = round(statistics.median(captured), 4)
        out[f"sdpa_forward_s_{n}"] = round(statistics.median(baseline), 4)
        out[f"capture_mb_{n}"] = round(cap.nbytes / 2**20, 2)
        print(f"SmolLM2 {n} tokens: {out}", file=sys.stderr, flush=True)
    return out


def draw_seconds(figure_json: str) -> float:
    """Chromium's time for Plotly.newPlot of this figure (median of 3 page loads)."""
    import plotly.offline
    from playwright.sync_api import sync_playwright

    page_html = (
        "<!doctype html><html><head><meta charset='utf-8'><script>" + plotly.offline.get_plotlyjs()
        + "</script></head><body><div id='g'></div><script>const FIG = " + figure_json + ";"
        "window.drawn = (async () => { const t = performance.now();"
        " await Plotly.newPlot('g', FIG.data, FIG.layout);"
        " await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));"
        " return (performance.now() - t) / 1000; })();</script></body></html>"
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.html"
        path.write_text(page_html, encoding="utf-8")
        args = [
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-quic", "--no-first-run",
        ]  # fmt: skip
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            times = []
            for _ in range(3):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(path.as_uri())
                times.append(page.evaluate("window.drawn"))
                page.close()
            browser.close()
    return statistics.median(times)


def grid(loaded) -> dict:
    cap = capture(loaded, text_of(loaded.tokenizer, 512))
    fig = heads_grid(cap.attentions, "Gemma 3 270M at 512 tokens")
    payload = fig.to_json()
    naive = _naive_grid_bytes(cap.attentions)
    return {
        "grid_bytes_512": len(payload.encode()),
        "grid_draw_s_512": round(draw_seconds(payload), 3),
        "naive_grid_bytes_512": naive,
    }


def _naive_grid_bytes(maps: np.ndarray) -> int:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n_layers, n_heads = maps.shape[:2]
    fig = make_subplots(rows=n_layers, cols=n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            fig.add_trace(go.Heatmap(z=maps[layer, head], showscale=False), row=layer + 1, col=head + 1)
    return len(fig.to_json().encode())


def main() -> int:
    torch.set_grad_enabled(False)
    smol = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(smol.weights_from, attn_implementation="sdpa").eval()
    result = {"device": "cpu", "threads": torch.get_num_threads()}
    result.update(overhead(smol, plain))
    del plain
    gemma = load_model(LoadRequest("embedded", "gemma-3-270m"))
    result.update(grid(gemma))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
