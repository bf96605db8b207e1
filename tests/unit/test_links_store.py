"""Shareable links (explorer.serving.links) and the server's capture store (explorer.serving.store),
without a browser."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from explorer.models.loading import LoadRequest
from explorer.serving import links
from explorer.serving.links import Param
from explorer.serving.store import CaptureStore
from explorer.serving.turns import TurnLock

SCHEMA = (
    Param("text", "t"),
    Param("layer", "l", "int", 0, None, label="layer"),
    Param("temperature", "temp", "float", 0.05, 5.0),
    Param("chat", "c", "bool"),
    Param("picks", "p", "picks"),
)


def test_values_survive_a_round_trip_through_the_url():
    values = {
        "t": "naïve café 🙂 ‫שלום‬ \x07 & ?=#",
        "l": 3,
        "temp": 0.7,
        "c": False,
        "p": ((5, False), (9, True)),
    }
    params, left_out = links.write(SCHEMA, values)
    assert left_out == [] and all(isinstance(v, str) for v in params.values())
    back, problems = links.read(SCHEMA, params)
    assert problems == [] and back == values


@pytest.mark.parametrize(
    "params, word",
    [
        ({"layer": "abc"}, "not a number"),
        ({"layer": "-2"}, "outside"),
        ({"temperature": "0"}, "outside"),
        ({"temperature": "nan"}, "outside"),
        ({"chat": "maybe"}, "on/off"),
        ({"picks": "12,x3"}, "not a token id"),
    ],
)
def test_a_bad_value_gets_a_message_and_the_others_still_apply(params, word):
    values, problems = links.read(SCHEMA, {**params, "text": "kept"})
    assert values == {"t": "kept"}
    assert len(problems) == 1 and word in problems[0]


def test_a_text_longer_than_a_link_carries_is_left_out_and_named():
    params, left_out = links.write(SCHEMA, {"t": "x" * (links.TEXT_LIMIT + 1), "l": 1})
    assert params == {"layer": "1"} and left_out == ["text"]


def test_model_requests_from_a_link():
    request, problems = links.model_request({"model": "smollm2-135m-instruct"})
    assert request == LoadRequest("embedded", "smollm2-135m-instruct") and problems == []
    assert links.model_params(request) == {"model": "smollm2-135m-instruct"}
    hub = LoadRequest("hub", "gpt2", "cpu", "float16")
    assert links.model_request(links.model_params(hub))[0] == hub
    request, problems = links.model_request({"model": "no-such-model", "via": "embedded"})
    assert request is None and "not an embedded model" in problems[0]
    request, problems = links.model_request({"model": "gpt2", "via": "ftp"})
    assert request is None and "source" in problems[0]
    request, problems = links.model_request({"model": "gpt2", "device": "cuda:7"})  # no such GPU here
    assert request == LoadRequest("hub", "gpt2") and "device 'cuda:7' is not one" in problems[0]
    request, problems = links.model_request({"model": "gpt2", "remote_code": "1", "dtype": "int3"})
    assert request == LoadRequest("hub", "gpt2") and not request.trust_remote_code
    assert any("cannot turn on" in p for p in problems) and any("dtype" in p for p in problems)


def test_the_store_drops_the_least_recently_used_over_its_budget():
    store = CaptureStore(budget=100, reserve=0, available=lambda: 10**12)
    store.put("a", "A", 40)
    store.put("b", "B", 40)
    assert store.get("a") == "A"  # now a is the most recently used
    dropped = store.put("c", "C", 40)
    assert dropped == ["b"] and store.was_dropped("b") and not store.was_dropped("a")
    assert store.get("b") is None and store.used == 80
    store.put("b", "B", 40)  # run again: no longer counted as dropped
    assert not store.was_dropped("b")


def test_the_store_drops_old_captures_when_free_memory_runs_low():
    free = [1000]
    store = CaptureStore(budget=10**9, reserve=500, available=lambda: free[0])
    store.put("a", "A", 100)
    store.put("b", "B", 100)
    free[0] = 400  # someone else took memory: under the reserve
    dropped = store.put("c", "C", 100)
    assert dropped == ["a", "b"] and "c" in store  # the newest is kept for the user who asked for it
    assert store.make_room(10**10) == ["c"] and len(store) == 0


def test_figures_are_built_once_per_capture_and_go_with_it():
    store = CaptureStore(budget=100, reserve=0, available=lambda: 10**12)
    cap = object()
    store.put("a", cap, 10)
    built = []
    for _ in range(3):
        store.figure(cap, ("one head", 1, 2), lambda: built.append(1) or "fig")
    assert built == [1]
    store.put("b", object(), 95)  # drops a and its figures
    store.figure(cap, ("one head", 1, 2), lambda: built.append(1) or "fig")
    assert built == [1, 1]


def test_the_store_is_safe_under_concurrent_sessions():
    store = CaptureStore(budget=50 * 10, reserve=0, available=lambda: 10**12)

    def session(i):
        for j in range(200):
            store.put((i, j % 7), j, 10)
            store.get((i, (j + 3) % 7))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.used <= store.budget and len(store) <= 50


def test_sessions_take_turns_on_the_model_in_the_order_they_came():
    lock = TurnLock()
    order = []
    started = threading.Barrier(2)

    def long_work():
        with lock:
            started.wait()
            while lock.waiting < 2:  # the two sessions below are in line
                time.sleep(0.001)
            for step in range(3):
                order.append(f"long {step}")
                lock.yield_turn()  # between two steps: those waiting go first

    def short(name):
        with lock:
            with lock:  # reentrant, as explorer code inside a page's turn takes it again
                order.append(name)

    worker = threading.Thread(target=long_work)
    worker.start()
    started.wait()
    first = threading.Thread(target=short, args=("first",))
    first.start()
    while lock.waiting < 1:
        time.sleep(0.001)
    second = threading.Thread(target=short, args=("second",))
    second.start()
    for t in (worker, first, second):
        t.join(timeout=10)
    assert order == ["long 0", "first", "second", "long 1", "long 2"]
    assert lock.acquire(blocking=False) and not lock.waiting
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_a_session_that_waits_for_the_model_is_told(monkeypatch):
    from explorer import session

    shown = []

    class Note:
        def info(self, text):
            shown.append(text)

        def empty(self):
            shown.append(None)

    monkeypatch.setattr(session.st, "empty", Note)
    loaded = SimpleNamespace(lock=TurnLock(), card=SimpleNamespace(name="smollm2"))
    with session.model_turn(loaded, "a capture"):
        pass
    assert shown == []  # nobody else on the model: no message
    holding = threading.Event()

    def other_session():
        with loaded.lock:
            holding.set()
            time.sleep(0.3)

    threading.Thread(target=other_session).start()
    holding.wait()
    with session.model_turn(loaded, "a capture"):
        assert loaded.lock._is_owned()
    assert shown[0].startswith("Waiting for smollm2: another session") and "(a capture)" in shown[0]
    assert shown[-1] is None  # the message goes once it is this session's turn
