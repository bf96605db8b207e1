"""The default model's saved first view (explorer.runs.saved) in AppTest: a first visit's Attention page
draws it while the model loads, says so, and runs live once the model is in; a new text, or a load that
fails, leaves it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer import session
from explorer.models import registry as registry_module
from explorer.models import zoo
from explorer.models.loading import load_model
from explorer.runs import saved
from explorer.runs.capture import capture
from tests.app.helpers import APP, charts, numbers, run

pytestmark = pytest.mark.first_view
ATTENTION = "views/attention.py"
NOTE = "run of this text saved on this machine"


@pytest.fixture(scope="module")
def first_view(tmp_path_factory):
    """The default model's run of its first text, saved in a folder of its own."""
    root = tmp_path_factory.mktemp("first-view")
    loaded = load_model(session.default_request())
    text = zoo.default_text(loaded)
    saved.save(loaded.request, loaded.card, text, capture(loaded, text), root=root)
    view = saved.find(loaded.request, root=root)
    assert view is not None
    return root, view


@pytest.fixture
def held_load(first_view, monkeypatch):
    """Saved views read from `first_view`'s folder; the default model's load waits for the event
    returned (set it to let the load go on)."""
    root, _ = first_view
    real_find, real_load = saved.find, registry_module.load_model
    monkeypatch.setattr(saved, "find", lambda request, root_=None: real_find(request, root))
    release = threading.Event()

    def load(request, progress):
        progress("held by the test", 0.25)
        release.wait(120)
        return real_load(request, progress)

    monkeypatch.setattr(registry_module, "load_model", load)
    yield release
    release.set()


def first_visit(page: str = ATTENTION) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page)
    return run(at)


def texts(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.caption, *at.sidebar.info, *at.sidebar.success] if e.value)


def head_map(at: AppTest) -> np.ndarray:
    spec = next(c for c in charts(at) if "layer 0, head 0" in c["layout"]["title"]["text"])
    z = spec["data"][0]["z"]
    return np.array([numbers(row) for row in z]) if isinstance(z, list) else np.array(numbers(z))


def wait_loaded(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while session.registry().get(session.default_request()) is None:
        assert time.monotonic() < deadline, "the default model did not load"
        time.sleep(0.1)


def test_a_first_visit_sees_the_saved_view_while_the_model_loads_then_the_live_run(first_view, held_load):
    _, view = first_view
    at = first_visit()
    # drawn from the saved run, said so, with the load's progress; the model is not there yet
    assert session.registry().get(session.default_request()) is None
    assert session.registry().stage(session.default_request()) == ("held by the test", 0.25)
    assert NOTE in texts(at) and "Loading smollm2-135m-instruct" in texts(at)
    assert not at.sidebar.success  # no "Loaded:" yet
    assert at.text_area(key=f"{session.TEXT}_box").value == view.text
    shown = head_map(at)
    expected = view.capture.attentions[0, 0]
    assert np.allclose(shown.reshape(expected.shape), expected, atol=1e-6)
    # choices that need only the capture work on it: another layer and head
    at.selectbox(key=f"{session.ATTN_LAYER}_box").set_value(2)
    at.selectbox(key=f"{session.ATTN_HEAD}_box").set_value(5)
    run(at)
    assert "layer 2, head 5" in charts(at)[0]["layout"]["title"]["text"]
    assert NOTE in texts(at)

    held_load.set()
    wait_loaded()
    run(at)  # what the page's timer does once the model is in: the page runs again, live
    assert NOTE not in texts(at)
    assert any("Loaded: smollm2-135m-instruct" in s.value for s in at.sidebar.success)
    assert "layer 2, head 5" in charts(at)[0]["layout"]["title"]["text"]  # the choices are kept
    live = session.store().get(at.session_state[session.CAPTURE])
    assert live is not None and live.sequence == view.capture.sequence
    assert saved.same(live, view.capture)  # the saved numbers were the model's own


def test_a_new_text_waits_for_the_model_and_runs_it(first_view, held_load):
    at = first_visit()
    assert NOTE in texts(at)
    at.text_area(key=f"{session.TEXT}_box").set_value("A different sentence.")
    threading.Timer(1.0, held_load.set).start()  # the load goes on while the page waits for it
    run(at)
    assert NOTE not in texts(at)
    cap = session.store().get(at.session_state[session.CAPTURE])
    assert "".join(cap.sequence.tokens).replace("␣", " ").strip().startswith("A different")


def test_a_load_that_fails_leaves_the_saved_view_for_its_message(first_view, held_load, monkeypatch):
    def broken(request, progress):
        held_load.wait(120)
        raise registry_module.LoadError("The weights could not be read (a test's failure).")

    monkeypatch.setattr(registry_module, "load_model", broken)
    at = first_visit()
    assert NOTE in texts(at)
    held_load.set()
    deadline = time.monotonic() + 60
    while not session.registry().failed(session.default_request()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run(at)
    assert NOTE not in texts(at)
    assert any("could not be read" in e.value for e in at.sidebar.error)
    assert any("could not be read" in e.value for e in at.main.error)  # on the page too, not only the sidebar


def test_no_saved_view_for_a_link_to_another_text_or_another_page(first_view, held_load):
    held_load.set()
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(ATTENTION)
    at.query_params["text"] = "Another text from a link."
    run(at)
    assert NOTE not in texts(at)
    assert session.registry().get(session.default_request()) is not None


def test_the_logit_lens_on_the_saved_view_waits_for_the_model_and_reads_the_same_run(first_view, held_load):
    _, view = first_view
    at = first_visit("views/hidden_states.py")
    assert NOTE in texts(at)
    at.session_state[session.HIDDEN_VIEW] = "Logit lens"
    threading.Timer(1.0, held_load.set).start()  # the lens needs the model's unembedding: the page waits
    run(at)
    lens = charts(at)[0]["data"][0]
    z = lens["z"]
    shape = tuple(int(n) for n in str(z["shape"]).split(",")) if isinstance(z, dict) else (len(z), len(z[0]))
    assert shape[0] == view.card.n_layers + 1  # the embeddings and every layer
    assert session.registry().get(session.default_request()) is not None
    # the lens's last column is the model's own next-token guess for the text, as the saved run has it
    assert lens["text"][-1][-1] == view.capture.next_token
