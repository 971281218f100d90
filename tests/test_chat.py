"""A chat turn about a real index with the default model and a real memory store."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from engram.store import MemoryStore
from zhiyin.chat import Attachment, chat_turn
from zhiyin.memory import RepositoryMemory

SAMPLE = Path(__file__).parent / "indexer" / "sample_repo"


@pytest.fixture
def workspace(tmp_path: Path, default_count_tokens):
    from indexer.index import Index

    root = tmp_path / "shop"
    shutil.copytree(SAMPLE, root)
    index = Index.open(root, db_path=tmp_path / "index.db", count_tokens=default_count_tokens, embedder=None)
    index.update()
    memory = RepositoryMemory(MemoryStore.open(tmp_path / "engram.db"), "git-shop", root)
    yield root, index, memory
    memory.store.close()


@pytest.mark.slow
def test_an_answer_streams_and_cites_the_code_it_was_given(workspace, engine_bf16) -> None:
    _root, index, memory = workspace
    events = list(chat_turn(engine_bf16, "How does load_config read the settings file?", index=index, memory=memory))
    assert sum(1 for e in events if e.text and not e.done) > 3  # streamed, token by token
    final = events[-1]
    assert final.done and final.citations
    assert "shop/config.py" in {c.path for c in final.citations}
    assert all(c.start_line <= c.end_line for c in final.citations)


@pytest.mark.slow
def test_attachments_come_first_and_a_turn_can_be_cancelled(workspace, engine_bf16) -> None:
    root, index, memory = workspace
    text = (root / "shop" / "db.py").read_text(encoding="utf-8")
    cancel = threading.Event()
    events = []
    for event in chat_turn(engine_bf16, "Explain this class in detail.", index=index, memory=memory,
                           attachments=[Attachment("shop/db.py", text)], cancel=cancel):
        events.append(event)
        if len(events) == 3:
            cancel.set()  # the stop button
    assert events[-1].done and len(events) <= 6  # stopped within a token or two
    assert events[-1].citations[0].path == "shop/db.py" and events[-1].citations[0].start_line == 1


def test_remember_requests_are_stored_without_a_model(workspace) -> None:
    _root, _index, memory = workspace
    [event] = chat_turn(None, "记住：金额一律用整数分存储", memory=memory)
    assert event.done and event.remembered is not None
    stored = memory.store.get(event.remembered)
    assert stored.statement == "金额一律用整数分存储" and stored.status == "active"
    assert stored.citations[0].source == "chat"
    [none] = chat_turn(None, "remember that the CI runs on Debian", memory=None)
    assert none.done and none.remembered is None and none.text
