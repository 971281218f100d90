"""The chat server: the chat page over HTTP and protocol 1 over a websocket (docs/chat-protocol.md).

Security first: it binds to loopback unless told otherwise and then answers only requests whose
Host names loopback (no DNS rebinding); the websocket handshake must carry the server's token
(`?token=`) and an Origin that is the server's own page, an editor webview, or none (a
non-browser client): anything else is refused with 403 before the socket opens. Messages are JSON
objects of at most MAX_MESSAGE_BYTES; a malformed one gets an error reply and the connection stays
usable; a bigger one closes it (1009).

Each connection is served on its own: chat turns and edit plans run in worker threads (the engine
takes one generation at a time, in arrival order) and stream back through the connection's own
queue, so a slow client delays nobody but itself. A client runs at most MAX_TURNS_PER_CLIENT turns
at once; `cancel` stops a turn within a token, and a client that leaves cancels its turns.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.errors import EngineError
from zhiyin import chat_page
from zhiyin.backends import Backends
from zhiyin.chat import MAX_TOKENS as CHAT_MAX_TOKENS
from zhiyin.chat import Attachment, chat_turn
from zhiyin.chat_context import AttachRequest, attach_file, gather
from zhiyin.conversations import ConversationStore, Message
from zhiyin.edit_planner import plan_edits
from zhiyin.edits import CheckedEdit, EditPlan, check_plan, disk_text, write_edits
from zhiyin.i18n import N_, _, normalize_locale, translate_error, use_locale
from zhiyin.memory import draft_from_chat, remember
from zhiyin.runtime import is_loopback

log = logging.getLogger(__name__)

PROTOCOL = 1
MAX_MESSAGE_BYTES = 1 << 20
MAX_TURNS_PER_CLIENT = 2
HISTORY_MESSAGES = 8  # of a reopened conversation, given to the model
ENGINE_WAIT_S = 300.0
INDEX_WAIT_S = 30.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WEBVIEW_ORIGIN_PREFIXES = ("vscode-webview://",)

MSG_BAD_JSON = N_("The message is not a JSON object.")
MSG_UNKNOWN_TYPE = N_("Unknown message type: {type}.")
MSG_BAD_FIELD = N_("The message's \"{field}\" is missing or invalid.")
MSG_FORBIDDEN = N_("Refused: a wrong or missing token, or a page from another site.")
MSG_BUSY = N_("Wait for an answer to finish (or stop it) before asking another question.")
MSG_NO_MODEL = N_("The model is not loaded; see the server's output.")
MSG_NO_INDEX = N_("The repository is not indexed yet; try again when indexing has finished.")
MSG_NO_PLAN = N_("That proposed edit is gone (applied, rejected, or from before a restart).")
MSG_NO_CONVERSATION = N_("There is no conversation #{id}.")
MSG_NOT_APPLIED = N_("Nothing was changed: {problems}")
MSG_APPLIED = N_("Applied the edit to {count} file(s).")
MSG_DECLINED = N_("The editor did not apply the edit: {reason}")
MSG_NOT_ATTACHED = N_("Not attached: {problems}")
MSG_NO_MEMORY = N_("There is no project memory here to remember that in.")
MSG_REMEMBERED = N_("Remembered as #{id}: {statement}")
MSG_NOTHING_TO_REMEMBER = N_("Say what to remember.")
MSG_INTERNAL = N_("Something went wrong on the server: {error}")


class EditorLink(Protocol):
    """An editor connected to the same process over LSP: edits go through it, so its undo works."""

    async def apply(self, checked: list[CheckedEdit], instruction: str) -> tuple[bool, str | None]: ...

    def read_text(self, path: Path) -> str: ...


class _Refused(Exception):
    """A message the server cannot act on; its text is translated and goes back to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Client:
    connection: ServerConnection
    locale: str | None = None  # the page's language; else the server's
    turns: dict[str, threading.Event] = field(default_factory=dict)  # turn id -> cancel
    plans: dict[str, EditPlan] = field(default_factory=dict)  # proposed, not yet applied or rejected

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message, ensure_ascii=False))


@dataclass
class ChatServer:
    backends: Backends
    conversations: ConversationStore
    host: str = "127.0.0.1"
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    allowed_origins: tuple[str, ...] = ()  # more page origins, e.g. an editor's webview host
    frame_ancestors: tuple[str, ...] = ()  # more CSP sources that may frame the page (patterns, e.g. a port range)
    editor: EditorLink | None = None
    progress: Callable[[], list[dict]] = list  # long work going on, for the status message
    _server: Server | None = None
    _clients: set[int] = field(default_factory=set)

    # --- HTTP: the page, and the gate to the websocket ------------------------------------------

    @property
    def page_url(self) -> str:
        """The page's address; the token rides in the fragment, which browsers never send."""
        return f"http://{_url_host(self.host)}:{self.port}/#token={self.token}"

    @property
    def socket_url(self) -> str:
        return f"ws://{_url_host(self.host)}:{self.port}/chat?token={self.token}"

    def _origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """The page's own origin: loopback here, or (bound elsewhere on purpose) the address the
        browser used, which `_host_allowed` has vetted; an editor webview; one the user allowed."""
        if origin is None:
            return True  # not a browser: a browser always sends Origin on a websocket handshake
        own = {f"http://{h}:{self.port}" for h in (*LOOPBACK_HOSTS, _url_host(self.host))} | {f"http://{host}"}
        return origin in own or origin in self.allowed_origins or origin.startswith(WEBVIEW_ORIGIN_PREFIXES)

    def _host_allowed(self, host: str | None) -> bool:
        if not is_loopback(self.host):
            return True  # bound elsewhere on purpose: the token guards the socket
        return host is not None and host.rsplit(":", 1)[0] in LOOPBACK_HOSTS

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self._host_allowed(request.headers.get("Host")):
            return _response(http.HTTPStatus.FORBIDDEN, _(MSG_FORBIDDEN).encode(), "text/plain; charset=utf-8")
        path = urlsplit(request.path).path
        if path != "/chat":
            page = chat_page.asset(path, request.path)
            if page is None:
                return _response(http.HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            body, content_type = page
            return _response(http.HTTPStatus.OK, body, content_type, csp=self._csp())
        token = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        if secrets.compare_digest(token.encode(), self.token.encode()) and \
                self._origin_allowed(request.headers.get("Origin"), request.headers.get("Host")):
            return None
        log.warning("refused a chat handshake (token %s, origin %s)", "ok" if token == self.token else "wrong",
                    request.headers.get("Origin"))
        return _response(http.HTTPStatus.FORBIDDEN, _(MSG_FORBIDDEN).encode(), "text/plain; charset=utf-8")

    def _csp(self) -> str:
        hosts = [h for h in dict.fromkeys((*LOOPBACK_HOSTS, _url_host(self.host))) if "[" not in h]  # CSP has no IPv6
        sockets = " ".join(f"ws://{host}:{self.port}" for host in hosts)
        embedders = " ".join(("'self'", "vscode-webview:", *self.allowed_origins, *self.frame_ancestors))
        return (f"default-src 'self'; connect-src 'self' {sockets}; img-src 'self' data:; "
                f"style-src 'self'; script-src 'self'; frame-ancestors {embedders}")

    # --- the websocket ----------------------------------------------------------------------------

    async def handle(self, connection: ServerConnection) -> None:
        lang = parse_qs(urlsplit(connection.request.path).query).get("lang", [None])[0]
        client = _Client(connection, normalize_locale(lang) if lang else None)
        self._clients.add(id(client))
        tasks: set[asyncio.Task] = set()
        try:
            await client.send({"type": "hello", "protocol": PROTOCOL, "repository": self._repository_name(),
                               "model": self._model_id()})
            async for raw in connection:
                task = asyncio.create_task(self._dispatch(client, raw))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(id(client))
            for cancel in client.turns.values():
                cancel.set()  # the client left: its turns stop
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(self, client: _Client, raw: str | bytes) -> None:
        message: Any = None
        use_locale(client.locale)  # this task's replies, and the turns it starts, in the client's language
        try:
            try:
                message = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                message = None
            if not isinstance(message, dict):
                raise _Refused("bad_message", _(MSG_BAD_JSON))
            handler = self._handlers().get(message.get("type"))
            if handler is None:
                raise _Refused("unknown_type", _(MSG_UNKNOWN_TYPE).format(type=message.get("type")))
            await handler(client, message)
        except _Refused as refused:
            await _send_quietly(client, {"type": "error", "id": _id_of(message), "code": refused.code,
                                         "message": str(refused)})
        except ConnectionClosed:
            pass
        except Exception as e:  # one broken request must not take the connection down
            log.exception("chat message %r", _id_of(message))
            await _send_quietly(client, {"type": "error", "id": _id_of(message), "code": "internal",
                                         "message": _(MSG_INTERNAL).format(error=e)})

    def _handlers(self) -> dict[str, Callable[[_Client, dict], Awaitable[None]]]:
        return {"chat": self._chat, "cancel": self._cancel, "status": self._status, "edit": self._propose,
                "apply": self._apply, "reject": self._reject, "remember": self._remember,
                "conversations": self._list, "load": self._load, "delete": self._delete, "locale": self._locale,
                "source": self._source}

    async def _source(self, client: _Client, message: dict) -> None:
        """A cited file's lines, for the page to show (the editor opens the file itself)."""
        path = _field(message, "path", str)
        start = _field(message, "startLine", int, default=1)
        end = _field(message, "endLine", int, default=start)
        got = await asyncio.to_thread(attach_file, self.backends.root, path, start, end)
        if isinstance(got, str):
            raise _Refused("not_found", got)
        await client.send({"type": "source", "id": _id_of(message), "path": got.path, "startLine": got.start_line,
                           "text": got.text})

    async def _locale(self, client: _Client, message: dict) -> None:
        client.locale = normalize_locale(_field(message, "locale", str))
        await client.send({"type": "locale", "locale": client.locale})

    # --- chat turns ---------------------------------------------------------------------------------

    async def _chat(self, client: _Client, message: dict) -> None:
        turn_id = _field(message, "id", str)
        text = _field(message, "text", str)
        if not text.strip():
            raise _Refused("bad_message", _(MSG_BAD_FIELD).format(field="text"))
        if turn_id in client.turns or len(client.turns) >= MAX_TURNS_PER_CLIENT:
            raise _Refused("busy", _(MSG_BUSY))
        request = _attach_request(message)
        max_tokens = _field(message, "maxTokens", int, default=CHAT_MAX_TOKENS)
        conversation = message.get("conversation")
        cancel = threading.Event()
        client.turns[turn_id] = cancel
        try:
            conversation, history = await asyncio.to_thread(self._open_conversation, conversation, text)
            await client.send({"type": "started", "id": turn_id, "conversation": conversation})
            await self._stream_turn(client, turn_id, conversation, text, history, request,
                                    message.get("codebase", True) is not False, message.get("path"),
                                    max_tokens, cancel)
        finally:
            client.turns.pop(turn_id, None)

    def _open_conversation(self, conversation: Any, question: str) -> tuple[int, list[dict[str, str]]]:
        repo = self._repository_key()
        if conversation is None:
            return self.conversations.create(repo, question), []
        if not isinstance(conversation, int) or (loaded := self.conversations.load(repo, conversation)) is None:
            raise _Refused("not_found", _(MSG_NO_CONVERSATION).format(id=conversation))
        history = [{"role": m.role, "content": m.text} for m in loaded.messages[-HISTORY_MESSAGES:]]
        return conversation, history

    async def _stream_turn(self, client: _Client, turn_id: str, conversation: int, text: str,
                           history: list[dict[str, str]], request: AttachRequest, codebase: bool,
                           path: Any, max_tokens: int, cancel: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        put = lambda item: loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                wants_model = draft_from_chat(text) is None
                engine = self.backends.wait_for_engine(ENGINE_WAIT_S, cancel) if wants_model else None
                if wants_model and engine is None and not cancel.is_set():
                    raise _Refused("no_model", _(MSG_NO_MODEL))
                with self.backends.index_for_reading(INDEX_WAIT_S if codebase or request.symbols else 0) as index:
                    attachments, problems = gather(request, self.backends.root, index)
                    if problems:
                        put({"type": "notice", "id": turn_id, "message": _(MSG_NOT_ATTACHED).format(
                            problems="; ".join(problems))})
                    for event in chat_turn(engine, text, history=history, index=index,
                                           memory=self.backends.memory(), attachments=attachments,
                                           codebase=codebase, path=path if isinstance(path, str) else None,
                                           cancel=cancel, max_tokens=max_tokens):
                        put(event)
            except Exception as e:  # noqa: BLE001 -- handed to the loop, which reports it
                put(e)
            put(None)

        worker = loop.run_in_executor(None, contextvars.copy_context().run, run)
        answer: list[str] = []
        try:
            while (event := await queue.get()) is not None:
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, dict):
                    await client.send(event)
                    continue
                if event.text:
                    answer.append(event.text)
                    await client.send({"type": "token", "id": turn_id, "text": event.text})
                if event.done:
                    citations = [self._citation(c) for c in event.citations]
                    await asyncio.to_thread(self._keep_turn, conversation, text, "".join(answer), citations)
                    done = {"type": "done", "id": turn_id, "conversation": conversation,
                            "cancelled": cancel.is_set(), "citations": citations}
                    if event.remembered is not None:
                        done["remembered"] = event.remembered
                    if event.stats is not None:
                        done["stats"] = {"promptTokens": event.stats.num_prompt_tokens,
                                         "cachedTokens": event.stats.num_cached_tokens,
                                         "generatedTokens": event.stats.num_generated,
                                         "timeToFirstTokenS": round(event.stats.time_to_first_token_s, 4),
                                         "tokensPerS": round(event.stats.decode_tokens_per_s, 2)}
                    await client.send(done)
        except EngineError as e:
            raise _Refused("engine", translate_error(e)) from e
        except BaseException:  # the client left, or the server stops: the model run stops too
            cancel.set()
            raise
        finally:
            await worker

    def _citation(self, citation) -> dict[str, Any]:
        out = {"n": citation.number, "path": citation.path, "startLine": citation.start_line,
               "endLine": citation.end_line}
        root = self.backends.root
        if root is not None and (root / citation.path).is_file():
            out["uri"] = (root.resolve() / citation.path).as_uri()
        return out

    def _keep_turn(self, conversation: int, question: str, answer: str, citations: list[dict]) -> None:
        self.conversations.append(conversation, Message("user", question))
        self.conversations.append(conversation, Message("assistant", answer, citations))

    async def _cancel(self, client: _Client, message: dict) -> None:
        cancel = client.turns.get(str(message.get("id")))
        if cancel is not None:
            cancel.set()

    # --- edits ----------------------------------------------------------------------------------------

    async def _propose(self, client: _Client, message: dict) -> None:
        request_id = _field(message, "id", str)
        instruction = _field(message, "text", str)
        if not instruction.strip():
            raise _Refused("bad_message", _(MSG_BAD_FIELD).format(field="text"))
        plan, checked, problems = await asyncio.to_thread(self._plan, instruction)
        plan_id = uuid.uuid4().hex
        if checked:
            client.plans[plan_id] = plan
        await client.send({"type": "edits", "id": request_id, "plan": plan_id if checked else None,
                           "instruction": instruction, "problems": {**plan.problems, **problems},
                           "files": [{"path": c.edit.path, "diff": c.unified_diff()} for c in checked]})

    def _plan(self, instruction: str) -> tuple[EditPlan, list[CheckedEdit], dict[str, str]]:
        root = self.backends.root
        cancel = threading.Event()

        def engine():
            loaded = self.backends.wait_for_engine(ENGINE_WAIT_S, cancel)
            if loaded is None:
                raise _Refused("no_model", _(MSG_NO_MODEL))
            return loaded

        with self.backends.index_for_reading(INDEX_WAIT_S) as index:
            if root is None or index is None:
                raise _Refused("no_index", _(MSG_NO_INDEX))
            plan = plan_edits(instruction, root, index, engine, self._read_text)
        checked, problems = check_plan(plan, root, self._read_text)
        return plan, checked, problems

    async def _apply(self, client: _Client, message: dict) -> None:
        plan_id = _field(message, "plan", str)
        plan = client.plans.pop(plan_id, None)
        if plan is None:
            raise _Refused("not_found", _(MSG_NO_PLAN))
        root = self.backends.root
        checked, failed = await asyncio.to_thread(check_plan, plan, root, self._read_text)
        files = [c.edit.path for c in checked]
        if failed:
            reply = {"applied": False, "problems": failed, "message": _(MSG_NOT_APPLIED).format(
                problems="; ".join(f"{p}: {why}" for p, why in failed.items()))}
        elif self.editor is not None:
            applied, reason = await self.editor.apply(checked, plan.instruction)
            reply = {"applied": applied, "via": "editor", "message": _(MSG_APPLIED).format(count=len(checked))
                     if applied else _(MSG_DECLINED).format(reason=reason or "-")}
        else:
            await asyncio.to_thread(write_edits, checked)
            reply = {"applied": True, "via": "disk", "message": _(MSG_APPLIED).format(count=len(checked))}
        if reply["applied"]:
            await asyncio.to_thread(self.backends.record_accepted_edit, plan.instruction, files)
            self.backends.update_files([c.path for c in checked])
        await client.send({"type": "applied", "plan": plan_id, "files": files, **reply})

    async def _reject(self, client: _Client, message: dict) -> None:
        plan_id = _field(message, "plan", str)
        if client.plans.pop(plan_id, None) is None:
            raise _Refused("not_found", _(MSG_NO_PLAN))
        await client.send({"type": "rejected", "plan": plan_id})

    def _read_text(self, path: Path) -> str:
        if self.editor is not None:
            return self.editor.read_text(path)
        return disk_text(path)

    # --- memory, conversations, status ------------------------------------------------------------

    async def _remember(self, client: _Client, message: dict) -> None:
        text = _field(message, "text", str).strip()
        if not text:
            raise _Refused("bad_message", _(MSG_NOTHING_TO_REMEMBER))
        memory = await asyncio.to_thread(self.backends.memory)
        if memory is None:
            raise _Refused("no_memory", _(MSG_NO_MEMORY))
        draft = draft_from_chat(text) or draft_from_chat(f"remember: {text}")
        result = await asyncio.to_thread(remember, memory, draft, source="chat")
        await client.send({"type": "remembered", "id": _id_of(message), "memory": result.id,
                           "message": _(MSG_REMEMBERED).format(id=result.id, statement=draft.statement)})

    async def _list(self, client: _Client, message: dict) -> None:
        items = await asyncio.to_thread(self.conversations.list, self._repository_key())
        await client.send({"type": "conversations", "items": [
            {"id": c.id, "title": c.title, "updated": c.updated} for c in items]})

    async def _load(self, client: _Client, message: dict) -> None:
        conversation = _field(message, "conversation", int)
        loaded = await asyncio.to_thread(self.conversations.load, self._repository_key(), conversation)
        if loaded is None:
            raise _Refused("not_found", _(MSG_NO_CONVERSATION).format(id=conversation))
        await client.send({"type": "conversation", "id": loaded.id, "title": loaded.title, "messages": [
            {"role": m.role, "text": m.text, "citations": m.citations} for m in loaded.messages]})

    async def _delete(self, client: _Client, message: dict) -> None:
        conversation = _field(message, "conversation", int)
        if not await asyncio.to_thread(self.conversations.delete, self._repository_key(), conversation):
            raise _Refused("not_found", _(MSG_NO_CONVERSATION).format(id=conversation))
        await client.send({"type": "deleted", "conversation": conversation})

    async def _status(self, client: _Client, message: dict) -> None:
        engine = self.backends.engine
        await client.send({
            "type": "status", "protocol": PROTOCOL, "repository": self._repository_name(),
            "model": self._model_id(), "clients": len(self._clients),
            "engine": {"loaded": engine is not None, "queued": getattr(engine, "queued_requests", 0),
                       "kvResidentBytes": getattr(engine, "kv_resident_bytes", 0),
                       "kvTiers": engine.kv_tiers() if hasattr(engine, "kv_tiers") else None},
            "index": {"ready": self.backends.index_ready}, "memory": self.backends.root is not None,
            "editor": self.editor is not None, "work": self.progress()})

    def _model_id(self) -> str | None:
        engine = self.backends.engine
        return engine.model_id if engine is not None else None

    def _repository_key(self) -> str:
        root = self.backends.root
        return str(root.resolve()) if root is not None else ""

    def _repository_name(self) -> str | None:
        return self.backends.root.name if self.backends.root is not None else None

    # --- running ----------------------------------------------------------------------------------------

    async def run(self, ready: asyncio.Future | None = None) -> None:
        """Serves until cancelled; `ready` gets the page URL once the port is bound."""
        async with serve(self.handle, self.host, self.port, process_request=self.process_request,
                         max_size=MAX_MESSAGE_BYTES, server_header=None) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            if ready is not None:
                ready.set_result(self.page_url)
            await server.serve_forever()


def _attach_request(message: dict) -> AttachRequest:
    try:
        files = [(str(f["path"]), _optional_int(f.get("startLine")), _optional_int(f.get("endLine")))
                 for f in message.get("files", [])]
        selections = [Attachment(str(s["path"]), str(s["text"]), int(s.get("startLine", 1)))
                      for s in message.get("selections", [])]
        symbols = [str(s) for s in message.get("symbols", [])]
    except (TypeError, KeyError, ValueError, AttributeError):
        raise _Refused("bad_message", _(MSG_BAD_FIELD).format(field="files/selections/symbols")) from None
    return AttachRequest(files, symbols, selections, message.get("changes") is True)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _field(message: dict, name: str, kind: type, default: Any = None) -> Any:
    value = message.get(name, default)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
        raise _Refused("bad_message", _(MSG_BAD_FIELD).format(field=name))
    return value


def _id_of(message: Any) -> Any:
    return message.get("id") if isinstance(message, dict) else None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _response(status: http.HTTPStatus, body: bytes, content_type: str, csp: str | None = None) -> Response:
    headers = Headers([("Date", formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type),
                       ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                       ("Cache-Control", "no-store")])
    if csp:
        headers["Content-Security-Policy"] = csp
    return Response(status.value, status.phrase, headers, body)


async def _send_quietly(client: _Client, message: dict) -> None:
    try:
        await client.send(message)
    except ConnectionClosed:
        pass
