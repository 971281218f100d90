"""The engine, the index and the project memory behind a server (the language server, the chat
server), opened lazily in background threads.

The engine (the model) loads on first need; requests wait for it, bounded. The index is opened and
brought up to date once, with work-done progress; afterwards saves re-index their file. One SQLite
connection serves the index, so reads (completion context) and writes (updates) never overlap:
a completion that finds the index busy goes on without repository context rather than waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from engine.errors import EngineError
from engine.prompt import TextModel
from indexer.index import Index
from zhiyin.config import load_config
from zhiyin.i18n import N_, _, translate_error
from zhiyin.memory import (
    MSG_MOVED_ASIDE,
    RepositoryMemory,
    open_memory,
    record_accepted_edit,
)
from zhiyin.runtime import INDEX_PHASES, open_engine, open_index

log = logging.getLogger(__name__)

MSG_LOADING_MODEL = N_("Loading the model")
MSG_INDEXING = N_("Indexing the repository")
MSG_INDEXED = N_("{files} files, {chunks} chunks")
MSG_ENGINE_FAILED = N_("Zhiyin cannot load the model: {error}")
MSG_INDEX_FAILED = N_("Zhiyin cannot index {root}: {error}")
MSG_MEMORY_FAILED = N_("Zhiyin cannot open the project memory: {error}")


class Progress(Protocol):
    """Where long work shows its progress: the editor's work-done progress, a terminal's bar."""

    def begin(self, title: str) -> str | None: ...

    def report(self, token: str | None, message: str, percentage: int | None = None) -> None: ...

    def end(self, token: str | None, message: str | None = None) -> None: ...


class Backends:
    def __init__(self, root: Path | None, *, embeddings: bool, progress: Progress,
                 show_error: Callable[[str], None], model: str | None = None, engine: TextModel | None = None,
                 index: Index | None = None) -> None:
        """`model`: a name or path over the configuration's; `engine`, `index`: already opened (a
        benchmark, a test), not loaded again."""
        self.root, self.embeddings, self.model = root, embeddings, model
        self._progress, self._show_error = progress, show_error
        self._start_lock = threading.Lock()
        self._started = False
        self._engine = engine
        self._engine_done = threading.Event()  # loaded, or failed
        self.engine_error: str | None = None  # why it failed, for the user
        self._index = index
        self._index_lock = threading.Lock()  # held while the index is read or written
        self._index_done = threading.Event()  # the first index run ended, well or not
        if engine is not None:
            self._engine_done.set()
        if index is not None:
            self._index_done.set()
        self._waiting_paths: list[Path] = []  # changed while the first index run went on
        self.index_changed: list[Callable[[], None]] = []  # called (in a worker thread) after each update
        self._memory: RepositoryMemory | None = None
        self._memory_lock = threading.Lock()
        self._memory_failed = False

    def start(self) -> None:
        """Load the engine and the index in the background; only the first call does anything."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        if self._engine is None:
            threading.Thread(target=self._load_engine, name="zhiyin-engine", daemon=True).start()
        if self.root is not None and self._index is None:
            threading.Thread(target=self._load_index, name="zhiyin-index", daemon=True).start()

    def memory(self) -> RepositoryMemory | None:
        """The project memory of the workspace, opened on first use; None without a workspace or
        when it cannot be opened (said once)."""
        if self.root is None:
            return None
        with self._memory_lock:
            if self._memory is None and not self._memory_failed:
                try:
                    self._memory = open_memory(self.root, embeddings=self.embeddings)
                    if self._memory.store.moved_aside is not None:
                        self._show_error(_(MSG_MOVED_ASIDE).format(path=self._memory.store.moved_aside))
                except EngineError as e:
                    self._memory_failed = True
                    self._show_error(_(MSG_MEMORY_FAILED).format(error=translate_error(e)))
            return self._memory

    def record_accepted_edit(self, instruction: str, files: list[str]) -> None:
        """Keeps an applied edit in the project memory, if there is one; never fails the edit."""
        memory = self.memory()
        if memory is not None:
            try:
                record_accepted_edit(memory, instruction, files)
            except Exception:  # the edit landed; a memory that could not be kept must not say otherwise
                log.exception("recording the accepted edit")

    @property
    def index_ready(self) -> bool:
        """The first index run has ended and left an index."""
        return self._index_done.is_set() and self._index is not None

    @property
    def engine_state(self) -> str:
        """"idle" (not asked for yet), "loading", "ready" or "failed" (`engine_error` says why)."""
        if self._engine is not None:
            return "ready"
        if self._engine_done.is_set():
            return "failed"
        return "loading" if self._started else "idle"

    @property
    def engine(self) -> TextModel | None:
        """The engine if loaded, without waiting."""
        return self._engine

    def wait_for_engine(self, timeout: float, cancel: threading.Event) -> TextModel | None:
        """The engine once loaded; None if it failed, `timeout` seconds passed, or `cancel` was set."""
        self.start()
        deadline = time.monotonic() + timeout
        while not cancel.is_set() and time.monotonic() < deadline:
            if self._engine_done.wait(0.1):  # short waits: a cancelled request leaves at once
                break
        return self._engine

    @contextmanager
    def index_for_reading(self, wait_s: float = 0.0) -> Iterator[Index | None]:
        """The index while no update is writing it; None when it is not there or busy. With
        `wait_s`, waits that long for the first index run to end and for a writer to finish."""
        deadline = time.monotonic() + wait_s
        if wait_s:
            self.start()
            self._index_done.wait(wait_s)
        timeout = max(0.0, deadline - time.monotonic()) if wait_s else -1
        if self._index is None or not self._index_lock.acquire(blocking=bool(wait_s), timeout=timeout):
            yield None
            return
        try:
            yield self._index
        finally:
            self._index_lock.release()

    def update_files(self, paths: list[Path]) -> None:
        """Re-index files in the background (after a save, or changes on disk), one thread for all.
        Before the first index run has ended they wait for it: it may have read them already."""
        self.start()
        with self._start_lock:
            if self._index is None and not self._index_done.is_set():
                self._waiting_paths += paths
                return
        if self._index is not None and paths:
            threading.Thread(target=self._update_files, args=(paths,), name="zhiyin-update", daemon=True).start()

    def _load_engine(self) -> None:
        token = self._progress.begin(_(MSG_LOADING_MODEL))
        try:
            self._engine = open_engine(load_config(self.root), self.model)
        except EngineError as e:
            self.engine_error = _(MSG_ENGINE_FAILED).format(error=translate_error(e))
            self._show_error(self.engine_error)
        except Exception as e:  # a broken model file must not take the server down with it
            log.exception("loading the model")
            self.engine_error = _(MSG_ENGINE_FAILED).format(error=e)
            self._show_error(self.engine_error)
        finally:
            self._engine_done.set()
            self._progress.end(token)

    def _load_index(self) -> None:
        token = self._progress.begin(_(MSG_INDEXING))

        def report(phase: str, done: int, total: int | None) -> None:
            message = _(INDEX_PHASES[phase]) + (f" {done}/{total}" if total else "")
            self._progress.report(token, message, round(100 * done / total) if total else None)

        try:
            with self._index_lock:
                index = open_index(self.root, embeddings=self.embeddings)
                stats = index.update(report)
                self._index = index
            self._notify_index_changed()
            self._progress.end(token, _(MSG_INDEXED).format(files=stats.files, chunks=stats.chunks))
        except EngineError as e:
            self._progress.end(token)
            self._show_error(_(MSG_INDEX_FAILED).format(root=self.root, error=translate_error(e)))
        except Exception as e:
            log.exception("indexing %s", self.root)
            self._progress.end(token)
            self._show_error(_(MSG_INDEX_FAILED).format(root=self.root, error=e))
        finally:
            with self._start_lock:
                self._index_done.set()
                waiting, self._waiting_paths = self._waiting_paths, []
            if waiting and self._index is not None:
                self._update_files(list(dict.fromkeys(waiting)))

    def _update_files(self, paths: list[Path]) -> None:
        for path in paths:
            try:
                with self._index_lock:  # taken per file: completions read the index in between
                    assert self._index is not None
                    self._index.update_file(path)
            except Exception:  # the next save or start tries again
                log.exception("re-indexing %s", path)
        self._notify_index_changed()

    def _notify_index_changed(self) -> None:
        for listener in self.index_changed:
            listener()
