"""What the information-flow graph costs on SmolLM2 (the default embedded model).

- flow_ratio: time of `explorer.analyses.flow.compute` (one forward pass with hooks, eager attention
  weights, and the importance of every term of every residual update) for a 15-token text over one plain
  forward pass of the same tokens (the same loaded model, no hooks, only the last position's logits in
  both); median of interleaved runs;
- flow_s, forward_s: the two medians;
- flow_ratio_cpu_1thread: the same ratio in process CPU time on one thread (robust to other work on the
  machine, which makes two-thread wall times swing);
- flow_draw_s: the time headless Chromium takes to draw the graph (routes from the last token at the
  page's default threshold): from Plotly.newPlot with the figure's JSON, in a standalone page with the
  plotly.js that the installed plotly package ships, to the plotly_afterplot event (median of runs);
- edges: the number of edges drawn.

Prints one JSON object on its last line. Run: `make bench` or `.venv/bin/python bench/flow.py`.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analyses import flow  # noqa: E402
from explorer.figures.flow import graph  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402
from explorer.runs import hooked  # noqa: E402

TEXT = "The Eiffel Tower is in the city of Paris, which is the capital of"
TOKENS = 15
THRESHOLD = 0.04  # the page's default
REPEATS = 9
DRAWS = 5
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", "--no-first-run",
]  # fmt: skip


def fifteen_tokens(tokenizer) -> str:
    """TEXT cut so that the tokenizer gives exactly TOKENS ids (special tokens included)."""
    ids = tokenizer(TEXT * 3, add_special_tokens=False)["input_ids"]
    extra = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])
    text = tokenizer.decode(ids[: TOKENS - extra])
    assert len(tokenizer(text)["input_ids"]) == TOKENS
    return text


def ratio(loaded, text: str, clock=time.perf_counter) -> dict:
    model = loaded.model
    ids = hooked.encode(model, loaded.tokenizer, text)
    x = torch.tensor([ids])

    def plain() -> None:
        with torch.no_grad():
            model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, logits_to_keep=1)

    flow.compute(loaded, text)  # warm-up
    plain()
    times_flow, times_plain = [], []
    for _ in range(REPEATS):
        t = clock()
        plain()
        times_plain.append(clock() - t)
        t = clock()
        flow.compute(loaded, text)
        times_flow.append(clock() - t)
    f, p = statistics.median(times_flow), statistics.median(times_plain)
    return {"flow_s": round(f, 4), "forward_s": round(p, 4), "flow_ratio": round(f / p, 3)}


PAGE = """<!doctype html><html><head><meta charset="utf-8"><script src="plotly.min.js"></script></head>
<body><div id="g" style="width:1200px"></div></body></html>"""


def draw_seconds(figure_json: str) -> float:
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp())
    (folder / "plotly.min.js").write_text(
        (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()
    )
    (folder / "index.html").write_text(PAGE)
    (folder / "figure.json").write_text(figure_json)
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto((folder / "index.html").as_uri())
        for _ in range(DRAWS):
            seconds = page.evaluate(
                """async (fig) => {
                    const div = document.getElementById('g');
                    Plotly.purge(div);
                    await Plotly.newPlot(div, [], {});
                    return await new Promise(resolve => {
                        const t0 = performance.now();
                        div.once('plotly_afterplot', () => resolve((performance.now() - t0) / 1000));
                        const spec = JSON.parse(fig);
                        Plotly.react(div, spec.data, spec.layout);
                    });
                }""",
                figure_json,
            )
            times.append(seconds)
        browser.close()
    return statistics.median(times)


def main() -> None:
    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    text = fifteen_tokens(loaded.tokenizer)
    result = {"model": "smollm2-135m-instruct", "tokens": TOKENS, "threads": torch.get_num_threads()}
    result |= ratio(loaded, text)
    # the same on one thread in CPU time: on a machine shared with other work, wall times of two-thread
    # runs swing by several times; the CPU time of one thread is what the work itself costs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = ratio(loaded, text, time.process_time)
    torch.set_num_threads(threads)
    result |= {"flow_ratio_cpu_1thread": cpu["flow_ratio"], "forward_cpu_s_1thread": cpu["forward_s"]}
    f = flow.compute(loaded, text)
    routes = flow.trace(f, f.n_pos - 1, THRESHOLD)
    boundary = sorted({(lv // len(f.sublayers), p) for lv, p in routes.nodes if lv % len(f.sublayers) == 0})
    fig = graph(f, routes, flow.lens_tops(loaded, f, boundary))
    payload = fig.to_json()
    result |= {
        "edges": len(routes.edges),
        "figure_bytes": len(payload),
        "flow_draw_s": round(draw_seconds(payload), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
