"""Shareable links in AppTest: a copied URL opens the same picture; a link with bad values opens with a
message; the shared capture store is used (choosing a layer runs nothing)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from explorer import session
from explorer.runs import capture as capture_module
from tests.app.helpers import APP, app, charts, load_folder, numbers, run

ATTENTION = "views/attention.py"
GENERATE = "views/generate.py"
TEXT = "the cat sat on the mat because it was tired"


def opened(params: dict, page: str) -> AppTest:
    """A new session (someone else's browser) opening a link to `page` with `params`."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params)
    at.switch_page(page)
    return run(at)


def warnings(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning)


def test_a_copied_link_opens_the_same_attention_view(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("llama"))
    at.session_state[session.TEXT] = TEXT
    at.switch_page(ATTENTION)
    run(at)
    at.selectbox(key=f"{session.ATTN_LAYER}_box").set_value(1)
    at.selectbox(key=f"{session.ATTN_HEAD}_box").set_value(3)
    run(at)
    link = dict(at.query_params)
    assert link["text"] == TEXT and link["layer"] == "1" and link["head"] == "3"
    assert link["via"] == "folder" and link["model"] == str(tiny_dir("llama"))

    other = opened(link, ATTENTION)
    assert not at.warning and not other.warning
    mine, theirs = charts(at)[0], charts(other)[0]
    assert theirs["layout"]["title"]["text"] == mine["layout"]["title"]["text"]
    assert "layer 1, head 3" in theirs["layout"]["title"]["text"]
    assert numbers(theirs["data"][0]["z"]) == numbers(mine["data"][0]["z"])
    assert session.store().get(other.session_state[session.CAPTURE]).sequence.tokens == tuple(TEXT.split())


def test_choosing_another_layer_or_head_runs_nothing(tiny_dir, monkeypatch):
    at = app()
    load_folder(at, tiny_dir("gpt2"))
    at.session_state[session.TEXT] = TEXT
    at.switch_page(ATTENTION)
    runs = []
    real = capture_module.capture
    monkeypatch.setattr(session, "capture", lambda *a, **k: runs.append(a[1]) or real(*a, **k))
    run(at)
    for layer, head in [(1, 0), (0, 2), (1, 3), (1, 0)]:
        at.selectbox(key=f"{session.ATTN_LAYER}_box").set_value(layer)
        at.selectbox(key=f"{session.ATTN_HEAD}_box").set_value(head)
        run(at)
        assert f"layer {layer}, head {head}" in charts(at)[0]["layout"]["title"]["text"]
    assert runs == [TEXT]  # one model run for the text; the figures come from the kept capture
    cap = session.store().get(at.session_state[session.CAPTURE])
    assert ("one head", "self", 1, 0, 0, 0) in session.store().figures(cap)


def test_two_sessions_on_one_text_share_one_capture(tiny_dir):
    first = opened({"model": str(tiny_dir("gpt2")), "via": "folder", "text": TEXT}, ATTENTION)
    second = opened({"model": str(tiny_dir("gpt2")), "via": "folder", "text": TEXT}, ATTENTION)
    key = first.session_state[session.CAPTURE]
    assert second.session_state[session.CAPTURE] == key and len(session.store()) == 1


def test_a_dropped_capture_is_run_again_with_a_message(tiny_dir):
    at = opened({"model": str(tiny_dir("gpt2")), "via": "folder", "text": TEXT}, ATTENTION)
    session.store().make_room(session.store().budget + 1)  # memory ran low: every capture goes
    run(at)
    assert any("dropped to free memory" in i.value for i in at.info)
    assert charts(at)  # and the picture is back


def test_a_link_with_bad_values_opens_with_messages(tiny_dir):
    at = opened(
        {"model": str(tiny_dir("llama")), "via": "folder", "text": TEXT, "layer": "99", "head": "x",
         "view": "Nonsense", "remote_code": "1"},
        ATTENTION,
    )  # fmt: skip
    said = warnings(at)
    assert "head 'x' is not a number" in said
    assert "layer 99 is not one this model offers" in said
    assert "view Nonsense is not one this model offers" in said
    assert "cannot turn on running the checkpoint's code" in said
    assert "layer 0, head 0" in charts(at)[0]["layout"]["title"]["text"]  # the page works on
    assert at.query_params["layer"] == "0"  # and its link is a good one again


def test_a_link_to_an_unknown_model_opens_the_default_model():
    at = opened({"model": "no-such-model", "via": "embedded", "text": TEXT}, ATTENTION)
    assert "not an embedded model" in warnings(at)
    assert at.session_state[session.REQUEST] == session.default_request()


def test_a_folder_that_is_not_a_checkpoint_in_a_link(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    at = opened({"model": str(tmp_path), "via": "folder", "text": TEXT}, ATTENTION)
    assert "could not be loaded" in warnings(at)
    assert at.session_state[session.REQUEST] == session.default_request()
    assert "config.json" in warnings(at)  # the reason: what a checkpoint folder lacks


def test_a_generate_link_replays_its_tokens(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("llama"))
    at.switch_page(GENERATE)
    run(at)
    at.session_state[session.GEN_PROMPT] = "the cat"
    run(at)
    for _ in range(2):
        [b for b in at.button if b.label == "Step"][0].click()
        run(at)
    [b for b in at.button if b.key == "pick_3"][0].click()  # a token picked by hand
    run(at)
    mine = at.session_state[session.STEPPER][1]
    link = dict(at.query_params)
    assert link["prompt"] == "the cat" and len(link["picks"].split(",")) == 3

    other = opened(link, GENERATE)
    theirs = other.session_state[session.STEPPER][1]
    assert [s.token_id for s in theirs.steps] == [s.token_id for s in mine.steps]
    assert [s.how for s in theirs.steps] == [s.how for s in mine.steps] == ["greedy", "greedy", "picked"]
    assert [s.prob for s in theirs.steps] == [s.prob for s in mine.steps]


def test_unloading_a_model_drops_its_captures(tiny_dir):
    at = opened({"model": str(tiny_dir("gpt2")), "via": "folder", "text": TEXT}, ATTENTION)
    key = at.session_state[session.CAPTURE]
    assert key in session.store()
    unload = [b for b in at.sidebar.button if b.label == "Unload"]
    assert len(unload) == 1  # the link loaded its model, not the default one
    unload[0].click()
    run(at)
    assert key not in session.store() and not session.registry().loaded()


def test_links_to_the_flow_and_experiments_pages(tiny_dir):
    model = {"model": str(tiny_dir("gpt2")), "via": "folder"}
    flow = opened({**model, "text": TEXT, "position": "3", "threshold": "0.1"}, "views/flow.py")
    assert (
        flow.session_state[session.FLOW_POSITION] == 3 and flow.session_state[session.FLOW_THRESHOLD] == 0.1
    )
    assert flow.query_params["position"] == "3" and not flow.warning
    far = opened({**model, "text": TEXT, "position": "500"}, "views/flow.py")
    assert "focused token 500 is not one this model offers" in " ".join(w.value for w in far.warning)

    link = {**model, "experiment": "Activation patching", "clean": "the cat sat on the mat",
            "corrupt": "the dog sat on the mat", "patch_target": " mat", "foil": " rug"}  # fmt: skip
    exp = opened(link, "views/experiments.py")
    assert exp.session_state[session.EXPERIMENT] == "Activation patching"
    assert exp.text_input(key=f"{session.PATCH_CORRUPT}_box").value == "the dog sat on the mat"
    assert exp.query_params["clean"] == "the cat sat on the mat"


def test_a_link_carries_the_token_focus_and_statistic_choices(tiny_dir):
    model = {"model": str(tiny_dir("gpt2")), "via": "folder", "text": TEXT}
    focus = opened({**model, "view": "Token focus", "query": "7", "key": "1"}, ATTENTION)
    title = charts(focus)[0]["layout"]["title"]["text"]
    assert "(7)" in title and "(1)" in title and focus.query_params["query"] == "7"
    stats = opened({**model, "view": "Head statistics", "stat": "entropy"}, ATTENTION)
    assert stats.session_state[session.ATTN_STAT] == "entropy" and stats.query_params["stat"] == "entropy"
    bad = opened({**model, "view": "Token focus", "query": "70"}, ATTENTION)
    assert "query token 70 is not one this model offers" in " ".join(w.value for w in bad.warning)


def test_ffn_memory_and_from_scratch_links_reopen_their_pictures(tiny_dir):
    """FFN memory and From scratch links carried only the model: now the text and the choices too."""
    for page, choose, title_of in (
        ("views/ffn.py", {"ffn_layer_box": 1, "focus_position_box": 2}, "strongest neurons"),
        ("views/from_scratch.py", {"scratch_layer_box": 1, "scratch_head_box": 3}, "Attention weights"),
    ):
        at = app()
        load_folder(at, tiny_dir("llama"))
        at.session_state[session.TEXT] = TEXT
        at.switch_page(page)
        run(at)
        for box, value in choose.items():
            at.selectbox(key=box).set_value(value)
            run(at)
        link = dict(at.query_params)
        assert link["text"] == TEXT, page
        other = opened(link, page)
        assert not other.exception and not warnings(other), page
        for box, value in choose.items():
            assert other.selectbox(key=box).value == value, (page, box)
        mine = [c for c in charts(at) if title_of in c["layout"]["title"]["text"]][0]
        theirs = [c for c in charts(other) if title_of in c["layout"]["title"]["text"]][0]
        assert theirs["layout"]["title"]["text"] == mine["layout"]["title"]["text"], page


def test_a_positions_link_reopens_its_sliders_within_the_models_range(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("gpt2"))  # learned positions
    at.switch_page("views/positions.py")
    run(at)
    at.slider(key="positions_sine_n_box").set_value(64)
    at.slider(key="positions_learned_n_box").set_value(32)
    run(at)
    link = dict(at.query_params)
    assert link["sine"] == "64" and link["learned"] == "32"
    other = opened(link, "views/positions.py")
    assert other.slider(key="positions_sine_n_box").value == 64
    assert other.slider(key="positions_learned_n_box").value == 32
    titles = [c["layout"]["title"]["text"] for c in charts(other)]
    assert any(t.startswith("Sinusoidal encoding (64 ×") for t in titles)
    far = opened({**link, "learned": "5000"}, "views/positions.py")  # more than this model has
    learned = far.slider(key="positions_learned_n_box")
    assert not far.exception and learned.value == learned.max == 64  # the tiny GPT-2 has 64 positions
