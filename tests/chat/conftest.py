"""A real chat server (real engine, index, memory and conversation store) on a free loopback port,
in the test's event loop."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_asyncio

from zhiyin.backends import Backends
from zhiyin.chat_server import ChatServer
from zhiyin.conversations import ConversationStore
from zhiyin.progress import ProgressBoard

SAMPLE = Path(__file__).parent.parent / "indexer" / "sample_repo"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the project memory lands here
    root = tmp_path / "shop"
    shutil.copytree(SAMPLE, root)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init"],
                   cwd=root, check=True)
    return root


@pytest.fixture
def make_server(workspace: Path, tmp_path: Path, engine_bf16, default_count_tokens):
    from indexer.index import Index

    index = Index.open(workspace, db_path=tmp_path / "index.db", count_tokens=default_count_tokens, embedder=None)
    index.update()
    stores: list[ConversationStore] = []

    def make(**options) -> ChatServer:
        backends = Backends(workspace, embeddings=False, progress=ProgressBoard(terminal=False),
                            show_error=print, engine=engine_bf16, index=index)
        stores.append(ConversationStore(tmp_path / "chats.db"))
        return ChatServer(backends, stores[-1], **options)

    yield make
    for store in stores:
        store.close()
    index.close()


@pytest_asyncio.fixture
async def server(make_server):
    server = make_server()
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(server.run(ready))
    await ready
    yield server
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def receive(ws, *types: str, timeout: float = 120) -> dict:
    """The next message of one of `types` (others skipped)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] in types:
            return message


async def turn(ws, turn_id: str, text: str, on_first_token=None, **fields) -> tuple[list[str], dict]:
    """Sends a chat message; the streamed tokens and the final message (done or error).
    `on_first_token()` is called as the first token arrives."""
    await ws.send(json.dumps({"type": "chat", "id": turn_id, "text": text, **fields}))
    tokens = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 300))
        if message.get("id") != turn_id:
            continue
        if message["type"] == "token":
            if not tokens and on_first_token is not None:
                on_first_token()
            tokens.append(message["text"])
        elif message["type"] in ("done", "error"):
            return tokens, message
