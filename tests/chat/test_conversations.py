"""Conversations in SQLite: kept per repository, secrets redacted, a damaged file moved aside."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from zhiyin.conversations import ConversationStore, Message


def test_conversations_are_kept_per_repository_and_survive_reopening(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "chats.db")
    first = store.create("/repo/a", "How is   money\nstored?")
    store.append(first, Message("user", "How is money stored?"))
    store.append(first, Message("assistant", "In integer cents [1].", [{"n": 1, "path": "billing.py", "startLine": 3}]))
    other = store.create("/repo/b", "别的仓库")
    store.close()

    store = ConversationStore(tmp_path / "chats.db")
    assert [(c.id, c.title) for c in store.list("/repo/a")] == [(first, "How is money stored?")]
    loaded = store.load("/repo/a", first)
    assert [(m.role, m.text) for m in loaded.messages] == [("user", "How is money stored?"),
                                                             ("assistant", "In integer cents [1].")]
    assert loaded.messages[1].citations == [{"n": 1, "path": "billing.py", "startLine": 3}]
    assert store.load("/repo/a", other) is None and not store.delete("/repo/a", other)  # another repository's
    assert store.delete("/repo/a", first) and store.load("/repo/a", first) is None
    assert [c.id for c in store.list("/repo/b")] == [other]


def test_a_long_title_is_cut_and_secrets_never_reach_the_file(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "chats.db")
    key = "AKIAIOSFODNN7EXAMPLE"
    conversation = store.create("/r", f"why does {key} fail " + "x" * 100)
    store.append(conversation, Message("user", f"my token is ghp_{'a1B2c3D4' * 5}"))
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key.encode() not in raw and b"a1B2c3D4a1B2c3D4" not in raw
    title = ConversationStore(tmp_path / "chats.db").list("/r")[0].title
    assert len(title) == 60 and title.endswith("…") and "[REDACTED" in title


def test_a_damaged_file_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "chats.db"
    path.write_bytes(b"this is not a database" * 100)
    store = ConversationStore(path)
    assert store.moved_aside is not None and store.moved_aside.read_bytes().startswith(b"this is not")
    assert store.list("/r") == [] and store.create("/r", "works again") > 0
    # a database of another schema version is not silently misread either
    other = tmp_path / "old.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE conversations (id INTEGER)")
        conn.execute("PRAGMA user_version = 99")
    assert ConversationStore(other).moved_aside is not None
