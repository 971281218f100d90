"""The Zhiyin language server: inline completions from the local engine and the repository index.

One module-level server; each feature is a function named after its LSP method. Handlers parse
the request and hand the work to `CompletionRunner` / `Backends`; nothing slow runs on the event
loop. Capabilities: `textDocument/inlineCompletion` (LSP 3.18), `textDocument/completion` for
clients without it, incremental sync, re-indexing on save.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from lsp_server.backends import Backends
from lsp_server.completions import CompletionRunner
from lsp_server.progress import Progress
from lsp_server.settings import Settings, parse_settings
from zhiyin.i18n import set_locale

if TYPE_CHECKING:
    from pygls.server import ServerErrors

log = logging.getLogger(__name__)

STATS = "zhiyin/stats"
MAX_LABEL_CHARS = 60  # of a completion item's label; the item inserts the whole text


class ZhiyinServer(LanguageServer):
    """The state the features share, set up by `initialize`."""

    settings: Settings
    backends: Backends
    completions: CompletionRunner
    loop: asyncio.AbstractEventLoop  # the one serving the client
    watch_files: bool  # the client watches files for us when asked

    def report_server_error(self, error: Exception, source: ServerErrors) -> None:
        # pygls would show its own English text; a broken message is the client's bug: log it only
        log.error("%s: %s", source.__name__, error)

    def show_message_threadsafe(self, message: str, kind: types.MessageType) -> None:
        """`window/showMessage` from any thread (the event loop owns the output stream)."""
        self.loop.call_soon_threadsafe(
            self.window_show_message, types.ShowMessageParams(type=kind, message=message))


SERVER = ZhiyinServer("zhiyin", version("zhiyin"))


@SERVER.feature(types.INITIALIZE)
def initialize(server: ZhiyinServer, params: types.InitializeParams) -> None:
    set_locale(params.locale)
    server.settings, problems = parse_settings(params.initialization_options)
    for message in problems:
        log.warning("%s", message)
        server.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))
    server.loop = asyncio.get_running_loop()
    progress = Progress(server, server.loop,
                        enabled=bool(get_capability(params.capabilities, "window.work_done_progress", False)))
    def show_error(message: str) -> None:
        server.show_message_threadsafe(message, types.MessageType.Error)

    server.backends = Backends(_workspace_root(params), embeddings=server.settings.embeddings, progress=progress,
                               show_error=show_error)
    server.completions = CompletionRunner(server.backends, server.settings, show_error)
    server.watch_files = bool(get_capability(
        params.capabilities, "workspace.did_change_watched_files.dynamic_registration", False))


@SERVER.feature(types.INITIALIZED)
async def initialized(server: ZhiyinServer, params: types.InitializedParams) -> None:
    if server.watch_files and server.backends.root is not None:
        # changes made outside the editor (git checkout, a formatter) reach the index too
        watcher = types.FileSystemWatcher(glob_pattern="**/*")
        await server.client_register_capability_async(types.RegistrationParams(registrations=[types.Registration(
            id="zhiyin-watch", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=types.DidChangeWatchedFilesRegistrationOptions(watchers=[watcher]))]))


def _workspace_root(params: types.InitializeParams) -> Path | None:
    """rootUri, else the first workspace folder, else the deprecated rootPath; None without any."""
    uri = params.root_uri or (params.workspace_folders[0].uri if params.workspace_folders else None)
    path = to_fs_path(uri) if uri else params.root_path
    return Path(path).resolve() if path and Path(path).is_dir() else None


@SERVER.feature(types.TEXT_DOCUMENT_DID_OPEN)
def text_document_did_open(server: ZhiyinServer, params: types.DidOpenTextDocumentParams) -> None:
    # pygls keeps the document; an open file is the first sign completions will be wanted
    server.backends.start()


@SERVER.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def text_document_did_close(server: ZhiyinServer, params: types.DidCloseTextDocumentParams) -> None:
    server.completions.forget(params.text_document.uri)


@SERVER.feature(types.TEXT_DOCUMENT_DID_SAVE)
def text_document_did_save(server: ZhiyinServer, params: types.DidSaveTextDocumentParams) -> None:
    _reindex(server, params.text_document.uri)


@SERVER.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def workspace_did_change_watched_files(server: ZhiyinServer, params: types.DidChangeWatchedFilesParams) -> None:
    for change in params.changes:  # created, changed or deleted: update_file tells which
        _reindex(server, change.uri)


def _reindex(server: ZhiyinServer, uri: str) -> None:
    """Brings one file of the workspace up to date in the index; files outside it are not indexed."""
    path = to_fs_path(uri)
    root = server.backends.root
    if path is not None and root is not None and Path(path).resolve().is_relative_to(root):
        server.backends.update_file(Path(path))


@SERVER.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def text_document_inline_completion(
    server: ZhiyinServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    completion = await server.completions.complete(server.workspace, params.text_document.uri, params.position)
    if completion is None:
        return types.InlineCompletionList(items=[])
    cursor = types.Range(start=params.position, end=params.position)
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=completion.text, range=cursor)])


@SERVER.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
async def text_document_completion(server: ZhiyinServer, params: types.CompletionParams) -> types.CompletionList:
    # incomplete: the answer holds for this exact position only, so the client asks again as the user types
    completion = await server.completions.complete(server.workspace, params.text_document.uri, params.position)
    if completion is None:
        return types.CompletionList(is_incomplete=True, items=[])
    label = completion.text.strip().split("\n", 1)[0][:MAX_LABEL_CHARS]
    item = types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Text,
        insert_text=completion.text,
        # an empty range at the cursor: insert, do not replace the word being typed (insertText would)
        text_edit=types.TextEdit(range=types.Range(start=params.position, end=params.position),
                                 new_text=completion.text),
        insert_text_format=types.InsertTextFormat.PlainText,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


@SERVER.feature(STATS)
def stats(server: ZhiyinServer, params: None) -> dict[str, int]:
    """Counters of the completion pipeline, for benchmarks and troubleshooting."""
    return server.completions.stats.as_dict()


@SERVER.feature(types.SHUTDOWN)
def shutdown(server: ZhiyinServer, params: None) -> None:
    if hasattr(server, "completions"):  # a client may shut down without initializing
        server.completions.shutdown()


def serve(tcp: tuple[str, int] | None = None) -> None:
    """Serve one client over stdio, or over TCP at `tcp` (host, port): it ends when the client leaves."""
    logging.basicConfig(level=logging.WARNING, format="zhiyin-lsp %(levelname)s %(name)s: %(message)s")
    if tcp is None:
        SERVER.start_io()
    else:
        SERVER.start_tcp(*tcp)
