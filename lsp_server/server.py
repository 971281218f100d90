"""The Zhiyin language server: inline completions from the local engine and the repository index.

One module-level server; each feature is a function named after its LSP method or command.
Handlers parse the request and hand the work to `CompletionRunner`, `RepositoryEdits` or
`Backends`; nothing slow runs on the event loop. Capabilities: `textDocument/inlineCompletion`
(LSP 3.18), `textDocument/completion` for clients without it, code actions, the `zhiyin.*`
commands, incremental sync; the index follows saves and watched-file events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import nullcontext
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from engine.errors import EngineError
from engram.portable import memory_to_json
from lsp_server.chat_link import ChatThread
from lsp_server.code_actions import (
    EXPLAIN_COMMAND,
    FIX_COMMAND,
    REMEMBER_COMMAND,
    code_actions,
    explain,
    fix_instruction,
)
from lsp_server.completions import CompletionRunner
from lsp_server.progress import Progress
from lsp_server.repository_edits import RepositoryEdits
from lsp_server.review_diagnostics import MAX_SECONDS, ReviewDiagnostics, summary
from lsp_server.settings import Settings, parse_settings
from zhiyin.backends import Backends
from zhiyin.diffs import read_diff
from zhiyin.edits import EditPlan
from zhiyin.i18n import N_, _, set_locale, translate_error
from zhiyin.memory import convention_from_code, remember
from zhiyin.review import review

if TYPE_CHECKING:
    from pygls.server import ServerErrors

log = logging.getLogger(__name__)

STATS = "zhiyin/stats"
EDIT_REPOSITORY = "zhiyin.editRepository"
PROPOSE_EDITS = "zhiyin.proposeEdits"
APPLY_EDITS = "zhiyin.applyEdits"
OPEN_CHAT = "zhiyin.openChat"
REVIEW_WORKING_TREE = "zhiyin.reviewWorkingTree"
LIST_MEMORIES = "zhiyin.listMemories"

MSG_NO_INSTRUCTION = N_("Give the edit instruction as the command's one argument, a non-empty string.")
MSG_BAD_PLAN = N_("The argument is not an edit plan from zhiyin.proposeEdits.")
MSG_BAD_ARGUMENTS = N_("The arguments of {command} are not valid.")
MSG_OUTSIDE_WORKSPACE = N_("The file lies outside the workspace.")
MSG_NO_MEMORY = N_("The project memory is not available.")
MSG_REMEMBERED = N_("Zhiyin will remember this convention (#{id}).")
MSG_CHAT_FAILED = N_("Zhiyin cannot start the chat server: {error}")
MSG_NO_FOLDER = N_("Open a folder first: Zhiyin works on the folder's repository.")
MAX_LABEL_CHARS = 60  # of a completion item's label; the item inserts the whole text


class ZhiyinServer(LanguageServer):
    """The state the features share, set up by `initialize`."""

    settings: Settings
    backends: Backends
    completions: CompletionRunner
    loop: asyncio.AbstractEventLoop  # the one serving the client
    watch_files: bool  # the client watches files for us when asked
    progress: Progress
    edits: RepositoryEdits
    chat: ChatThread
    review: ReviewDiagnostics
    model: str | None = None  # `zhiyin lsp --model`: over the configuration's

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
    server.progress = progress = Progress(
        server, server.loop, enabled=bool(get_capability(params.capabilities, "window.work_done_progress", False)))

    def show_error(message: str) -> None:
        server.show_message_threadsafe(message, types.MessageType.Error)

    server.backends = Backends(_workspace_root(params), embeddings=server.settings.embeddings, progress=progress,
                               show_error=show_error, model=server.model)
    server.completions = CompletionRunner(server.backends, server.settings, show_error)
    server.edits = RepositoryEdits(server)
    server.chat = ChatThread(server)
    server.review = ReviewDiagnostics()
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
    _reindex(server, [params.text_document.uri])


@SERVER.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def workspace_did_change_watched_files(server: ZhiyinServer, params: types.DidChangeWatchedFilesParams) -> None:
    _reindex(server, [change.uri for change in params.changes])  # created, changed or deleted: the index tells


def _reindex(server: ZhiyinServer, uris: list[str]) -> None:
    """Brings files of the workspace up to date in the index; files outside it are not indexed."""
    root = server.backends.root
    paths = [Path(p) for p in map(to_fs_path, uris)
             if p is not None and root is not None and Path(p).resolve().is_relative_to(root)]
    server.backends.update_files(list(dict.fromkeys(paths)))


@SERVER.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def text_document_inline_completion(
    server: ZhiyinServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    completion = await server.completions.complete(server.workspace, params.text_document.uri, params.position)
    if completion is None:
        return types.InlineCompletionList(items=[])
    return types.InlineCompletionList(items=[types.InlineCompletionItem(
        insert_text=completion.text, range=_replaced_range(params.position, completion.replaces))])


def _replaced_range(cursor: types.Position, replaces: int) -> types.Range:
    """From the cursor over the closing characters the completion writes itself (ASCII: one UTF-16
    unit each), e.g. an auto-closed `)`; empty when it only inserts."""
    return types.Range(start=cursor, end=types.Position(line=cursor.line, character=cursor.character + replaces))


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
        # at the cursor (over an auto-closed bracket the text writes itself), not over the word being typed
        text_edit=types.TextEdit(range=_replaced_range(params.position, completion.replaces), new_text=completion.text),
        insert_text_format=types.InsertTextFormat.PlainText,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


@SERVER.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
    code_action_kinds=[types.CodeActionKind.QuickFix, types.CodeActionKind.Empty]))
def text_document_code_action(server: ZhiyinServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    return code_actions(params, in_workspace=_workspace_relative(server, params.text_document.uri) is not None)


@SERVER.command(EDIT_REPOSITORY)
async def edit_repository(server: ZhiyinServer, *args: Any) -> dict:
    """[instruction]: proposes, checks and applies a repository-wide edit; answers what it did."""
    return (await server.edits.edit(_instruction(args))).to_json()


@SERVER.command(PROPOSE_EDITS)
async def propose_edits(server: ZhiyinServer, *args: Any) -> dict:
    """[instruction]: the edit plan, not applied (a client shows it before the user accepts), with
    `previews`: each file's text once applied."""
    plan = await server.edits.propose(_instruction(args))
    return {**plan.to_json(), "previews": server.edits.previews(plan)}


@SERVER.command(APPLY_EDITS)
async def apply_edits(server: ZhiyinServer, *args: Any) -> dict:
    """[plan]: applies a plan from `zhiyin.proposeEdits` if every file is still as it was; the client
    showed the plan and the user accepted it, so the editor does not ask again."""
    try:
        plan = EditPlan.from_json(args[0] if len(args) == 1 else None)
    except ValueError as e:
        raise JsonRpcInvalidParams(_(MSG_BAD_PLAN)) from e
    return (await server.edits.apply(plan, confirmed=True)).to_json()


@SERVER.command(OPEN_CHAT)
async def open_chat(server: ZhiyinServer, *args: Any) -> dict:
    """Starts the chat server in this process (once); answers the page's and the socket's addresses.
    Edits applied from that chat come back to this editor as `workspace/applyEdit`."""
    try:
        chat = await asyncio.get_running_loop().run_in_executor(None, server.chat.start)
    except OSError as e:
        raise JsonRpcInternalError(_(MSG_CHAT_FAILED).format(error=e)) from e
    return {"url": chat.page_url, "socketUrl": chat.socket_url}


@SERVER.command(FIX_COMMAND)
async def fix_diagnostic(server: ZhiyinServer, *args: Any) -> dict:
    """[uri, line, problem]: the model's fix for a diagnostic, checked and applied like any edit."""
    if len(args) != 3 or not isinstance(args[0], str) or not isinstance(args[1], int) or not isinstance(args[2], str):
        raise JsonRpcInvalidParams(_(MSG_BAD_ARGUMENTS).format(command=FIX_COMMAND))
    path = _workspace_relative(server, args[0])
    if path is None:
        raise JsonRpcInvalidParams(_(MSG_OUTSIDE_WORKSPACE))
    return (await server.edits.edit(fix_instruction(args[1], args[2]), paths=[path])).to_json()


@SERVER.command(EXPLAIN_COMMAND)
async def explain_code(server: ZhiyinServer, *args: Any) -> str:
    """[uri, range]: the model's explanation of the code in range, also shown to the user."""
    uri, lines, _start = _selected_lines(server, args, EXPLAIN_COMMAND)
    name = (to_fs_path(uri) or uri).rsplit("/", 1)[-1]
    text = await explain(server.backends, name, "\n".join(lines))
    server.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=text))
    return text


@SERVER.command(REMEMBER_COMMAND)
async def remember_convention(server: ZhiyinServer, *args: Any) -> dict:
    """[uri, range]: the selected lines become an active convention in the project memory, cited."""
    uri, lines, start = _selected_lines(server, args, REMEMBER_COMMAND)
    path = _workspace_relative(server, uri)
    if path is None:
        raise JsonRpcInvalidParams(_(MSG_OUTSIDE_WORKSPACE))
    draft = convention_from_code(path, lines, start + 1)
    if not draft.statement:
        raise JsonRpcInvalidParams(_(MSG_BAD_ARGUMENTS).format(command=REMEMBER_COMMAND))

    def store():  # the AddResult, or None without a memory
        memory = server.backends.memory()
        return None if memory is None else remember(memory, draft)

    result = await asyncio.get_running_loop().run_in_executor(None, store)
    if result is None:
        raise JsonRpcInternalError(_(MSG_NO_MEMORY))
    server.window_show_message(types.ShowMessageParams(
        type=types.MessageType.Info, message=_(MSG_REMEMBERED).format(id=result.id)))
    return {"id": result.id, "action": result.action, "statement": draft.statement}


@SERVER.command(REVIEW_WORKING_TREE)
async def review_working_tree(server: ZhiyinServer, *args: Any) -> dict:
    """[{"model": bool}?]: reviews the uncommitted changes against HEAD; findings become diagnostics
    (the Problems view); answers the counts and what was skipped."""
    root = server.backends.root
    if root is None:
        raise JsonRpcInvalidParams(_(MSG_NO_FOLDER))
    with_model = bool(args and isinstance(args[0], dict) and args[0].get("model"))

    def run():
        changes = read_diff(root, "HEAD", worktree=True)
        engine = server.backends.wait_for_engine(MAX_SECONDS, threading.Event()) if with_model else None
        # the index (context for the model) is held only while the model reviews: updates wait meanwhile
        with server.backends.index_for_reading() if engine is not None else nullcontext() as index:
            return review(root, changes, "HEAD", memory=server.backends.memory(), max_seconds=MAX_SECONDS,
                          engine=engine, index=index)

    try:
        result = await asyncio.get_running_loop().run_in_executor(None, run)
    except EngineError as e:  # not a git repository, no commit yet, git failing
        raise JsonRpcInvalidParams(translate_error(e)) from e
    server.review.publish(root, result, server.text_document_publish_diagnostics)
    return summary(result)


@SERVER.command(LIST_MEMORIES)
async def list_memories(server: ZhiyinServer, *args: Any) -> list[dict]:
    """The project memory's active and pending memories, newest first, with their citations."""
    if server.backends.root is None:
        raise JsonRpcInvalidParams(_(MSG_NO_FOLDER))

    def read():
        memory = server.backends.memory()
        return None if memory is None else memory.store.list(memory.repo, statuses=("active", "pending"))

    memories = await asyncio.get_running_loop().run_in_executor(None, read)
    if memories is None:
        raise JsonRpcInternalError(_(MSG_NO_MEMORY))
    return [{"id": m.id, **memory_to_json(m)} for m in memories]


def _selected_lines(server: ZhiyinServer, args: tuple[Any, ...], command: str) -> tuple[str, list[str], int]:
    """(uri, the lines the range covers, its first line) from [uri, range] arguments."""
    try:
        uri, span = args
        start, end = _camel_free(span["start"]), _camel_free(span["end"])
        document = server.workspace.get_text_document(uri)
        last = end["line"] - (1 if end["character"] == 0 and end["line"] > start["line"] else 0)
        lines = [line.rstrip("\r\n") for line in document.lines[start["line"] : last + 1]]
    except (ValueError, TypeError, KeyError, OSError, UnicodeDecodeError) as e:
        raise JsonRpcInvalidParams(_(MSG_BAD_ARGUMENTS).format(command=command)) from e
    return uri, lines, start["line"]


def _instruction(args: tuple[Any, ...]) -> str:
    if len(args) != 1 or not isinstance(args[0], str) or not args[0].strip():
        raise JsonRpcInvalidParams(_(MSG_NO_INSTRUCTION))
    return args[0].strip()


def _camel_free(position: dict) -> dict:
    return {"line": int(position["line"]), "character": int(position["character"])}


def _workspace_relative(server: ZhiyinServer, uri: str) -> str | None:
    """The workspace-relative path of `uri`; None when it is not a file inside the workspace."""
    path, root = to_fs_path(uri), server.backends.root
    if path is None or root is None or not Path(path).resolve().is_relative_to(root):
        return None
    return Path(path).resolve().relative_to(root).as_posix()


@SERVER.feature(STATS)
def stats(server: ZhiyinServer, params: None) -> dict[str, float]:
    """Counters of the completion pipeline, the engine's KV cache (in use, per tier, the disk tier's
    counters), and the model's and the index's state (an editor's status bar shows them)."""
    engine = server.backends.engine
    kv_mib = round(engine.kv_resident_bytes / 2**20, 1) if engine is not None else 0.0
    persistence = getattr(engine, "persistence", None)  # the disk tier (a remote model has none)
    disk = asdict(persistence.store.stats) if persistence is not None else None
    tiers = engine.kv_tiers() if hasattr(engine, "kv_tiers") else None  # bytes per tier, the device tier's counters
    return {**server.completions.stats.as_dict(), "kv_resident_mib": kv_mib, "kv_disk": disk, "kv_tiers": tiers,
            "model": engine.model_id if engine is not None else None, "model_state": server.backends.engine_state,
            "model_error": server.backends.engine_error, "index_ready": server.backends.index_ready}


@SERVER.feature(types.SHUTDOWN)
def shutdown(server: ZhiyinServer, params: None) -> None:
    if hasattr(server, "completions"):  # a client may shut down without initializing
        server.completions.shutdown()


def serve(tcp: tuple[str, int] | None = None, model: str | None = None) -> None:
    """Serve one client over stdio, or over TCP at `tcp` (host, port): it ends when the client leaves.
    `model`: a model name or path over the configuration's."""
    SERVER.model = model
    logging.basicConfig(level=logging.WARNING, format="zhiyin-lsp %(levelname)s %(name)s: %(message)s")
    try:
        if tcp is None:
            SERVER.start_io()
        else:
            SERVER.start_tcp(*tcp)
    finally:  # the client may have gone without a shutdown: stop the model at once, not at exit
        if hasattr(SERVER, "completions"):
            SERVER.completions.shutdown()
