"""Adaptive debounce: how long a completion request waits before the model starts on it.

A request the next keystroke will supersede is wasted work, and the next keystroke comes about as
fast as the user types: wait a share of the user's recent interval between requests (pauses
longer than `PAUSE_S` are not typing), within [min, max].
"""

from __future__ import annotations

import statistics
import time
from collections import deque

PAUSE_S = 1.0
WINDOW = 8  # recent intervals that estimate the typing pace
SHARE = 0.5


class AdaptiveDebounce:
    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s, self.max_s = min_s, max_s
        self._last: dict[str, float] = {}  # uri -> time of its last request
        self._intervals: deque[float] = deque(maxlen=WINDOW)  # one user types in every document

    def arrived(self, uri: str, now: float | None = None) -> float:
        """Records a request for `uri` arriving `now`; the seconds it should wait before a model run."""
        now = time.monotonic() if now is None else now
        last = self._last.get(uri)
        self._last[uri] = now
        if last is not None and now - last < PAUSE_S:
            self._intervals.append(now - last)
        if not self._intervals:
            return self.min_s
        return min(self.max_s, max(self.min_s, SHARE * statistics.median(self._intervals)))

    def forget(self, uri: str) -> None:
        self._last.pop(uri, None)
