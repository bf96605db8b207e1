"""The saved first view (explorer.runs.saved): a capture written and read back whole, found only where
everything that computed it is unchanged, and the registry's background load it waits for."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from explorer.errors import LoadError
from explorer.models import registry as registry_module
from explorer.models.loading import LoadRequest
from explorer.runs import saved
from explorer.runs.capture import capture

DEFAULT = LoadRequest("embedded", "smollm2-135m-instruct")
TEXT = "the cat sat on the mat because it was tired"


@pytest.fixture(scope="module")
def runs(tiny_loaded):
    """A decoder's and an encoder-decoder's capture, with their models."""
    out = {}
    for kind in ("llama", "t5"):
        loaded = tiny_loaded(kind)
        out[kind] = (loaded, capture(loaded, TEXT, target="the cat" if kind == "t5" else None))
    return out


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_a_saved_view_reads_back_the_same_capture_and_card(runs, kind, tmp_path):
    loaded, cap = runs[kind]
    path = saved.save(DEFAULT, loaded.card, TEXT, cap, root=tmp_path)
    view = saved.find(DEFAULT, root=tmp_path)
    assert view is not None and path.is_file()
    assert view.request == DEFAULT and view.text == TEXT and view.card == loaded.card
    got = view.capture
    assert (got.sequence, got.source, got.windows) == (cap.sequence, cap.source, cap.windows)
    assert (got.next_token, got.target_generated) == (cap.next_token, cap.target_generated)
    assert (got.family, got.model_name) == (cap.family, cap.model_name)
    for name in saved.ARRAYS:
        a, b = getattr(cap, name), getattr(got, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert np.array_equal(a, b), name  # written and read back bit for bit
    assert saved.same(got, cap)
    # the attention sets a page draws come out the same
    assert [s.title for s in got.attention_sets()] == [s.title for s in cap.attention_sets()]


def test_same_tells_other_numbers_and_other_tokens_apart(runs):
    _, cap = runs["llama"]
    nudged = cap.attentions.copy()
    nudged[1, 0, -1, 0] += 1e-3
    assert not saved.same(cap, replace(cap, attentions=nudged))
    other = replace(cap.sequence, tokens=("x",) + cap.sequence.tokens[1:])
    assert not saved.same(cap, replace(cap, sequence=other))
    assert saved.same(cap, replace(cap, attentions=cap.attentions + 1e-7))  # float32 rounding


def test_a_view_is_found_only_with_everything_that_made_it_unchanged(runs, tmp_path, monkeypatch):
    loaded, cap = runs["llama"]
    saved.save(DEFAULT, loaded.card, TEXT, cap, root=tmp_path)
    assert saved.find(DEFAULT, root=tmp_path) is not None
    # another dtype, another embedded model, a user's folder: none has this view
    assert saved.find(replace(DEFAULT, dtype="bfloat16"), root=tmp_path) is None
    assert saved.find(LoadRequest("embedded", "gemma-3-270m"), root=tmp_path) is None
    assert saved.find(LoadRequest("folder", "/some/checkpoint"), root=tmp_path) is None
    # other library code, another torch: the view is stale
    monkeypatch.setattr(saved, "code_digest", lambda: "0" * 64)
    assert saved.find(DEFAULT, root=tmp_path) is None
    monkeypatch.undo()
    real = saved.importlib.metadata.version
    monkeypatch.setattr(
        saved.importlib.metadata, "version", lambda name: "0.0" if name == "torch" else real(name)
    )
    assert saved.find(DEFAULT, root=tmp_path) is None


def test_a_new_view_replaces_the_older_one_and_a_damaged_file_is_none(runs, tmp_path, monkeypatch):
    loaded, cap = runs["llama"]
    old = saved.save(DEFAULT, loaded.card, TEXT, cap, root=tmp_path)
    monkeypatch.setattr(saved, "code_digest", lambda: "1" * 64)
    new = saved.save(DEFAULT, loaded.card, TEXT, cap, root=tmp_path)
    assert new != old and new.is_file() and not old.exists()
    new.write_bytes(b"not an npz file")
    saved._read.cache_clear()
    assert saved.find(DEFAULT, root=tmp_path) is None


def test_the_registry_loads_in_the_background_and_remembers_a_failure(monkeypatch, tiny_dir):
    reg = registry_module.ModelRegistry()
    good = LoadRequest("folder", str(tiny_dir("gpt2")))
    release = threading.Event()
    real = registry_module.load_model

    def slow(request, progress):
        progress("reading", 0.5)
        release.wait(30)
        if request.ref == "broken":
            raise LoadError("no such model")
        return real(request, progress)

    monkeypatch.setattr(registry_module, "load_model", slow)
    reg.start(good)
    assert reg.loading(good) and reg.get(good) is None
    for _ in range(3000):  # the load thread reports its stage
        if reg.stage(good) == ("reading", 0.5):
            break
        time.sleep(0.01)
    assert reg.stage(good) == ("reading", 0.5)
    release.set()
    assert reg.load(good) is reg.get(good)  # joins the load under way
    assert reg.stage(good) is None and not reg.failed(good)
    broken = LoadRequest("folder", "broken")
    reg.start(broken)
    with pytest.raises(LoadError, match="no such model"):
        reg.load(broken)
    assert reg.failed(broken) and reg.stage(broken) is None and reg.get(broken) is None
