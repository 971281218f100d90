"""The language server, run for real (`python -m lsp_server`) over stdio against a copy of the
indexer's sample repository, with the default model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

SAMPLE_REPO = Path(__file__).parent.parent / "indexer" / "sample_repo"
SERVER_COMMAND = [sys.executable, "-m", "lsp_server"]
CJK = re.compile(r"[\u4e00-\u9fff]")
# a function being written: the cursor ends the last line (an emoji before it: 2 UTF-16 units, 1 code point)
NEW_FUNCTION = '\n\ndef order_label(order_id: int) -> str:\n    label = "订单😀" + str('

pytestmark = pytest.mark.asyncio(loop_scope="module")


def server_env(home: Path) -> dict[str, str]:
    """A private cache (the index database), data dir (the project memory) and config for the server."""
    return {**os.environ, "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def capabilities() -> types.ClientCapabilities:
    return types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities(),
            completion=types.CompletionClientCapabilities(),
        ),
    )


async def start(home: Path, root: Path | None, *, locale: str = "en", options: object = None,
                ) -> tuple[LanguageClient, types.InitializeResult]:
    client = await ClientServerConfig(server_command=SERVER_COMMAND, server_env=server_env(home)).start()
    result = await client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), root_uri=root.as_uri() if root else None, locale=locale,
        initialization_options=options))
    return client, result


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lsp") / "repo"
    shutil.copytree(SAMPLE_REPO, root)
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(repo: Path):
    """One server for the module: the model loads once (a few seconds)."""
    client, result = await start(repo.parent, repo, options={"embeddings": False})
    yield client, result
    await client.shutdown_session()
    await client.stop()


def open_orders(client: LanguageClient, repo: Path, typed: str = "") -> tuple[str, types.Position]:
    """Opens shop/orders.py with a function being written (and `typed` after it: a position no
    earlier test asked at); its URI and the cursor at the end."""
    uri = (repo / "shop" / "orders.py").as_uri()
    text = (repo / "shop" / "orders.py").read_text(encoding="utf-8") + NEW_FUNCTION + typed
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    return uri, types.Position(line=text.count("\n"), character=utf16_units(text.split("\n")[-1]))


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def test_initialize_advertises_inline_completion(session) -> None:
    _client, result = session
    caps = result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.text_document_sync.save


async def test_inline_completion_continues_the_code(session, repo: Path) -> None:
    client, _result = session
    uri, cursor = open_orders(client, repo)
    start_s = time.perf_counter()
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=cursor,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    print(f"first inline completion (model load included): {time.perf_counter() - start_s:.1f} s")
    items = result.items if isinstance(result, types.InlineCompletionList) else result
    assert items, "no inline completion"
    assert items[0].insert_text.strip()  # the tiny model's words are its own: any code will do
    assert items[0].range == types.Range(start=cursor, end=cursor)


async def test_indexing_reports_progress(session) -> None:
    client, _result = session
    for _tick in range(300):  # the index of the sample repository takes a second or two
        ends = [v for reports in client.progress_reports.values() for v in reports
                if isinstance(v, types.WorkDoneProgressEnd) and v.message]
        if ends:
            break
        await asyncio.sleep(0.1)
    titles = {v.title for reports in client.progress_reports.values() for v in reports
              if isinstance(v, types.WorkDoneProgressBegin)}
    assert {"Loading the model", "Indexing the repository"} <= titles
    assert any("files" in v.message for v in ends)


async def test_a_saved_file_is_indexed_again(session, repo: Path, monkeypatch) -> None:
    import sqlite3

    from indexer.index import default_db_path

    client, _result = session
    monkeypatch.setenv("XDG_CACHE_HOME", str(repo.parent / "cache"))  # where the server keeps it
    db = default_db_path(repo)
    path = repo / "shop" / "config.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef reload_settings() -> None:\n    pass\n",
                    encoding="utf-8")
    client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=path.as_uri())))
    found = []
    for _tick in range(300):  # after the initial index, a one-file update takes milliseconds
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn, contextlib.suppress(sqlite3.OperationalError):
                # (the first index run may still be creating the tables: a save starts it too)
                found = conn.execute("SELECT name FROM symbols WHERE name = 'reload_settings'").fetchall()
        if found:
            break
        await asyncio.sleep(0.1)
    assert found


async def test_completion_fallback_returns_an_item(session, repo: Path) -> None:
    """Also: an incremental change (typed after the emoji, so UTF-16 positions) is applied."""
    client, _result = session
    uri, cursor = open_orders(client, repo)
    typed = types.Range(start=types.Position(line=cursor.line, character=cursor.character - len("str(")), end=cursor)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(range=typed, text=""),
                         types.TextDocumentContentChangePartial(range=types.Range(start=typed.start, end=typed.start),
                                                               text="str(")]))
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=cursor))
    assert len(result.items) == 1
    item = result.items[0]
    assert item.insert_text.strip() and item.text_edit.new_text == item.insert_text
    assert item.text_edit.range == types.Range(start=cursor, end=cursor)  # inserts, replaces nothing


async def test_position_beyond_the_end_gives_an_empty_result(session, repo: Path) -> None:
    client, _result = session
    uri, cursor = open_orders(client, repo)
    document = types.TextDocumentIdentifier(uri=uri)
    last = NEW_FUNCTION.split("\n")[-1]
    inside_emoji = utf16_units(last[: last.index("😀")]) + 1  # between the halves of its surrogate pair
    for position in (types.Position(line=cursor.line + 5, character=0),
                     types.Position(line=cursor.line, character=cursor.character + 1),
                     types.Position(line=cursor.line, character=inside_emoji)):
        inline = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=document, position=position,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        assert not inline.items
        completion = await client.text_document_completion_async(
            types.CompletionParams(text_document=document, position=position))
        assert not completion.items


async def test_newer_request_and_cancel_request_stop_older_ones(session, repo: Path) -> None:
    client, _result = session
    # an empty line in a function body: a block may follow, the model writes for a second or more
    uri, cursor = open_orders(client, repo, typed="order_id)\n    ")
    before = await client.protocol.send_request_async("zhiyin/stats", None)

    def request(msg_id: str):
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=cursor,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        return asyncio.ensure_future(
            client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id))

    older = request("older")
    await asyncio.sleep(0.1)  # past the debounce: the model is running
    newer = request("newer")  # same position: it takes over the older one's run
    assert not (await older).items  # superseded: answered empty at once
    client.cancel_request(types.CancelParams(id="newer"))
    with pytest.raises(JsonRpcRequestCancelled):
        await newer
    for _tick in range(50):  # nobody waits for the run any more: it stops within a token
        after = await client.protocol.send_request_async("zhiyin/stats", None)
        if after.cancelled > before.cancelled:
            break
        await asyncio.sleep(0.1)
    assert after.cancelled == before.cancelled + 1 and after.completed == before.completed
    assert after.superseded == before.superseded + 1 and after.inflight_reused == before.inflight_reused + 1


async def test_typing_what_was_suggested_is_answered_from_the_cache(session, repo: Path) -> None:
    client, _result = session
    uri, cursor = open_orders(client, repo, typed="o")
    document = types.TextDocumentIdentifier(uri=uri)
    context = types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)
    first = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(text_document=document, position=cursor, context=context))
    suggestion = first.items[0].insert_text
    assert len(suggestion) >= 2, suggestion
    before = await client.protocol.send_request_async("zhiyin/stats", None)

    typed = suggestion[:2]  # the user accepts the first two characters by typing them
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=cursor, end=cursor),
                                                               text=typed)]))
    moved = types.Position(line=cursor.line, character=cursor.character + utf16_units(typed))
    second = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(text_document=document, position=moved, context=context))
    after = await client.protocol.send_request_async("zhiyin/stats", None)
    assert second.items[0].insert_text == suggestion[2:]
    assert after.cache_hits == before.cache_hits + 1
    assert after.completed == before.completed  # no model run


async def inline_at(client: LanguageClient, uri: str, position: types.Position) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=position,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))


async def test_unreadable_files_on_disk_get_an_empty_answer(session, repo: Path) -> None:
    """Not open in the editor, so the server reads the disk: invalid UTF-8, a binary file, nothing."""
    client, _result = session
    (repo / "latin1.py").write_bytes(b"name = '\xe9t\xe9'\nprint(")
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    for name in ("latin1.py", "logo.png", "missing.py"):
        result = await asyncio.wait_for(inline_at(client, (repo / name).as_uri(), types.Position(line=1, character=6)), 30)
        assert not result.items, name
    await test_inline_completion_continues_the_code(session, repo)  # the server still serves


async def test_a_five_megabyte_minified_line_is_completed_without_harm(session, repo: Path) -> None:
    client, _result = session
    uri = (repo / "web" / "bundle.min.js").as_uri()
    line = "var a=function(b){return b+1};" * (5_000_000 // 30) + "var total=a("
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="javascript", version=1, text=line)))
    start_s = time.perf_counter()
    result = await asyncio.wait_for(inline_at(client, uri, types.Position(line=0, character=len(line))), 60)
    print(f"completion at the end of a {len(line) / 1e6:.1f} MB line: {time.perf_counter() - start_s:.1f} s")
    assert all("\n" not in item.insert_text for item in result.items)  # mid-line: one line at most
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    # control characters and NULs from a half-binary buffer are text like any other
    uri = (repo / "odd.py").as_uri()
    text = "data = '\x00\x01\x1b[0m'\nvalue = len("
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    await asyncio.wait_for(inline_at(client, uri, types.Position(line=1, character=12)), 60)
    await test_inline_completion_continues_the_code(session, repo)


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
async def test_invalid_options_are_reported_in_the_client_locale(tmp_path: Path, locale: str) -> None:
    client, result = await start(tmp_path, None, locale=locale,
                                 options={"maxTokens": "many", "bogus": 1, "embeddings": False})
    try:
        assert result.capabilities.inline_completion_provider is not None  # the server still starts
        warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
        assert len(warnings) == 2, warnings
        assert "maxTokens" in warnings[0] and "48" in warnings[0] and "bogus" in warnings[1]
        assert bool(CJK.search(" ".join(warnings))) == (locale == "zh-CN"), warnings
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_malformed_json_rpc_does_not_kill_the_server(tmp_path: Path) -> None:
    """Driven over raw stdio: pytest-lsp's client cannot send broken messages."""
    server = await asyncio.create_subprocess_exec(*SERVER_COMMAND, env=server_env(tmp_path),
                                                  stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    def send(body: bytes) -> None:
        server.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    async def response(msg_id: int) -> dict:
        while True:  # skip the server's notifications
            length = 0
            while (header := await server.stdout.readline()) != b"\r\n":
                assert header, "the server closed its output"
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            message = json.loads(await server.stdout.readexactly(length))
            if message.get("id") == msg_id:
                return message

    try:
        send(b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {')  # cut off
        send(b"[1, 2, 3]")  # JSON, but not JSON-RPC
        send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "zhiyin/noSuchMethod", "params": {}}).encode())
        send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "initialize",
                         "params": {"processId": None, "rootUri": None, "capabilities": {}}}).encode())
        await server.stdin.drain()
        unknown = await asyncio.wait_for(response(2), 30)
        assert unknown["error"]["code"] == -32601  # method not found
        initialized = await asyncio.wait_for(response(3), 30)
        assert "inlineCompletionProvider" in initialized["result"]["capabilities"]
        assert server.returncode is None
    finally:
        server.kill()
        await server.wait()
