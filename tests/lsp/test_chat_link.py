"""The chat panel opened from the editor: the language server starts the chat server in its own
process, and an edit applied from the chat reaches the editor as `workspace/applyEdit`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient
from websockets.asyncio.client import connect

from tests.chat.conftest import receive
from tests.lsp.test_edits import Editor
from tests.lsp.test_server import SAMPLE_REPO, SERVER_COMMAND, server_env

pytestmark = pytest.mark.asyncio


async def test_an_edit_applied_in_the_chat_goes_through_the_editor(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, root)
    client = await ClientServerConfig(server_command=SERVER_COMMAND, server_env=server_env(tmp_path)).start()
    editor = Editor()

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(_client: LanguageClient, params: types.ApplyWorkspaceEditParams):
        return editor.apply(params)

    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=types.ClientCapabilities(workspace=types.WorkspaceClientCapabilities(
                apply_edit=True, workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True))),
            root_uri=root.as_uri(), initialization_options={"embeddings": False}))
        opened = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="zhiyin.openChat"))
        assert opened["url"].startswith("http://127.0.0.1:") and "#token=" in opened["url"]
        again = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="zhiyin.openChat"))
        assert again == opened  # one chat server per editor session
        async with connect(opened["socketUrl"], origin="vscode-webview://zhiyin-test") as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "status"}))
            assert (await receive(ws, "status"))["editor"] is True
            await ws.send(json.dumps({"type": "edit", "id": "e", "text": "rename load_config to read_config"}))
            edits = await receive(ws, "edits")
            assert {f["path"] for f in edits["files"]} == {"shop/config.py", "shop/db.py"}
            await ws.send(json.dumps({"type": "apply", "plan": edits["plan"]}))
            applied = await receive(ws, "applied")
        assert applied["applied"] and applied["via"] == "editor", applied
        assert len(editor.received) == 1  # one workspace edit, both files: one undo step
        assert {c.text_document.uri for c in editor.received[0].edit.document_changes} == {
            (root / "shop" / "config.py").as_uri(), (root / "shop" / "db.py").as_uri()}
        assert "def read_config" in (root / "shop" / "config.py").read_text()
    finally:
        await client.shutdown_session()
        await client.stop()
