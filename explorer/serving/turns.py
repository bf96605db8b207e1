"""Turns on a shared model: a reentrant lock that serves waiting sessions in the order they came.

Every session of a server runs its script in its own thread and shares one copy of each model; runs on a
model are serialized (the model's forward is not re-entrant once hooks are involved, and two runs at once
would only slow each other down). `threading.RLock` would do, but it is not fair and cannot hand over
the model in the middle of long work: a session generating 256 tokens or classifying 100 lines would keep
thirty classmates waiting until it is done. `TurnLock` queues waiters first come, first served, and
`yield_turn()` lets long work, between two of its steps, step aside for the sessions already waiting and
go on after them.
"""

from __future__ import annotations

import threading
from collections import deque


class TurnLock:
    """A reentrant, first-come-first-served lock with `yield_turn` (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[int] = deque()

    def acquire(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None and not self._queue:
                self._owner, self._depth = me, 1
                return True
            if not blocking:
                return False
            self._wait_in_line(me)
            self._depth = 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a TurnLock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    def yield_turn(self) -> None:
        """Called by the holder between two steps of long work: when other threads wait, they go first
        (those already waiting, in order), then this one takes the lock back at the same depth."""
        me = threading.get_ident()
        with self._cond:
            if self._owner != me or not self._queue:
                return
            depth, self._owner, self._depth = self._depth, None, 0
            self._cond.notify_all()
            self._wait_in_line(me)
            self._depth = depth

    @property
    def waiting(self) -> int:
        """How many threads wait for the lock now."""
        return len(self._queue)

    def _is_owned(self) -> bool:
        """Whether this thread holds the lock (as threading.RLock's)."""
        return self._owner == threading.get_ident()

    def _wait_in_line(self, me: int) -> None:  # with self._cond held
        self._queue.append(me)
        self._cond.wait_for(lambda: self._owner is None and self._queue[0] == me)
        self._queue.popleft()
        self._owner = me
        self._cond.notify_all()  # the next in line re-checks whether it is first now

    def __enter__(self) -> "TurnLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
