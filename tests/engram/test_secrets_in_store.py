"""Secrets in chats, diffs and rule files never reach the memory store: not its tables, indexes,
nor the bytes of its files, before or after `forget`."""

from __future__ import annotations

from pathlib import Path

from engram.records import Citation, MemoryDraft
from engram.store import MemoryStore
from tests.engram.secret_corpus import planted_corpus

WINDOW = 8
_SOURCE = {"chat-en": "chat", "chat-zh": "chat", "diff": "accepted_edit", "rules": "rule_file"}


def database_bytes(path: Path) -> bytes:
    return b"".join(Path(f"{path}{s}").read_bytes() for s in ("", "-wal", "-shm") if Path(f"{path}{s}").exists())


def recoverable(secret: str, data: bytes) -> list[str]:
    n = min(WINDOW, len(secret))
    return sorted({secret[i : i + n] for i in range(len(secret) - n + 1) if secret[i : i + n].encode() in data})


def test_planted_secrets_are_not_recoverable_from_the_database_files(tmp_path: Path, embedder) -> None:
    path = tmp_path / "engram.db"
    store = MemoryStore.open(path, embedder=lambda: embedder)
    planted = planted_corpus()
    # a chat message, a diff or a rule file, whole: as statement and again as rationale
    drafts = [MemoryDraft("gotcha", case.text, rationale=case.text, citations=(Citation(_SOURCE[case.carrier]),))
              for case in planted]
    results = store.add_many(drafts, "git-secrets")
    assert sum(r.redactions for r in results) >= len({s for case in planted for _k, s in case.secrets})
    forget = [r.id for r in results[::5]]
    for memory_id in dict.fromkeys(forget):
        store.forget(memory_id)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()

    data = database_bytes(path)
    leaked = {secret: found for case in planted for _kind, secret in case.secrets
              if (found := recoverable(secret, data))}
    kinds = {kind for case in planted for kind, _s in case.secrets}
    print(f"{sum(len(c.secrets) for c in planted)} planted secrets of {len(kinds)} kinds; {len(leaked)} recoverable")
    assert len(kinds) >= 15 and sum(len(c.secrets) for c in planted) >= 200
    assert not leaked, list(leaked.items())[:3]
    assert all("REDACTED" in m.statement for m in MemoryStore.open(path).list("git-secrets"))
