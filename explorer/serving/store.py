"""The captures of every session of one server, kept within a memory budget.

A capture keeps every attention map of a text: 26 MB for 128 tokens on SmolLM2, gigabytes for long texts.
Thirty students each keeping theirs must not exhaust the server, so captures live here, not in each
session: one per (model, text, target), shared by the sessions that look at the same text (a capture is
read-only), with the figures drawn from it. When the captures together pass the budget, or the machine's
free memory falls under the reserve, the least recently used ones are dropped; a session that comes back
to a dropped capture learns that it was dropped (`was_dropped`) and runs it again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import psutil

BUDGET_SHARE = 0.25  # of the machine's memory, for all captures together
RESERVE_SHARE = 0.10  # of the machine's memory kept free: below it old captures go
FIGURES_PER_CAPTURE = 32
DROPPED_REMEMBERED = 4096


def default_budget() -> int:
    """Bytes all captures may take: TRANSFORMER_EXPLORER_CAPTURE_MB if set, else a quarter of memory."""
    configured = os.environ.get("TRANSFORMER_EXPLORER_CAPTURE_MB")
    if configured:
        return int(float(configured) * 2**20)
    return int(BUDGET_SHARE * psutil.virtual_memory().total)


@dataclass
class _Entry:
    value: Any
    nbytes: int
    figures: OrderedDict = field(default_factory=OrderedDict)


class CaptureStore:
    """Captures by key, least recently used first out. Thread-safe: sessions run in their own threads."""

    def __init__(
        self,
        budget: int | None = None,
        reserve: int | None = None,
        available: Callable[[], int] | None = None,
    ):
        total = psutil.virtual_memory().total
        self.budget = default_budget() if budget is None else budget
        self.reserve = int(RESERVE_SHARE * total) if reserve is None else reserve
        self._available = available or (lambda: psutil.virtual_memory().available)
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._dropped: OrderedDict[Hashable, None] = OrderedDict()
        self._guard = threading.Lock()

    @property
    def used(self) -> int:
        with self._guard:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> Any | None:
        """The capture under `key` (now the most recently used), or None."""
        with self._guard:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry.value

    def put(self, key: Hashable, value: Any, nbytes: int) -> list[Hashable]:
        """Keeps `value`; drops the least recently used others while over the budget or short of free
        memory. Returns the keys dropped."""
        with self._guard:
            self._entries.pop(key, None)
            self._dropped.pop(key, None)
            self._entries[key] = _Entry(value, nbytes)
            return self._shrink(keep=key, need=0)

    def make_room(self, nbytes: int) -> list[Hashable]:
        """Drops old captures so that one of `nbytes` more fits the budget (before running it)."""
        with self._guard:
            return self._shrink(keep=None, need=nbytes)

    def was_dropped(self, key: Hashable) -> bool:
        """Whether `key` was kept here and dropped to save memory (and not kept again since)."""
        with self._guard:
            return key in self._dropped

    def figures(self, value: Any) -> OrderedDict:
        """The figures drawn from `value` (a capture kept here), to reuse; a throwaway dict otherwise."""
        with self._guard:
            for entry in self._entries.values():
                if entry.value is value:
                    return entry.figures
        return OrderedDict()

    def figure(self, value: Any, key: Hashable, build: Callable[[], Any]) -> Any:
        """The figure `key` of `value`, built once (`build()`) and kept while the capture is."""
        figures = self.figures(value)
        found = figures.get(key)
        if found is None:
            found = build()
            figures[key] = found
            while len(figures) > FIGURES_PER_CAPTURE:
                figures.popitem(last=False)
        else:
            figures.move_to_end(key)
        return found

    def forget(self, keep: Callable[[Hashable], bool]) -> int:
        """Drops the captures whose key `keep` rejects (e.g. those of a model just unloaded); how many."""
        with self._guard:
            gone = [k for k in self._entries if not keep(k)]
            for k in gone:
                del self._entries[k]
            return len(gone)

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()
            self._dropped.clear()

    def _shrink(self, keep: Hashable | None, need: int) -> list[Hashable]:
        dropped = []

        def over() -> bool:
            used = sum(e.nbytes for e in self._entries.values())
            return used + need > self.budget or self._available() - need < self.reserve

        while over():
            victim = next((k for k in self._entries if k != keep), None)
            if victim is None:
                break
            del self._entries[victim]
            self._dropped[victim] = None
            dropped.append(victim)
        while len(self._dropped) > DROPPED_REMEMBERED:
            self._dropped.popitem(last=False)
        return dropped
