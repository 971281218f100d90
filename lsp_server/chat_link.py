"""The chat panel inside the editor. `zhiyin.openChat` starts the chat server in this process, on
its own thread and event loop, with the same engine, index and memory as the completions, and
answers its address (the editor shows the page in a webview). Edits applied from the chat go to the
editor as `workspace/applyEdit`, so the user's undo works, and are checked against the editor's
copies of open files."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types

from lsp_server.repository_edits import MSG_ANNOTATION
from zhiyin.chat_server import ChatServer
from zhiyin.conversations import ConversationStore
from zhiyin.edits import CheckedEdit
from zhiyin.i18n import _

if TYPE_CHECKING:
    from lsp_server.server import ZhiyinServer

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
# The editor frames the page: VS Code's webviews (vscode-webview:, allowed anyway), or a browser
# workbench served on loopback (code-server, VS Code's serve-web) on a port only the editor knows.
EDITOR_FRAMES = ("http://127.0.0.1:*", "http://localhost:*")


class EditorLink:
    """`zhiyin.chat_server.EditorLink` over this language server's client."""

    def __init__(self, server: ZhiyinServer) -> None:
        self.server = server

    async def apply(self, checked: list[CheckedEdit], instruction: str) -> tuple[bool, str | None]:
        edit = self.server.edits.workspace_edit(checked, instruction, confirmed=True)  # Apply in the chat
        sent = asyncio.run_coroutine_threadsafe(self.server.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
            edit=edit, label=_(MSG_ANNOTATION).format(instruction=instruction))), self.server.loop)
        result = await asyncio.wrap_future(sent)  # awaited on the chat's loop; the request runs on the LSP's
        return result.applied, result.failure_reason

    def read_text(self, path: Path) -> str:
        return self.server.edits.read_text(path)


class ChatThread:
    """The chat server, started once on first request."""

    def __init__(self, server: ZhiyinServer) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._chat: ChatServer | None = None

    def start(self) -> ChatServer:
        """The running chat server (started now if it was not); raises OSError if it cannot listen."""
        with self._lock:
            if self._chat is not None:
                return self._chat
            self.server.backends.start()
            chat = ChatServer(self.server.backends, ConversationStore(), editor=EditorLink(self.server),
                              frame_ancestors=EDITOR_FRAMES)
            started = threading.Event()
            failure: list[BaseException] = []

            def run() -> None:
                async def main() -> None:
                    ready = asyncio.get_running_loop().create_future()
                    serving = asyncio.create_task(chat.run(ready))
                    await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
                    started.set()
                    await serving

                try:
                    asyncio.run(main())
                except BaseException as e:
                    failure.append(e)
                    started.set()
                    log.exception("the chat server stopped")

            threading.Thread(target=run, name="zhiyin-chat", daemon=True).start()
            started.wait(START_TIMEOUT_S)
            if failure:
                raise OSError(str(failure[0]))
            self._chat = chat
            return chat
