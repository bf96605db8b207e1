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


def test_a_drawn_pattern_scores_every_head_on_the_workspace_text(tiny_dir):
    """The pattern's scores are the attention on the ticked keys, averaged over the ticked rows, recomputed
    here from a plain eager forward pass of the text."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.app.helpers import numbers

    folder = tiny_dir("llama")
    text = "the cat sat on the mat because it was tired"
    at = stats_view(folder)
    at.session_state[session.TEXT] = text
    at.session_state[session.DETECT_KIND] = "pattern"
    at.session_state[session.DETECT_CELLS] = "3:1;4:2,3;6:0"
    run(at)
    drawn = next(c for c in charts(at) if c["layout"]["title"]["text"].startswith("Your pattern (4 cells)"))
    z = drawn["data"][0]["z"]
    shown = np.array(numbers(z) if isinstance(z, dict) else [numbers(row) for row in z]).reshape(2, 4)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    ids = AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        maps = torch.stack(model(ids, output_attentions=True).attentions)[:, 0].numpy()  # [layer, head, q, k]
    want = (maps[..., 3, 1] + (maps[..., 4, 2] + maps[..., 4, 3]) + maps[..., 6, 0]) / 3
    assert np.allclose(shown, want, atol=1e-6)
    assert at.session_state[session.DETECT_CELLS] == "3:1;4:2,3;6:0"  # the grid showed it unchanged
    assert any(t.startswith("Layer ") for t in (c["layout"]["title"]["text"] for c in charts(at)))


def test_a_drawn_pattern_starts_from_a_chosen_rule(tiny_dir):
    at = stats_view(tiny_dir("llama"))
    at.session_state[session.TEXT] = "the cat sat on the mat"
    at.selectbox(key=f"{session.DETECT_KIND}_box").set_value("pattern")
    run(at)
    assert at.session_state[session.DETECT_CELLS] == "2:0;3:1;4:2;5:3"  # two back, the default
    at.selectbox(key="detect_rule").set_value("previous")
    at.button(key="detect_fill").click()
    run(at)
    assert at.session_state[session.DETECT_CELLS] == "1:0;2:1;3:2;4:3;5:4"
    assert any(c["layout"]["title"]["text"].startswith("Your pattern (5 cells)") for c in charts(at))
