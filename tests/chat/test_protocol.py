"""The chat server's protocol, driven by a real websocket client against the real server with the
default model, a real index, a real project memory and a real conversation store."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from urllib.error import HTTPError

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.chat.conftest import receive, turn
from zhiyin.chat_server import MAX_MESSAGE_BYTES

pytestmark = pytest.mark.asyncio


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def test_handshakes_without_the_token_or_from_a_foreign_page_are_refused(server) -> None:
    base = server.socket_url.split("?")[0]
    for url, origin in ((base, None), (base + "?token=wrong", None), (server.socket_url, "https://evil.example"),
                        (server.socket_url, "http://127.0.0.1:1"), (server.socket_url, "null")):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=origin):
                pass
        assert refused.value.response.status_code == 403, (url, origin)
    for origin in (None, f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}", "vscode-webview://abc123"):
        async with connect(server.socket_url, origin=origin) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello" and hello["protocol"] == 1 and hello["repository"] == "shop"


async def test_the_page_is_served_with_a_strict_policy_and_only_its_own_files(server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    status, headers, body = await asyncio.to_thread(fetch, base + "/")
    assert status == 200 and b"chat.js" in body and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    for asset in ("/chat.js", "/chat.css", "/vendor/markdown-it.min.js", "/vendor/highlight.min.js"):
        assert (await asyncio.to_thread(fetch, base + asset))[0] == 200, asset
    status, _h, body = await asyncio.to_thread(fetch, base + "/strings.json?lang=zh-CN")
    strings = json.loads(body)
    assert status == 200 and strings["locale"] == "zh_CN" and strings["strings"]["send"] == "发送"
    assert json.loads((await asyncio.to_thread(fetch, base + "/strings.json?lang=en-US"))[2])["strings"]["send"] == "Send"
    for path in ("/../pyproject.toml", "/%2e%2e/chat_server.py", "/chat_page.py", "/nothing"):
        assert (await asyncio.to_thread(fetch, base + path))[0] == 404, path
    # DNS rebinding: a page of another name that resolves to 127.0.0.1 is not served
    assert (await asyncio.to_thread(fetch, base + "/", {"Host": f"evil.example:{server.port}"}))[0] == 403


async def test_malformed_and_oversized_messages(server) -> None:
    async with connect(server.socket_url, max_size=None) as ws:
        await ws.recv()
        for bad in ("{not json", "[1, 2]", json.dumps({"type": "teleport"}), json.dumps({"type": "chat", "id": "x", "text": ""}),
                    json.dumps({"type": "chat", "text": "no id"}), json.dumps({"type": "load", "conversation": "one"}),
                    json.dumps({"type": "chat", "id": "y", "text": "hi", "files": [{"nopath": 1}]}),
                    json.dumps({"type": "apply", "plan": "never-proposed"}), b"\xff\xfe binary"):
            await ws.send(bad)
            reply = await receive(ws, "error")
            assert reply["message"] and reply["code"] in ("bad_message", "unknown_type", "not_found"), bad
        await ws.send(json.dumps({"type": "status"}))  # still usable
        assert (await receive(ws, "status"))["engine"]["loaded"]
        await ws.send("x" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd.code == 1009  # message too big: closed cleanly


async def test_errors_speak_the_clients_language(server) -> None:
    async with connect(server.socket_url + "&lang=zh-CN") as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "teleport"}))
        assert (await receive(ws, "error"))["message"] == "未知的消息类型：teleport。"
        await ws.send(json.dumps({"type": "locale", "locale": "en"}))
        assert (await receive(ws, "locale"))["locale"] == "en"
        await ws.send(json.dumps({"type": "teleport"}))
        assert (await receive(ws, "error"))["message"] == "Unknown message type: teleport."


@pytest.mark.slow
async def test_a_turn_streams_tokens_cites_sources_and_is_kept(server, make_server) -> None:
    async with connect(server.socket_url) as ws:
        await ws.recv()
        tokens, done = await turn(ws, "t1", "What does load_config return?", maxTokens=48)
        assert len(tokens) > 3 and done["type"] == "done" and not done["cancelled"]
        cited = {c["path"]: c for c in done["citations"]}
        assert "shop/config.py" in cited and cited["shop/config.py"]["uri"].startswith("file://")
        assert done["stats"]["timeToFirstTokenS"] > 0 and done["stats"]["generatedTokens"] > 3
        conversation = done["conversation"]
        # a follow-up in the same conversation carries the history; the same question alone does not
        _tokens, follow_up = await turn(ws, "t2", "Where is it called?", conversation=conversation, maxTokens=8,
                                        codebase=False)
        _tokens, alone = await turn(ws, "t3", "Where is it called?", maxTokens=8, codebase=False)
        assert follow_up["conversation"] == conversation and alone["conversation"] != conversation
        assert follow_up["stats"]["promptTokens"] > alone["stats"]["promptTokens"] + len(tokens)
    # a new server on the same store (a restart) lists and loads the conversation
    restarted = make_server()
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(restarted.run(ready))
    await ready
    try:
        async with connect(restarted.socket_url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "conversations"}))
            items = (await receive(ws, "conversations"))["items"]
            assert [i["id"] for i in items] == [alone["conversation"], conversation]  # the latest first
            assert items[1]["title"] == "What does load_config return?"
            await ws.send(json.dumps({"type": "load", "conversation": conversation}))
            loaded = await receive(ws, "conversation")
            assert [m["role"] for m in loaded["messages"]] == ["user", "assistant"] * 2
            assert loaded["messages"][1]["text"] == "".join(tokens) and loaded["messages"][1]["citations"]
            await ws.send(json.dumps({"type": "delete", "conversation": conversation}))
            assert (await receive(ws, "deleted"))["conversation"] == conversation
            await ws.send(json.dumps({"type": "conversations"}))
            assert [i["id"] for i in (await receive(ws, "conversations"))["items"]] == [alone["conversation"]]
    finally:
        task.cancel()


@pytest.mark.slow
async def test_attached_files_symbols_and_changes_are_sources(server, workspace) -> None:
    (workspace / "shop" / "db.py").write_text((workspace / "shop" / "db.py").read_text() + "\n# retries: 3\n")
    async with connect(server.socket_url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "chat", "id": "a", "text": "Explain these.", "maxTokens": 4,
                                  "codebase": False, "changes": True, "symbols": ["load_config", "no_such_name"],
                                  "files": [{"path": "shop/orders.py", "startLine": 1, "endLine": 5},
                                            {"path": "../outside.txt"}]}))
        notice = await receive(ws, "notice")
        assert "../outside.txt" in notice["message"] and "no_such_name" in notice["message"]
        done = await receive(ws, "done")
        cited = [(c["path"], c["startLine"], c["endLine"]) for c in done["citations"]]
        assert ("shop/orders.py", 1, 5) in cited and any(p == "shop/config.py" for p, _s, _e in cited)
        assert any(p == "git diff HEAD" for p, _s, _e in cited)
        assert not any("outside" in p for p, _s, _e in cited)


@pytest.mark.slow
async def test_cancel_stops_a_long_answer(server) -> None:
    async with connect(server.socket_url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "chat", "id": "long", "codebase": False,
                                  "text": "Write a very long essay about databases."}))
        await receive(ws, "token")
        await ws.send(json.dumps({"type": "cancel", "id": "long"}))
        tokens, done = await turn_rest(ws, "long")
        assert done["type"] == "done" and done["cancelled"] and len(tokens) < 100


async def turn_rest(ws, turn_id: str) -> tuple[list[str], dict]:
    tokens = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if message.get("id") == turn_id and message["type"] == "token":
            tokens.append(message["text"])
        elif message.get("id") == turn_id and message["type"] in ("done", "error"):
            return tokens, message


async def test_a_rename_is_proposed_as_diffs_then_applied_inside_the_workspace(server, workspace) -> None:
    before = (workspace / "shop" / "config.py").read_text()
    async with connect(server.socket_url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "edit", "id": "e1", "text": "rename load_config to read_config"}))
        edits = await receive(ws, "edits")
        files = {f["path"]: f["diff"] for f in edits["files"]}
        assert set(files) == {"shop/config.py", "shop/db.py"} and "+def read_config" in files["shop/config.py"]
        await ws.send(json.dumps({"type": "apply", "plan": edits["plan"]}))
        applied = await receive(ws, "applied")
        assert applied["applied"] and applied["via"] == "disk" and set(applied["files"]) == set(files)
        after = (workspace / "shop" / "config.py").read_text()
        assert "def read_config" in after and "load_config" not in after and after != before
        # applying twice, or a plan whose file changed meanwhile, changes nothing
        await ws.send(json.dumps({"type": "apply", "plan": edits["plan"]}))
        assert (await receive(ws, "error"))["code"] == "not_found"
        await ws.send(json.dumps({"type": "edit", "id": "e2", "text": "rename read_config to load_settings"}))
        edits = await receive(ws, "edits")
        (workspace / "shop" / "config.py").write_text(after + "\n# edited meanwhile\n")
        await ws.send(json.dumps({"type": "apply", "plan": edits["plan"]}))
        refused = await receive(ws, "applied")
        assert not refused["applied"] and "shop/config.py" in refused["problems"]
        assert "load_settings" not in (workspace / "shop" / "db.py").read_text()  # all or nothing
        await ws.send(json.dumps({"type": "edit", "id": "e3", "text": "rename read_config to load_settings"}))
        edits = await receive(ws, "edits")
        await ws.send(json.dumps({"type": "reject", "plan": edits["plan"]}))
        assert (await receive(ws, "rejected"))["plan"] == edits["plan"]


async def test_remember_keeps_a_note_without_its_secrets(server) -> None:
    async with connect(server.socket_url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "remember", "id": "r1",
                                  "text": "the staging key is AKIAIOSFODNN7EXAMPLE and money is kept in cents"}))
        remembered = await receive(ws, "remembered")
        assert remembered["memory"] > 0
    memory = server.backends.memory()
    kept = memory.store.get(remembered["memory"])
    assert "cents" in kept.statement and "AKIAIOSFODNN7EXAMPLE" not in kept.statement
