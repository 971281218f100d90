"""A lock granted in arrival order, so that requests from many clients take turns fairly
(`threading.Lock` lets a newcomer overtake the waiters). A waiter whose cancel event is set leaves
the queue without ever running."""

from __future__ import annotations

import threading
from collections import deque

POLL_S = 0.05  # how often a waiter looks at its cancel event


class FifoLock:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False

    @property
    def waiting(self) -> int:
        """Requests queued behind the one running."""
        return len(self._waiters)

    def acquire(self, cancel: threading.Event | None = None) -> bool:
        """Waits for this caller's turn; False when `cancel` was set first."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        while not turn.wait(POLL_S):
            if cancel is not None and cancel.is_set():
                with self._mutex:
                    if turn.is_set():  # handed over meanwhile: the caller owns the lock now
                        return True
                    self._waiters.remove(turn)
                    return False
        return True

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()  # handed straight to the next: nobody can overtake
            else:
                self._held = False
