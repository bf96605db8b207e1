"""The Attention page's head finder (Head statistics view) in Streamlit's AppTest."""

from __future__ import annotations

from explorer import session
from explorer.analyses import heads
from tests.app.helpers import app, charts, load_folder, run


def stats_view(folder=None):
    at = app(timeout=180)
    if folder is not None:
        load_folder(at, folder)
    at.session_state[session.ATTN_VIEW] = "Head statistics"
    at.switch_page("views/attention.py")
    return run(at)


def test_induction_heads_of_smollm2_are_found_and_opened():
    at = stats_view()
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert heads.DETECTORS["induction"] in titles
    box = next(s for s in at.selectbox if s.label.startswith("Open a head on the probe"))
    best = box.options[0]  # AppTest gives the options as shown
    layer, head = int(best.split()[1].rstrip(",")), int(best.split()[3].rstrip(":"))
    assert float(best.rsplit(" ", 1)[1]) > 0.5  # SmolLM2 has induction heads (18.6 scores 0.93)
    assert f"Layer {layer}, head {head} on the probe (100 tokens)" in titles  # 50 random tokens twice


def test_an_encoder_decoders_encoder_heads(tiny_dir):
    at = stats_view(tiny_dir("t5"))
    at.session_state[session.ATTN_KIND] = "encoder"
    run(at)
    assert any(c["layout"]["title"]["text"] == heads.DETECTORS["induction"] for c in charts(at))
    box = next(s for s in at.selectbox if s.label == "Pattern")
    box.set_value("previous")
    run(at)
    assert any(c["layout"]["title"]["text"] == heads.DETECTORS["previous"] for c in charts(at))
