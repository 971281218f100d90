"""Recall: fused legs, across languages, by path, cut to budget, with stale citations flagged."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engram.recall import recall
from engram.records import Citation, MemoryDraft
from engram.store import MemoryStore, lines_hash

REPO = "git-feedfacecafebeef"


@pytest.fixture
def store(tmp_path: Path, embedder) -> MemoryStore:
    store = MemoryStore.open(tmp_path / "engram.db", embedder=lambda: embedder)
    yield store
    store.close()


def fill(store: MemoryStore) -> dict[str, int]:
    drafts = {
        "paths": MemoryDraft("convention", "Use pathlib.Path for every file system path; os.path is not used."),
        "money": MemoryDraft("decision", "Money amounts are stored as integer cents, never as floats."),
        "retry": MemoryDraft("fix", "The HTTP client retries on 503 with exponential backoff after the outage of March."),
        "logs": MemoryDraft("convention", "日志一律使用 structlog，不要直接调用 print。"),
        "migrations": MemoryDraft("gotcha", "数据库迁移必须可以回滚：每个 upgrade 都要写 downgrade。"),
        "ts": MemoryDraft("convention", "Components are function components with hooks.", globs=("web/**/*.tsx",)),
    }
    ids = {name: store.add(draft, REPO).id for name, draft in drafts.items()}
    store.add(MemoryDraft("convention", "Money amounts are floats."), "git-another-repository")
    return ids


@pytest.mark.parametrize(("query", "expected"), [
    ("how do we keep prices in the database?", "money"),
    ("金额应该用什么类型存储？", "money"),  # Chinese question, English memory
    ("怎么处理文件路径", "paths"),
    ("which logging library should I use instead of print?", "logs"),  # English question, Chinese memory
    ("can a schema migration be irreversible?", "migrations"),
])
def test_recall_finds_memories_across_languages(store: MemoryStore, query: str, expected: str) -> None:
    ids = fill(store)
    found = recall(store, query, REPO, purpose="chat")
    assert ids[expected] in [r.memory.id for r in found[:3]], [r.memory.statement for r in found]
    assert all(r.memory.repo == REPO for r in found)  # nothing from the other repository


def test_globs_bring_up_memories_for_the_file_at_hand(store: MemoryStore) -> None:
    ids = fill(store)
    found = recall(store, "render the settings page", REPO, path="web/src/Settings.tsx", purpose="completion")
    assert found[0].memory.id == ids["ts"] and "glob" in found[0].legs
    assert ids["ts"] not in [r.memory.id for r in recall(store, "render the settings page", REPO, path="api/app.py")
                             if "glob" in r.legs]


def test_budgets_bound_what_is_recalled(store: MemoryStore) -> None:
    fill(store)
    for i in range(20):
        store.add(MemoryDraft("convention", f"Rule number {i}: module_{i} owns table_{i} and nothing else."), REPO)
    assert len(recall(store, "which module owns which table", REPO, purpose="completion")) <= 3
    assert 3 < len(recall(store, "which module owns which table", REPO, purpose="chat")) <= 8


def test_user_memories_come_up_in_every_repository(store: MemoryStore) -> None:
    mine = store.add(MemoryDraft("preference", "Answer me in Chinese, with code comments in English.", scope="user"),
                     REPO).id
    found = recall(store, "what language should answers be in?", "git-some-other-repo")
    assert found and found[0].memory.id == mine


def test_rejected_and_superseded_memories_are_not_recalled(store: MemoryStore) -> None:
    ids = fill(store)
    store.set_status(ids["money"], "rejected")
    assert ids["money"] not in [r.memory.id for r in recall(store, "money amounts cents", REPO)]
    pending = store.add(MemoryDraft("fix", "Close the websocket when the token expires."), REPO, status="pending").id
    assert pending not in [r.memory.id for r in recall(store, "websocket token expires", REPO)]
    store.set_status(pending, "active")
    assert pending in [r.memory.id for r in recall(store, "websocket token expires", REPO)]


def tag(n: int) -> str:
    """A word only one memory has (no digits: FTS would split them off)."""
    return "tag" + chr(97 + n % 26) + chr(97 + n // 26)


def test_edited_citations_are_flagged_stale_in_a_synthetic_edit_test(tmp_path: Path) -> None:
    """100 memories cite blocks of 20 generated files; half the blocks are then edited or deleted,
    the others only move (lines inserted above) or see edits elsewhere in their file. (No
    embedder: their statements are alike enough that the store would merge them.)"""
    store = MemoryStore.open(tmp_path / "words-only.db")
    rng = random.Random(7)
    root = tmp_path / "repo"
    root.mkdir()
    files = {f"mod_{f}.py": [f"value_{f}_{i} = compute_{i}({i})" for i in range(120)] for f in range(20)}
    cases = []
    for n in range(100):
        name = f"mod_{n % 20}.py"
        start = 10 + (n // 20) * 20 + rng.randrange(5)
        end = start + rng.randrange(3)
        cited = files[name][start - 1 : end]
        citation = Citation("user", name, start, end, None, lines_hash(cited))
        memory_id = store.add(MemoryDraft("convention", f"Block {n} ({tag(n)}) of {name} computes values {start} to {end}.",
                                          citations=(citation,)), REPO).id
        cases.append((memory_id, name, start, end, n % 2 == 0))  # even: its lines get edited
    for memory_id, name, start, end, edit in sorted(cases, key=lambda c: -c[2]):  # bottom up: deletions shift nothing
        lines = files[name]
        if edit:
            target = rng.randrange(start, end + 1) - 1
            if rng.random() < 0.2:
                del lines[target]
            else:
                lines[target] = lines[target].replace("compute", "recompute")
    for name, lines in files.items():  # moves and unrelated edits, then the files are written
        lines.insert(0, "import math")
        lines.append("# end")
        (root / name).write_text("\n".join(lines), encoding="utf-8")

    store_memories = store.memories(m for m, *_ in cases)
    from engram.recall import _citation_changed

    flagged = {m for m, *_ in cases if _citation_changed(store_memories[m], root)}
    edited = {m for m, *_rest, edit in cases if edit}
    caught = len(flagged & edited) / len(edited)
    false_alarms = len(flagged - edited) / (len(cases) - len(edited))
    print(f"stale citations flagged: {caught:.0%} of edited, {false_alarms:.0%} of untouched")
    assert caught >= 0.95 and false_alarms <= 0.05
    # and recall says so: a stale memory comes back flagged and its status changes
    stale_id = next(iter(flagged & edited))
    word = store_memories[stale_id].statement.split("(")[1].split(")")[0]
    found = {r.memory.id: r for r in recall(store, word, REPO, root=root)}
    assert found[stale_id].stale and store.get(stale_id).status == "stale"
