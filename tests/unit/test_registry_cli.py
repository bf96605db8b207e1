"""The shared registry and the command line."""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref

import pytest

from explorer import __main__ as cli
from explorer.errors import LoadError
from explorer.models import registry as registry_module
from explorer.models.loading import LoadRequest, load_model
from explorer.models.registry import ModelRegistry

REQUIRED_INFO_KEYS = {
    "name", "family", "architecture", "n_params", "n_layers", "n_heads", "n_kv_heads", "d_model",
    "d_ff", "vocab_size", "context_length", "position_encoding", "norm", "activation", "dtype", "device",
    "memory_bytes",
}  # fmt: skip


def test_concurrent_requests_share_one_load(tiny_dir, monkeypatch):
    calls = []

    def counting_load(request, progress=None):
        calls.append(request)
        return load_model(request, progress)

    monkeypatch.setattr(registry_module, "load_model", counting_load)
    reg = ModelRegistry()
    request = LoadRequest("folder", str(tiny_dir("gpt2")))
    results = []
    threads = [threading.Thread(target=lambda: results.append(reg.load(request))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(r) for r in results}) == 1 and len(results) == 4
    assert reg.loaded() == [results[0]]
    assert reg.unload(request) and reg.get(request) is None and not reg.unload(request)


def test_an_interrupted_wait_does_not_stop_the_load(tiny_dir, monkeypatch):
    """A Streamlit rerun raises inside the waiting script's progress callback; the load goes on."""
    calls = []

    def slow_load(request, progress=None):
        calls.append(request)
        progress("load weights", 0.5)
        time.sleep(0.5)
        return load_model(request, progress)

    class Rerun(Exception):
        pass

    def interrupted(stage, fraction):
        raise Rerun

    monkeypatch.setattr(registry_module, "load_model", slow_load)
    reg = ModelRegistry()
    request = LoadRequest("folder", str(tiny_dir("bert")))
    with pytest.raises(Rerun):
        reg.load(request, interrupted, poll_s=0.01)
    assert reg.loading(request)
    loaded = reg.load(request)  # the next run waits for the same load
    assert loaded.card.family == "encoder" and len(calls) == 1 and not reg.loading(request)


def test_unexpected_failures_become_messages(monkeypatch):
    def broken(request, progress=None):
        raise RuntimeError("disk on fire\nmore detail")

    monkeypatch.setattr(registry_module, "load_model", broken)
    reg = ModelRegistry()
    with pytest.raises(LoadError, match="failed: RuntimeError: disk on fire$"):
        reg.load(LoadRequest("folder", "/x"))
    assert reg.loaded() == [] and not reg.loading(LoadRequest("folder", "/x"))


def test_models_json(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2"}
    assert all({"name", "family", "source"} <= set(r) for r in rows)
    assert {r["family"] for r in rows} >= {"encoder", "decoder"}


def test_info_prints_the_card(tiny_dir, capsys):
    assert cli.main(["info", str(tiny_dir("t5"))]) == 0
    card = json.loads(capsys.readouterr().out)
    assert REQUIRED_INFO_KEYS | {"encoder_layers", "decoder_layers"} <= set(card)
    assert card["family"] == "encoder-decoder" and card["decoder_layers"] == 3


def test_info_failure_is_one_line_and_nonzero(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")


def test_a_loaded_model_is_out_of_the_collectors_sight_until_unloaded(tiny_dir, monkeypatch):
    """After a load, a full collection (Streamlit's after each page run) no longer walks the model or the
    imports (gc.freeze); unloading a model whose objects refer to each other still frees it."""

    def load_with_a_cycle(request, progress=None):
        loaded = load_model(request, progress)
        loaded.model.holder = {"model": loaded.model}  # model -> dict -> model, as SmolLM2's objects do
        return loaded

    monkeypatch.setattr(registry_module, "load_model", load_with_a_cycle)
    reg = ModelRegistry()
    request = LoadRequest("folder", str(tiny_dir("llama")))
    model = reg.load(request).model
    walked = {id(o) for o in gc.get_objects()}
    assert id(model) not in walked and id(model.holder) not in walked and gc.get_freeze_count() > 0
    gone = weakref.ref(model)
    del model
    assert gone() is not None, "the registry keeps the model"
    assert reg.unload(request)
    assert gone() is None, "the unloaded model was freed, cycle and all"


def test_resettling_frees_what_died_in_a_cycle_after_being_frozen():
    """A capture's figure alive at a load and dropped later: frozen, it waits for the server's periodic
    full collection, which frees it."""

    class Figure:
        pass

    figure = Figure()
    figure.data = [figure]  # a cycle, as a Plotly figure and its traces make
    gone = weakref.ref(figure)
    registry_module._settle()
    del figure
    gc.collect()
    assert gone() is not None, "frozen: not looked at by a collection"
    registry_module.resettle()
    assert gone() is None
