"""The memory store on a real SQLite file with sqlite-vec and the default embedder."""

from __future__ import annotations

from pathlib import Path

import pysqlite3.dbapi2 as sqlite3
import pytest

from engram.errors import InvalidMemoryError, MemoryNotFoundError
from engram.records import Citation, MemoryDraft
from engram.store import MemoryStore

REPO = "git-0123456789abcdef"


@pytest.fixture
def store(tmp_path: Path, embedder) -> MemoryStore:
    store = MemoryStore.open(tmp_path / "engram.db", embedder=lambda: embedder)
    yield store
    store.close()


def raw_bytes(path: Path) -> bytes:
    return b"".join(Path(f"{path}{s}").read_bytes() for s in ("", "-wal", "-shm") if Path(f"{path}{s}").exists())


def test_add_list_show_with_citations(store: MemoryStore) -> None:
    draft = MemoryDraft("convention", "Use pathlib.Path for file paths, not os.path.", rationale="one API",
                        globs=("src/**/*.py",), citations=(Citation("rule_file", "AGENTS.md", 3, 3, None, "h"),))
    result = store.add(draft, REPO)
    assert result.action == "added"
    memory = store.get(result.id)
    assert memory.statement == draft.statement and memory.globs == ("src/**/*.py",)
    assert memory.citations == draft.citations and memory.status == "active"
    assert [m.id for m in store.list(REPO)] == [result.id]
    assert store.list("git-other") == []  # another repository's partition
    with pytest.raises(MemoryNotFoundError):
        store.get(result.id + 100)
    with pytest.raises(InvalidMemoryError):
        store.add(MemoryDraft("opinion", "x"), REPO)


def test_duplicates_fold_into_one_memory_with_more_evidence(store: MemoryStore) -> None:
    first = store.add(MemoryDraft("convention", "Run ruff before committing.",
                                  citations=(Citation("rule_file", "AGENTS.md", 1, 1),)), REPO)
    same = store.add(MemoryDraft("convention", "run  ruff before committing.",
                                 citations=(Citation("chat"),)), REPO)
    near = store.add(MemoryDraft("convention", "Run ruff before you commit."), REPO)
    assert (same.action, same.id) == ("duplicate", first.id)
    assert (near.action, near.id) == ("merged", first.id)
    assert len(store.list(REPO)) == 1
    assert [c.source for c in store.get(first.id).citations] == ["rule_file", "chat"]


def test_a_contradiction_supersedes_the_older_memory_and_keeps_it(store: MemoryStore) -> None:
    old = store.add(MemoryDraft("convention", "Use requests for HTTP calls in the client."), REPO)
    new = store.add(MemoryDraft("convention", "Never use requests for HTTP calls in the client; use httpx."), REPO)
    unrelated = store.add(MemoryDraft("convention", "Tests live in tests/ and mirror the package layout."), REPO)
    assert new.action == "superseded" and new.superseded == [old.id]
    kept = store.get(old.id)
    assert kept.status == "superseded" and kept.valid_to is not None and kept.superseded_by == new.id
    assert store.get(unrelated.id).status == "active"
    actions = [action for _at, _id, action, _detail in store.events(old.id)]
    assert actions == ["added", "status:superseded"]


def test_the_same_topic_supersedes_and_edits_keep_history(store: MemoryStore) -> None:
    first = store.add(MemoryDraft("convention", "Commit messages are in English.", topic="rule:AGENTS.md#Commits#1"), REPO)
    second = store.add(MemoryDraft("convention", "Commit messages follow Conventional Commits.",
                                   topic="rule:AGENTS.md#Commits#1"), REPO)
    assert second.superseded == [first.id]
    edited = store.edit(second.id, statement="Commit messages follow Conventional Commits, in English.")
    assert store.get(second.id).status == "superseded" and store.get(edited.id).status == "active"
    assert [m.id for m in store.list(REPO, statuses=["active"])] == [edited.id]


def test_secrets_never_reach_the_database(store: MemoryStore, tmp_path: Path) -> None:
    key = "sk-proj-" + "Zq8Xv3Lm9Tn2Rb7Kc4Wd6Yf1Hg5Js0Pa" * 2
    result = store.add(MemoryDraft("gotcha", f"The staging client needs OPENAI_API_KEY={key} to start.",
                                   rationale=f"seen in chat: {key}"), REPO)
    assert result.redactions >= 1
    memory = store.get(result.id)
    assert key not in memory.statement and "REDACTED" in memory.statement
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert key[:16].encode() not in raw_bytes(tmp_path / "engram.db")


def test_forget_leaves_no_trace_in_tables_indexes_or_file_bytes(store: MemoryStore, tmp_path: Path) -> None:
    marker = "Zebrafish-quux-frobnicator convention for the billing module"
    kept = store.add(MemoryDraft("convention", "Money is stored in integer cents."), REPO)
    gone = store.add(MemoryDraft("decision", marker, citations=(Citation("user"),)), REPO)
    assert store.fts_search("frobnicator", [REPO], 5) == [(gone.id, pytest.approx(store.fts_search(
        "frobnicator", [REPO], 5)[0][1]))]
    store.forget(gone.id)
    with pytest.raises(MemoryNotFoundError):
        store.get(gone.id)
    assert store.fts_search("frobnicator", [REPO], 5) == []
    assert all(i != gone.id for i, _d in store.vector_search(store.embed_query(marker), [REPO], 10))
    assert store.conn.execute("SELECT count(*) FROM provenance WHERE memory_id = ?", (gone.id,)).fetchone()[0] == 0
    assert [a for _t, _i, a, _d in store.events(gone.id)][-1] == "forgotten"
    assert b"frobnicator" not in raw_bytes(tmp_path / "engram.db").lower()
    assert store.get(kept.id).status == "active"


def test_the_event_log_is_append_only(store: MemoryStore) -> None:
    store.add(MemoryDraft("preference", "Prefer small pull requests."), REPO)
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("UPDATE events SET action = 'x'")
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("DELETE FROM events")


def test_a_damaged_file_is_moved_aside_and_a_fresh_store_starts(tmp_path: Path) -> None:
    path = tmp_path / "engram.db"
    store = MemoryStore.open(path)
    store.add(MemoryDraft("convention", "Use tabs."), REPO)
    store.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xde\xad\xbe\xef" * ((4096 - 100) // 4)  # the header survives, the pages do not
    path.write_bytes(bytes(data))
    reopened = MemoryStore.open(path)
    assert reopened.moved_aside is not None and reopened.moved_aside.exists()
    assert reopened.list(REPO) == []
    reopened.add(MemoryDraft("convention", "Use spaces."), REPO)
    assert len(reopened.list(REPO)) == 1
    reopened.close()
    (tmp_path / "garbage.db").write_bytes(b"not a database at all" * 100)
    assert MemoryStore.open(tmp_path / "garbage.db").moved_aside is not None
