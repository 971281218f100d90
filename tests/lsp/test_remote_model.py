"""The language server with an OpenAI-compatible server as its model: the user's config names
`zhiyin engine serve` (started here); inline completions come from it, and when it dies the editor
gets a message and keeps being served."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from lsprotocol import types

from tests.lsp.test_server import SAMPLE_REPO, open_orders, start
from tests.test_openai_server import start as start_engine_server

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def inline(client, uri: str, cursor: types.Position) -> list[types.InlineCompletionItem]:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=cursor,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    return result.items if isinstance(result, types.InlineCompletionList) else (result or [])


async def test_inline_completions_come_from_the_configured_server(tmp_path: Path) -> None:
    process, url = start_engine_server(tmp_path / "engine")
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, repo)
    config = tmp_path / "config" / "zhiyin" / "config.toml"  # the server_env's XDG_CONFIG_HOME
    config.parent.mkdir(parents=True)
    config.write_text(f'[openai]\nbase_url = "{url}"\nmax_retries = 0\ntimeout_s = 60\n')
    client, _result = await start(tmp_path, repo, options={"embeddings": False})
    try:
        uri, cursor = open_orders(client, repo)
        items = await inline(client, uri, cursor)
        assert items and items[0].insert_text.strip()
        process.kill()  # the model server goes away: completions fail quietly, the editor is still served
        process.wait(10)
        uri, cursor = open_orders(client, repo, typed="\n    total = 0\n    ")
        assert not await inline(client, uri, cursor)
        for _ in range(50):  # the message comes from the worker thread, through the event loop
            if any("model server" in m.message for m in client.messages):
                break
            await asyncio.sleep(0.1)
        assert any("Cannot reach the model server" in m.message or "model server failed" in m.message
                   for m in client.messages), [m.message for m in client.messages]
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=1)),
            context=types.CodeActionContext(diagnostics=[])))
        assert actions is not None  # the server still answers
    finally:
        await client.shutdown_session()
        await client.stop()
        if process.poll() is None:
            process.terminate()
