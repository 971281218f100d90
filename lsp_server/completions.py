"""Runs completions for the server: off the event loop, one at a time per document.

A newer request for a document cancels the one still running for it, and `$/cancelRequest`
cancels its own: either sets the request's `threading.Event`, which the engine checks between
tokens, so stale work stops within one token.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath

from lsprotocol import types
from pygls.uris import to_fs_path
from pygls.workspace import Workspace

from lsp_server.backends import Backends
from lsp_server.positions import cursor_from_position
from lsp_server.settings import Settings
from zhiyin.completion import Completer, Completion, CompletionRequest

ENGINE_WAIT_S = 120.0  # a request arriving while the model loads waits this long at most


class CompletionRunner:
    def __init__(self, backends: Backends, settings: Settings) -> None:
        self.backends, self.settings = backends, settings
        # requests past the newest only wait to see their cancel flag: two workers are enough
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="zhiyin-complete")
        self._running: dict[str, threading.Event] = {}  # uri -> cancel flag; touched on the loop only

    async def complete(self, workspace: Workspace, uri: str, position: types.Position) -> Completion | None:
        """The completion at `position` in the document `uri`; None when there is none, the position
        is outside the document, or the request was superseded."""
        document = workspace.get_text_document(uri)
        try:
            text = document.source
        except OSError:  # neither open in the editor nor readable on disk
            return None
        cursor = cursor_from_position(text, position, workspace.position_encoding or types.PositionEncodingKind.Utf16)
        if cursor is None:
            return None
        cancel = threading.Event()
        if (previous := self._running.get(uri)) is not None:
            previous.set()
        self._running[uri] = cancel
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._complete, uri, text, cursor, cancel)
        except asyncio.CancelledError:  # $/cancelRequest: pygls cancels the handler's task
            cancel.set()
            raise
        finally:
            if self._running.get(uri) is cancel:
                del self._running[uri]

    def _complete(self, uri: str, text: str, cursor: tuple[int, int], cancel: threading.Event) -> Completion | None:
        engine = self.backends.wait_for_engine(ENGINE_WAIT_S, cancel)
        if engine is None or cancel.is_set():
            return None
        path, in_repository = self._repository_path(uri)
        with self.backends.index_for_reading() as index:
            completer = Completer(engine, index if in_repository else None,
                                  max_tokens=self.settings.max_tokens, context_budget=self.settings.context_budget)
            return completer.complete(CompletionRequest(path=path, text=text, line=cursor[0], column=cursor[1]),
                                      cancel=cancel)

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

    def shutdown(self) -> None:
        for cancel in self._running.values():
            cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
