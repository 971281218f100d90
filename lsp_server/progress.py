"""Work-done progress (`window/workDoneProgress/create`, then `$/progress` begin/report/end) sent
from background threads: every message goes through the event loop, which owns the output stream."""

from __future__ import annotations

import asyncio
import logging
import uuid

from lsprotocol import types
from pygls.lsp.server import LanguageServer

log = logging.getLogger(__name__)

CREATE_TIMEOUT_S = 10.0


class Progress:
    def __init__(self, server: LanguageServer, loop: asyncio.AbstractEventLoop, *, enabled: bool) -> None:
        self._server, self._loop = server, loop
        self._enabled = enabled  # the client said it shows server-initiated progress

    def begin(self, title: str) -> str | None:
        """A new progress bar titled `title`; its token, or None when the client shows none."""
        if not self._enabled:
            return None
        token = f"zhiyin-{uuid.uuid4().hex}"
        created = asyncio.run_coroutine_threadsafe(self._server.work_done_progress.create_async(token), self._loop)
        try:
            created.result(CREATE_TIMEOUT_S)
        except Exception:  # the client refused or did not answer: go on without a bar
            log.warning("the client did not create progress %s", token, exc_info=True)
            return None
        self._send(self._server.work_done_progress.begin, token, types.WorkDoneProgressBegin(title=title))
        return token

    def report(self, token: str | None, message: str, percentage: int | None = None) -> None:
        if token is not None:
            self._send(self._server.work_done_progress.report, token,
                       types.WorkDoneProgressReport(message=message, percentage=percentage))

    def end(self, token: str | None, message: str | None = None) -> None:
        if token is not None:
            self._send(self._server.work_done_progress.end, token, types.WorkDoneProgressEnd(message=message))

    def _send(self, method, token: str, value) -> None:
        self._loop.call_soon_threadsafe(method, token, value)
