"""A small readers-writer lock: many concurrent searches, or one writer.

Searches release the GIL inside the compiled kernels and may run on many threads; a
write (add / remove) may reallocate bucket arrays that a running search is reading, so it
waits until running searches finish and holds new ones back until it is done.  Writers are
preferred, so a steady stream of searches cannot starve a write.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager


class _ReadSide:
    """``with lock.read():`` as a plain class: a generator-based context manager costs
    about 2 us per search, which one-query-per-call users pay on every call."""

    __slots__ = ("_lock",)

    def __init__(self, lock: "ReadWriteLock") -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        with lock._cond:
            while lock._writer or lock._writers_waiting:
                lock._cond.wait()
            lock._readers += 1

    def __exit__(self, *exc) -> None:
        lock = self._lock
        with lock._cond:
            lock._readers -= 1
            if lock._readers == 0:
                lock._cond.notify_all()


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._read_side = _ReadSide(self)

    def read(self) -> _ReadSide:
        return self._read_side

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
