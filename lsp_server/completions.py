"""Runs completions for the server: off the event loop, at most one model run per document.

Each request is answered from the cheapest source that has it:
1. the cache: an earlier completion the user is typing into (forward matching);
2. the model run in flight for the document, when the user typed what it has generated so far;
3. a new model run, after the adaptive debounce, unless a newer request came meanwhile.

A newer request for a document supersedes the older one, which is answered empty at once, and
stops its model run unless it reuses it; `$/cancelRequest` cancels its own request. A run no
request waits for any more is stopped after a short grace — a client cancels its old request just
before sending the next, which may want the run — within one token of the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

from lsprotocol import types
from pygls.uris import to_fs_path
from pygls.workspace import Workspace

from engine.errors import EngineError
from engine.memory import trim_heap
from engine.prompt import TextModel
from lsp_server.completion_cache import CompletionCache, forward
from lsp_server.debounce import AdaptiveDebounce
from lsp_server.positions import cursor_from_position
from lsp_server.settings import Settings
from zhiyin.backends import Backends
from zhiyin.completion import Completer, Completion, CompletionRequest
from zhiyin.i18n import N_, _, translate_error

log = logging.getLogger(__name__)

ENGINE_WAIT_S = 120.0  # a request arriving while the model loads waits this long at most
ORPHAN_GRACE_S = 0.15  # a run without waiters lives this long, for the request that may follow

MSG_COMPLETION_FAILED = N_("Zhiyin cannot complete here: {error}")


@dataclass
class CompletionStats:
    """Counters since the server started (the `zhiyin/stats` request reports them)."""

    requests: int = 0
    cache_hits: int = 0
    inflight_reused: int = 0
    superseded: int = 0  # answered empty: a newer request for the document came
    cancelled: int = 0  # model runs stopped before they finished
    completed: int = 0  # model runs that finished
    prompt_tokens: int = 0  # of finished runs
    cached_prompt_tokens: int = 0  # of those, whose KV the engine reused

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Run:
    """One model run at one document position; requests wait on `future`."""

    def __init__(self, prefix: str, suffix: str) -> None:
        self.prefix, self.suffix = prefix, suffix
        self.cancel = threading.Event()
        self.streamed = ""  # raw text generated so far, written by the worker thread
        self.waiters = 0
        self.future: asyncio.Future[Completion | None]

    def typed_since(self, prefix: str, suffix: str) -> str | None:
        """What the user typed since this run started, when the run has generated it already;
        None when the run cannot answer at (prefix, suffix)."""
        if suffix != self.suffix or not prefix.startswith(self.prefix):
            return None
        typed = prefix[len(self.prefix):]
        return typed if self.streamed.startswith(typed) else None

    def on_text(self, text: str) -> None:
        self.streamed = text


class CompletionRunner:
    def __init__(self, backends: Backends, settings: Settings, show_error: Callable[[str], None]) -> None:
        self.backends, self.settings = backends, settings
        self.stats = CompletionStats()
        self._show_error = show_error
        self._shown_errors: set[str] = set()  # each failure is shown once, not per keystroke
        # a run cancelled or superseded leaves within a token: two workers are enough
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="zhiyin-complete")
        self._cache = CompletionCache()
        self._debounce = AdaptiveDebounce(settings.debounce_min_ms / 1000, settings.debounce_max_ms / 1000)
        # touched on the event loop only: uri -> the run in flight / the newest request's "superseded" flag
        self._runs: dict[str, _Run] = {}
        self._newest: dict[str, asyncio.Future[None]] = {}
        self._completer: Completer | None = None
        self._completer_lock = threading.Lock()
        backends.index_changed.append(self._forget_context)

    async def complete(self, workspace: Workspace, uri: str, position: types.Position) -> Completion | None:
        """The completion at `position` in the document `uri`; None when there is none, the position
        is outside the document, or a newer request superseded this one."""
        document = workspace.get_text_document(uri)
        try:
            text = document.source
        except (OSError, UnicodeDecodeError):  # not open in the editor, and unreadable or not text on disk
            return None
        cursor = cursor_from_position(text, position, workspace.position_encoding or types.PositionEncodingKind.Utf16)
        if cursor is None:
            return None
        path, in_repository = self._repository_path(uri)
        request = CompletionRequest(path=path, text=text, line=cursor[0], column=cursor[1])
        offset = request.offset
        prefix, suffix = text[:offset], text[offset:]

        self.stats.requests += 1
        wait_s = self._debounce.arrived(uri)
        superseded = self._supersede(uri)
        found, completion = self._cache.lookup(uri, prefix, suffix)
        if found:
            self.stats.cache_hits += 1
            return completion if completion is not None and completion.text else None
        run = self._runs.get(uri)
        if run is not None and (typed := run.typed_since(prefix, suffix)) is not None:
            self.stats.inflight_reused += 1
            return forward(await self._wait(run, superseded), typed, suffix)
        if run is not None:
            run.cancel.set()
        await asyncio.sleep(wait_s)  # $/cancelRequest meanwhile: CancelledError, nothing started
        if superseded.done():
            self.stats.superseded += 1
            return None
        return await self._wait(self._start(uri, request, prefix, suffix, in_repository), superseded)

    def forget(self, uri: str) -> None:
        """The document was closed."""
        self._cache.forget(uri)
        self._debounce.forget(uri)
        if (run := self._runs.pop(uri, None)) is not None:
            run.cancel.set()
        self._newest.pop(uri, None)

    def shutdown(self) -> None:
        for run in self._runs.values():
            run.cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _supersede(self, uri: str) -> asyncio.Future[None]:
        """Marks the older request for `uri` superseded; the flag of this new one."""
        if (older := self._newest.get(uri)) is not None and not older.done():
            older.set_result(None)
        self._newest[uri] = flag = asyncio.get_running_loop().create_future()
        return flag

    def _start(self, uri: str, request: CompletionRequest, prefix: str, suffix: str, in_repository: bool) -> _Run:
        run = _Run(prefix, suffix)
        run.future = asyncio.get_running_loop().run_in_executor(self._executor, self._run_model, run, request,
                                                                in_repository)
        run.future.add_done_callback(lambda _future: self._finished(uri, run))
        self._runs[uri] = run
        return run

    async def _wait(self, run: _Run, superseded: asyncio.Future[None]) -> Completion | None:
        run.waiters += 1
        try:
            # asyncio.wait leaves both futures alone when this request is cancelled
            await asyncio.wait((run.future, superseded), return_when=asyncio.FIRST_COMPLETED)
            if not run.future.done():
                self.stats.superseded += 1
                return None
            completion = None if run.future.cancelled() else run.future.result()
            return completion if completion is not None and completion.text else None
        finally:
            run.waiters -= 1
            if run.waiters == 0 and not run.future.done():
                asyncio.get_running_loop().call_later(ORPHAN_GRACE_S, self._stop_if_orphaned, run)

    @staticmethod
    def _stop_if_orphaned(run: _Run) -> None:
        if run.waiters == 0:
            run.cancel.set()

    def _finished(self, uri: str, run: _Run) -> None:
        if self._runs.get(uri) is run:
            del self._runs[uri]
        if not self._runs:  # idle: a burst of stopped runs must not leave the process at its peak
            with contextlib.suppress(RuntimeError):  # the executor is shut down
                self._executor.submit(trim_heap)
        completion = None if run.future.cancelled() else run.future.result()
        if run.cancel.is_set() or run.future.cancelled():
            self.stats.cancelled += 1
            return
        if completion is None:  # the engine failed or never loaded: not an answer to remember
            return
        self.stats.completed += 1
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.cached_prompt_tokens += completion.cached_tokens
        self._cache.store(uri, run.prefix, run.suffix, completion)

    def _run_model(self, run: _Run, request: CompletionRequest, in_repository: bool) -> Completion | None:
        """In a worker thread: the engine's completion, or None when stopped or failed."""
        engine = self.backends.wait_for_engine(ENGINE_WAIT_S, run.cancel)
        if engine is None or run.cancel.is_set():
            return None
        completer = self._completer_for(engine)
        try:
            memory = self.backends.memory() if in_repository else None
            with self.backends.index_for_reading() as index:
                return completer.complete(request, run.cancel, index=index if in_repository else None,
                                          memory=memory, on_text=run.on_text)
        except EngineError as e:
            self._report(_(MSG_COMPLETION_FAILED).format(error=translate_error(e)))
        except Exception as e:  # a bug must cost one completion, not the server
            log.exception("completing %s", request.path)
            self._report(_(MSG_COMPLETION_FAILED).format(error=e))
        return None

    def _completer_for(self, engine: TextModel) -> Completer:
        with self._completer_lock:
            if self._completer is None:
                self._completer = Completer(engine, max_tokens=self.settings.max_tokens,
                                            context_budget=self.settings.context_budget)
            return self._completer

    def _forget_context(self) -> None:
        if self._completer is not None:
            self._completer.forget_context()

    def _report(self, message: str) -> None:
        if message not in self._shown_errors:
            self._shown_errors.add(message)
            self._show_error(message)

    def _repository_path(self, uri: str) -> tuple[str, bool]:
        """The document's path relative to the workspace root, and whether it lies inside it; the
        file name alone (for its language) when it does not."""
        fs_path = to_fs_path(uri)
        if fs_path is None:  # not a file: URI (untitled:...); its name still tells the language
            return PurePath(uri.rsplit("/", 1)[-1]).as_posix(), False
        path, root = Path(fs_path).resolve(), self.backends.root
        if root is not None and path.is_relative_to(root):
            return path.relative_to(root).as_posix(), True
        return path.name, False
