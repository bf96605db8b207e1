"""The Flow page in a real browser: SmolLM2's routes drawn, an attention edge and an FFN mark opened by
clicking them in the graph; MiniLM's routes from its first token; a hostile text shown as text."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import rerun, screenshot, wait_for_app_run
from tests.e2e.test_model_page import load_embedded

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTILE = "</script><b>x</b> <img src=x onerror=alert(1)> it"

# The page position of a point of the trace named `name` whose customdata starts with `prefix` (`across`:
# an edge between two different positions), found by its data through Plotly's own axis conversions (the
# edges' markers are transparent). Of the candidates, the one farthest from every other marker, so that
# the click lands on it and not on a neighbour.
POINT = """([name, prefix, across]) => {
    const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
    gd.scrollIntoView();
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const box = gd.getBoundingClientRect();
    const px = (x, y) => [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)];
    const others = [];
    const candidates = [];
    const apart = c => { const p = String(c).split('|'); return p[3] !== p[4]; };
    for (const trace of gd.data) {
        if (!String(trace.mode).includes('markers')) continue;
        const xs = Array.from(trace.x), ys = Array.from(trace.y);
        const labels = trace.customdata || trace.hovertext || [];
        xs.forEach((x, j) => {
            const p = px(x, ys[j]);
            others.push(p);
            const c = String(labels[j] || '');
            if (trace.name === name && c.startsWith(prefix) && (!across || apart(c))) candidates.push([p, c]);
        });
    }
    let best = null, bestGap = -1;
    for (const [p, c] of candidates) {
        const gap = Math.min(...others.filter(o => o !== p).map(o => Math.hypot(o[0] - p[0], o[1] - p[1])));
        if (gap > bestGap) { best = {x: p[0], y: p[1], key: c}; bestGap = gap; }
    }
    return best;
}"""


def open_flow(page, app_url):
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(f"{app_url}/flow")
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name="Flow", exact=True)).to_be_visible(timeout=120_000)


def graph(page):
    return page.get_by_test_id("stPlotlyChart").filter(has_text="Routes to")


def click_point(page, name: str, prefix: str, across: bool = False) -> str:
    """Clicks the first point of trace `name` whose key starts with `prefix` (`across`: an edge between
    two different positions) and waits for the rerun."""
    where = page.evaluate(POINT, [name, prefix, across])
    assert where is not None, f"no {prefix} point in the graph"
    # as a person does: point at it, and click once its own hover label shows (Plotly's click goes to the
    # point hovered last, which a fast pointer may not have updated yet)
    page.mouse.move(where["x"], where["y"])
    kind, layer, sublayer, _, _ = where["key"].split("|")
    label = f"layer {layer}, {sublayer}" + ("FFN output" if kind == "ffn" else "")
    expect(page.locator(".hoverlayer .hovertext").filter(has_text=label)).to_have_count(1, timeout=10_000)
    page.mouse.down()
    page.mouse.up()
    wait_for_app_run(page)
    return where["key"]


def test_smollm2_graph_edge_and_ffn(page, app_url):
    open_flow(page, app_url)
    expect(graph(page)).to_be_visible(timeout=120_000)
    expect(graph(page).locator(".scatterlayer .trace")).not_to_have_count(0)
    screenshot(page, "flow-smollm2")

    # hover a node: its top tokens through the logit lens
    node = page.evaluate(POINT, ["nodes", "", False])
    page.mouse.move(node["x"], node["y"])
    expect(page.locator(".hoverlayer").filter(has_text="logit lens")).to_have_count(1, timeout=10_000)
    page.screenshot(path=screenshot(page, "flow-smollm2-lens"))  # the hover label in view

    key = click_point(page, "edges", "attention|", across=True)
    _, layer, _, src, tgt = key.split("|")
    assert src != tgt
    details = page.get_by_test_id("stDataFrame")
    expect(page.get_by_text("the heads that make up this edge")).to_be_visible(timeout=30_000)
    expect(details).to_have_count(1)
    expect(page.get_by_text(f"layer {layer} attention: {src} ").first).to_be_visible()
    details.scroll_into_view_if_needed()
    page.screenshot(path=screenshot(page, "flow-smollm2-edge"))  # the table, scrolled into view

    click_point(page, "ffn", "ffn|")
    expect(page.get_by_text("the neurons that write most of this FFN output")).to_be_visible(timeout=30_000)
    page.get_by_test_id("stDataFrame").scroll_into_view_if_needed()
    page.screenshot(path=screenshot(page, "flow-smollm2-ffn"))

    # a hostile text: tokens on the axis as text, no dialog
    box = page.get_by_role("textbox", name="Text")
    box.fill(HOSTILE)
    rerun(page, lambda: box.press("Control+Enter"))
    # SmolLM2 reads "<img" as "␣<" and "img": the axis shows them as the characters they are
    expect(graph(page).locator(".xtick text").filter(has_text="img").first).to_be_attached(timeout=30_000)
    labels = graph(page).locator(".xtick text").all_text_contents()
    assert "</" in labels and "␣<" in labels
    assert page.locator("img[src=x]").count() == 0 and page.dialogs == []
    screenshot(page, "flow-smollm2-hostile")


def test_minilm_routes_from_the_first_token(page, app_url):
    open_flow(page, app_url)
    load_embedded(page, "all-MiniLM-L6-v2 · encoder", shows="BERT encoder, 6 layers")
    loaded = page.get_by_test_id("stSidebar").get_by_text("Loaded: all-minilm-l6-v2")
    expect(loaded).to_be_visible(timeout=180_000)  # not the previous model's graph
    wait_for_app_run(page)
    expect(graph(page)).to_be_visible(timeout=180_000)
    combobox = page.get_by_role("combobox", name="Trace the routes to")
    combobox.click()
    combobox.fill("0: [CLS]")
    expect(page.get_by_role("option", name="0: [CLS]")).to_have_count(1)
    rerun(page, lambda: page.keyboard.press("Enter"))
    expect(graph(page).locator(".gtitle").filter(has_text="Routes to 0 ").first).to_be_visible(timeout=30_000)
    expect(graph(page).locator(".gtitle")).to_have_count(1)
    key = click_point(page, "edges", "attention|", across=True)
    expect(page.get_by_text("the heads that make up this edge")).to_be_visible(timeout=30_000)
    assert key.startswith("attention|")
    expect(page.get_by_test_id("stDataFrame").locator("[role=row]")).to_have_count(13)  # 12 heads
    click_point(page, "ffn", "ffn|")
    expect(page.get_by_text("the neurons that write most of this FFN output")).to_be_visible(timeout=30_000)
    screenshot(page, "flow-minilm")
    page.get_by_test_id("stDataFrame").scroll_into_view_if_needed()
    page.screenshot(path=screenshot(page, "flow-minilm-ffn"))
