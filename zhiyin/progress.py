"""Long work (loading the model, indexing) shown on a terminal's progress bar and kept for the
chat panel's status. Called from background threads."""

from __future__ import annotations

import itertools
import threading

from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class ProgressBoard:
    """A `zhiyin.backends.Progress` that remembers what is going on; with `terminal`, also draws it."""

    def __init__(self, *, terminal: bool) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                              TextColumn("{task.fields[message]}"), TimeElapsedColumn(),
                              transient=False) if terminal else None
        self._bar_ids: dict[str, int] = {}

    def begin(self, title: str) -> str | None:
        with self._lock:
            token = f"task-{next(self._ids)}"
            self._tasks[token] = {"title": title, "message": "", "percentage": None}
            if self._bars is not None:
                if not self._bar_ids:
                    self._bars.start()
                self._bar_ids[token] = self._bars.add_task(title, total=None, message="")
        return token

    def report(self, token: str | None, message: str, percentage: int | None = None) -> None:
        with self._lock:
            if token not in self._tasks:
                return
            self._tasks[token].update(message=message, percentage=percentage)
            if self._bars is not None:
                self._bars.update(self._bar_ids[token], message=message,
                                  total=100 if percentage is not None else None, completed=percentage or 0)

    def end(self, token: str | None, message: str | None = None) -> None:
        with self._lock:
            task = self._tasks.pop(token, None) if token else None
            if task is None:
                return
            if self._bars is not None:
                self._bars.update(self._bar_ids.pop(token), total=100, completed=100, message=message or "")
                if not self._bar_ids:
                    self._bars.stop()

    def snapshot(self) -> list[dict]:
        """What is running now: title, message, percentage (None while unknown)."""
        with self._lock:
            return [dict(task) for task in self._tasks.values()]
