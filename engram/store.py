"""The project memory's SQLite file: memories, their provenance, an append-only event log, FTS5
and sqlite-vec indexes.

One file in the user data dir (WAL, `secure_delete`: forgotten text is overwritten, not left in
free pages). Every text is redacted before it is stored, embedded or indexed: a secret never
reaches a table. Memories are never deleted by consolidation: a duplicate adds its citation to the
existing memory, a contradiction sets the older one's `valid_to` and marks it superseded; only
`forget` deletes, on the user's word. The event log records what happened to which memory id,
never the text (a forgotten memory leaves no copy behind).

A damaged file is detected at open, moved aside (its name is kept in `moved_aside` for the
caller's message) and a fresh one created; `export` writes JSONL that `import` reads back.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import platformdirs
import pysqlite3.dbapi2 as sqlite3
import sqlite_utils
import sqlite_vec

from engine import search_text
from engine.embedder import Embedder
from engram.errors import (
    InvalidMemoryError,
    MemoryNotFoundError,
    MemoryStoreUnwritableError,
)
from engram.records import (
    KINDS,
    SCOPES,
    SOURCES,
    STATUSES,
    USER_PARTITION,
    AddResult,
    Citation,
    Memory,
    MemoryDraft,
)
from engram.redaction import redact

SCHEMA_VERSION = 1
NEAR_DUPLICATE = 0.12  # cosine distance under which two memories of a kind say the same thing
CONTRADICTION = 0.35  # closer than this, with opposite polarity: the newer supersedes the older
USE_FLUSH_S = 30.0
_NEGATION = re.compile(
    r"\b(?:never|not|no longer|don't|do not|doesn't|must not|mustn't|avoid|stop|instead of)\b|不要|禁止|避免|不再|不得|别再|勿",
    re.IGNORECASE)

_MEMORY_COLUMNS = ("id, repo, kind, scope, statement, rationale, how_to_apply, globs, status, importance, "
                   "use_count, pinned, valid_from, valid_to, created_at, topic, superseded_by")


def default_store_path() -> Path:
    return Path(platformdirs.user_data_dir("zhiyin")) / "engram.db"


def content_hash(kind: str, statement: str) -> str:
    """Equal for statements that differ only in case and spacing."""
    normal = " ".join(statement.lower().split())
    return hashlib.sha256(f"{kind}\n{normal}".encode()).hexdigest()


def lines_hash(lines: Iterable[str]) -> str:
    """Of cited lines, ignoring trailing whitespace (an editor's clean-up is not a change)."""
    return hashlib.sha256("\n".join(line.rstrip() for line in lines).encode()).hexdigest()[:32]


def polarity(statement: str) -> bool:
    """True when the statement forbids or negates (never, don't, 不要…)."""
    return bool(_NEGATION.search(statement))


class MemoryStore:
    def __init__(self, conn: sqlite3.Connection, path: Path, embedder: Callable[[], Embedder] | None,
                 moved_aside: Path | None) -> None:
        self.conn, self.path = conn, path
        self.moved_aside = moved_aside  # where a damaged file went, for the caller to say
        self._embedder_factory = embedder
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()
        self._write_lock = threading.RLock()  # one connection, shared by the server's threads: one writer at a time
        self._pending_uses: dict[int, int] = {}
        self._last_use_flush = time.time()

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | None = None, *, embedder: Callable[[], Embedder] | None = None) -> MemoryStore:
        """The store at `path` (default: the user data dir). `embedder` makes the vector index;
        without it memories are found by words and globs only."""
        path = Path(path) if path else default_store_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MemoryStoreUnwritableError(path=str(path), detail=e.strerror or str(e)) from e
        moved_aside = None
        try:
            conn = _connect(path)
            if not _has_tables(conn):
                _create_schema(conn)
            elif conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION or \
                    conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("not a Zhiyin memory file of this version")
        except sqlite3.DatabaseError:
            moved_aside = move_aside(path)
            conn = _connect(path)
            _create_schema(conn)
        return cls(conn, path, embedder, moved_aside)

    def close(self) -> None:
        if self._pending_uses:
            self.flush_uses()
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._write_lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise MemoryStoreUnwritableError(path=str(self.path), detail=str(e)) from e
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @property
    def embedder(self) -> Embedder | None:
        with self._embedder_lock:
            if self._embedder is None and self._embedder_factory is not None:
                embedder = self._embedder_factory()
                self._prepare_vectors(embedder)
                self._embedder = embedder
            return self._embedder

    # --- writing -------------------------------------------------------------------------

    def add(self, draft: MemoryDraft, repo: str, *, status: str = "active", source: str = "user") -> AddResult:
        """Stores `draft` for the repository partition `repo` (user-scoped drafts go to the user's
        partition): redacted, then deduplicated, merged or superseding what it contradicts."""
        return self.add_many([draft], repo, status=status, source=source)[0]

    def add_many(self, drafts: list[MemoryDraft], repo: str, *, status: str = "active", source: str = "user",
                 batch_size: int = 256) -> list[AddResult]:
        """`add` for many drafts: embedded in batches, one transaction per batch (imports, learning)."""
        results = []
        for start in range(0, len(drafts), batch_size):
            batch = drafts[start : start + batch_size]
            for draft in batch:
                _check_draft(draft, status)
            cleaned = [_redacted_draft(d) for d in batch]
            vectors = self._embed_documents([clean for clean, _n in cleaned])
            with self.transaction():
                results += [self._file(clean, redactions, repo, status, source, vector)
                            for (clean, redactions), vector in zip(cleaned, vectors, strict=True)]
        return results

    def _file(self, clean: MemoryDraft, redactions: int, repo: str, status: str, source: str,
              vector: np.ndarray | None) -> AddResult:
        """Inside a transaction: a redacted draft folded into its duplicate, merged into a near
        duplicate, or inserted (superseding what it contradicts)."""
        partition = USER_PARTITION if clean.scope == "user" else repo
        digest = content_hash(clean.kind, clean.statement)
        row = self.conn.execute(
            "SELECT id FROM memories WHERE repo = ? AND content_hash = ? AND status != 'rejected'",
            (partition, digest)).fetchone()
        if row is not None:
            self._reinforce(row[0], clean, "duplicate")
            return AddResult(row[0], "duplicate", redactions)
        if vector is not None and (near := self._nearest(vector, partition, clean.kind, NEAR_DUPLICATE)):
            self._reinforce(near, clean, "merged")
            return AddResult(near, "merged", redactions)
        memory_id = self._insert(clean, partition, status, digest, vector)
        superseded = self._supersede_contradicted(memory_id, clean, partition, vector) if status == "active" else []
        self._log(memory_id, "added", {"source": source, "status": status, "redactions": redactions})
        return AddResult(memory_id, "superseded" if superseded else "added", redactions, superseded)

    def set_status(self, memory_id: int, status: str, reason: str = "") -> None:
        if status not in STATUSES:
            raise InvalidMemoryError(detail=f"status {status!r}")
        self.get(memory_id)
        with self.transaction():
            now = time.time()
            valid_to = now if status in ("superseded", "rejected") else None
            self.conn.execute("UPDATE memories SET status = ?, valid_to = ?, updated_at = ? WHERE id = ?",
                              (status, valid_to, now, memory_id))
            self._set_vector_status(memory_id, status)
            self._log(memory_id, f"status:{status}", {"reason": reason} if reason else {})

    def edit(self, memory_id: int, **changes: object) -> AddResult:
        """A corrected memory: the new text becomes a new memory that supersedes this one (history kept)."""
        old = self.get(memory_id)
        fields = {"kind": old.kind, "statement": old.statement, "rationale": old.rationale,
                  "how_to_apply": old.how_to_apply, "globs": old.globs, "scope": old.scope,
                  "importance": old.importance, "citations": old.citations, "topic": old.topic}
        unknown = set(changes) - set(fields)
        if unknown:
            raise InvalidMemoryError(detail=f"unknown fields {sorted(unknown)}")
        fields.update({k: v for k, v in changes.items() if v is not None})
        draft = MemoryDraft(**fields)  # type: ignore[arg-type]
        _check_draft(draft, "active")
        clean, redactions = _redacted_draft(draft)
        vector = self._embed_document(clean)
        with self.transaction():
            new_id = self._insert(clean, old.repo, "active", content_hash(clean.kind, clean.statement), vector)
            self._supersede(memory_id, new_id)
            self._log(new_id, "added", {"source": "user", "edit_of": memory_id, "redactions": redactions})
        return AddResult(new_id, "superseded", redactions, [memory_id])

    def pin(self, memory_id: int, pinned: bool = True) -> None:
        self.get(memory_id)
        with self.transaction():
            self.conn.execute("UPDATE memories SET pinned = ? WHERE id = ?", (int(pinned), memory_id))
            self._log(memory_id, "pinned" if pinned else "unpinned", {})

    def forget(self, memory_id: int) -> None:
        """Deletes the memory and its provenance for good: overwritten on disk, out of the indexes."""
        self.get(memory_id)
        with self.transaction():
            self.conn.execute("DELETE FROM memories_fts WHERE rowid = ?", (memory_id,))
            if self._has_vectors():
                self.conn.execute("DELETE FROM memory_vectors WHERE memory_id = ?", (memory_id,))
            self.conn.execute("DELETE FROM provenance WHERE memory_id = ?", (memory_id,))
            self.conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
            self._log(memory_id, "forgotten", {})
        # FTS5 keeps deleted terms in its segments until they merge; the WAL keeps old pages
        self.conn.execute("INSERT INTO memories_fts(memories_fts) VALUES ('optimize')")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def mark_used(self, memory_ids: list[int]) -> None:
        """Counts a recall of these memories. Kept in memory and written every USE_FLUSH_S seconds
        (and on close): a recall must not wait for a disk sync, and a lost count is no lost memory."""
        now = time.time()
        with self._write_lock:
            for memory_id in memory_ids:
                self._pending_uses[memory_id] = self._pending_uses.get(memory_id, 0) + 1
            if self._pending_uses and now - self._last_use_flush >= USE_FLUSH_S:
                self.flush_uses()

    def flush_uses(self) -> None:
        with self.transaction():
            self.conn.executemany("UPDATE memories SET use_count = use_count + ?, last_used = ? WHERE id = ?",
                                  [(n, time.time(), i) for i, n in self._pending_uses.items()])
            self._pending_uses.clear()
            self._last_use_flush = time.time()

    # --- reading -------------------------------------------------------------------------

    def get(self, memory_id: int) -> Memory:
        row = self.conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
        if row is None:
            raise MemoryNotFoundError(id=memory_id)
        return self._memory(row)

    def memories(self, ids: Iterable[int]) -> dict[int, Memory]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id IN ({marks})", ids).fetchall()
        citations = self._citations(ids)
        return {row[0]: self._memory(row, citations.get(row[0], ())) for row in rows}

    def list(self, repo: str | None = None, *, statuses: Iterable[str] | None = None, kind: str | None = None,
             ) -> list[Memory]:
        """Memories of the repository partition `repo` and the user's (all when None), newest first."""
        where, args = [], []
        if repo is not None:
            where.append("repo IN (?, ?)")
            args += [repo, USER_PARTITION]
        if statuses is not None:
            statuses = list(statuses)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += statuses
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = f"SELECT id FROM memories {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC"
        ids = [r[0] for r in self.conn.execute(sql, args)]
        by_id = self.memories(ids)
        return [by_id[i] for i in ids]

    def events(self, memory_id: int | None = None) -> list[tuple[float, int, str, dict]]:
        sql = "SELECT at, memory_id, action, detail FROM events"
        rows = self.conn.execute(sql + (" WHERE memory_id = ? ORDER BY id" if memory_id is not None else " ORDER BY id"),
                                 (memory_id,) if memory_id is not None else ())
        return [(at, mid, action, json.loads(detail)) for at, mid, action, detail in rows]

    def fts_search(self, query: str, partitions: list[str], k: int) -> list[tuple[int, float]]:
        """(id, bm25) of recallable memories in `partitions` matching the query's words, best first."""
        match = search_text.match_query(query)
        if match is None:
            return []
        scopes = " OR ".join(f'"{_partition_term(p)}"' for p in partitions)
        rows = self.conn.execute(
            "SELECT f.rowid, bm25(memories_fts) FROM memories_fts f JOIN memories m ON m.id = f.rowid "
            "WHERE memories_fts MATCH ? AND m.status IN ('active', 'stale') ORDER BY bm25(memories_fts) LIMIT ?",
            (f"partition: ({scopes}) AND body: ({match})", k)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def vector_search(self, vector: np.ndarray, partitions: list[str], k: int) -> list[tuple[int, float]]:
        """(id, cosine distance) of the nearest recallable memories in `partitions`."""
        if not self._has_vectors():
            return []
        hits = []
        for partition in partitions:
            hits += self.conn.execute(
                "SELECT memory_id, distance FROM memory_vectors WHERE embedding MATCH ? AND k = ? AND repo = ? "
                "AND status IN ('active', 'stale')", (_blob(vector), k, partition)).fetchall()
        return sorted(hits, key=lambda h: h[1])[:k]

    def with_globs(self, partitions: list[str]) -> list[tuple[int, tuple[str, ...]]]:
        """(id, globs) of the recallable memories in `partitions` that apply to paths."""
        marks = ",".join("?" * len(partitions))
        rows = self.conn.execute(
            f"SELECT id, globs FROM memories WHERE repo IN ({marks}) AND globs != '[]' "
            "AND status IN ('active', 'stale')", partitions)
        return [(i, tuple(json.loads(g))) for i, g in rows]

    def embed_query(self, query: str) -> np.ndarray | None:
        embedder = self.embedder
        return None if embedder is None else embedder.embed_queries([redact(query).text])[0]

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def counts(self) -> dict[str, int]:
        one = lambda sql: self.conn.execute(sql).fetchone()[0]
        return {"memories": one("SELECT count(*) FROM memories"),
                "active": one("SELECT count(*) FROM memories WHERE status = 'active'"),
                "pending": one("SELECT count(*) FROM memories WHERE status = 'pending'"),
                "events": one("SELECT count(*) FROM events")}

    # --- internals -----------------------------------------------------------------------

    def _insert(self, draft: MemoryDraft, partition: str, status: str, digest: str, vector: np.ndarray | None) -> int:
        now = time.time()
        cursor = self.conn.execute(
            "INSERT INTO memories(repo, kind, scope, statement, rationale, how_to_apply, globs, status, importance, "
            "use_count, pinned, valid_from, created_at, updated_at, topic, content_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?)",
            (partition, draft.kind, draft.scope, draft.statement, draft.rationale, draft.how_to_apply,
             json.dumps(list(draft.globs), ensure_ascii=False), status, draft.importance, now, now, now,
             draft.topic, digest))
        memory_id = cursor.lastrowid
        self._add_citations(memory_id, draft.citations)
        self.conn.execute("INSERT INTO memories_fts(rowid, partition, body) VALUES (?, ?, ?)",
                          (memory_id, _partition_term(partition), search_text.document(_searchable(draft))))
        if vector is not None:
            self.conn.execute(
                "INSERT INTO memory_vectors(memory_id, repo, kind, status, embedding) VALUES (?, ?, ?, ?, ?)",
                (memory_id, partition, draft.kind, status, _blob(vector)))
        return memory_id

    def _reinforce(self, memory_id: int, draft: MemoryDraft, action: str) -> None:
        """The same memory again: its evidence grows, its importance does not drop."""
        self._add_citations(memory_id, draft.citations)
        self.conn.execute("UPDATE memories SET importance = max(importance, ?), updated_at = ? WHERE id = ?",
                          (draft.importance, time.time(), memory_id))
        self._log(memory_id, action, {})

    def _supersede_contradicted(self, memory_id: int, draft: MemoryDraft, partition: str,
                                vector: np.ndarray | None) -> list[int]:
        """Older active memories this one replaces: the same topic, or the same kind, close in
        meaning and of the opposite polarity ("use X" / "never use X")."""
        older: set[int] = set()
        if draft.topic:
            older |= {r[0] for r in self.conn.execute(
                "SELECT id FROM memories WHERE repo = ? AND topic = ? AND status IN ('active', 'stale', 'pending') "
                "AND id != ?", (partition, draft.topic, memory_id))}
        if vector is not None and self._has_vectors():
            close = self.conn.execute(
                "SELECT memory_id, distance FROM memory_vectors WHERE embedding MATCH ? AND k = 8 AND repo = ? "
                "AND kind = ? AND status IN ('active', 'stale')", (_blob(vector), partition, draft.kind)).fetchall()
            statements = self.memories(i for i, d in close if i != memory_id and d < CONTRADICTION)
            older |= {i for i, m in statements.items() if polarity(m.statement) != polarity(draft.statement)}
        for old_id in sorted(older):
            self._supersede(old_id, memory_id)
        return sorted(older)

    def _supersede(self, old_id: int, new_id: int) -> None:
        now = time.time()
        self.conn.execute("UPDATE memories SET status = 'superseded', valid_to = ?, superseded_by = ?, updated_at = ? "
                          "WHERE id = ?", (now, new_id, now, old_id))
        self._set_vector_status(old_id, "superseded")
        self._log(old_id, "status:superseded", {"by": new_id})

    def _nearest(self, vector: np.ndarray, partition: str, kind: str, within: float) -> int | None:
        if not self._has_vectors():
            return None
        row = self.conn.execute(
            "SELECT memory_id, distance FROM memory_vectors WHERE embedding MATCH ? AND k = 1 AND repo = ? "
            "AND kind = ? AND status IN ('active', 'stale', 'pending')", (_blob(vector), partition, kind)).fetchone()
        return row[0] if row is not None and row[1] < within else None

    def _add_citations(self, memory_id: int, citations: Iterable[Citation]) -> None:
        for c in citations:
            self.conn.execute(
                "INSERT INTO provenance(memory_id, source, file, start_line, end_line, commit_sha, lines_hash, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (memory_id, c.source, c.file, c.start_line, c.end_line, c.commit, c.lines_hash, time.time()))

    def _citations(self, ids: list[int]) -> dict[int, tuple[Citation, ...]]:
        marks = ",".join("?" * len(ids))
        out: dict[int, list[Citation]] = {}
        for memory_id, *values in self.conn.execute(
                f"SELECT memory_id, source, file, start_line, end_line, commit_sha, lines_hash FROM provenance "
                f"WHERE memory_id IN ({marks}) ORDER BY id", ids):
            out.setdefault(memory_id, []).append(Citation(*values))
        return {k: tuple(v) for k, v in out.items()}

    def _memory(self, row: tuple, citations: tuple[Citation, ...] | None = None) -> Memory:
        (mid, repo, kind, scope, statement, rationale, how_to_apply, globs, status, importance, use_count, pinned,
         valid_from, valid_to, created_at, topic, superseded_by) = row
        if citations is None:
            citations = self._citations([mid]).get(mid, ())
        return Memory(mid, repo, kind, scope, statement, rationale, how_to_apply, tuple(json.loads(globs)), status,
                      importance, use_count, bool(pinned), valid_from, valid_to, created_at, topic, superseded_by,
                      citations)

    def _log(self, memory_id: int, action: str, detail: dict) -> None:
        self.conn.execute("INSERT INTO events(at, memory_id, action, detail) VALUES (?, ?, ?, ?)",
                          (time.time(), memory_id, action, json.dumps(detail)))

    def _embed_document(self, draft: MemoryDraft) -> np.ndarray | None:
        return self._embed_documents([draft])[0]

    def _embed_documents(self, drafts: list[MemoryDraft]) -> list[np.ndarray | None]:
        embedder = self.embedder
        if embedder is None:
            return [None] * len(drafts)
        return list(embedder.embed_passages([_embedded_text(d) for d in drafts]))

    def _has_vectors(self) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'memory_vectors'").fetchone() is not None

    def _set_vector_status(self, memory_id: int, status: str) -> None:
        if self._has_vectors():
            self.conn.execute("UPDATE memory_vectors SET status = ? WHERE memory_id = ?", (status, memory_id))

    def _prepare_vectors(self, embedder: Embedder) -> None:
        """Creates the vector table for this embedder; another embedder's vectors are rebuilt."""
        model = self.conn.execute("SELECT value FROM meta WHERE key = 'embedder'").fetchone()
        if model is not None and model[0] == embedder.model_id and self._has_vectors():
            return
        rows = self.conn.execute(
            "SELECT id, repo, kind, status, statement, rationale, how_to_apply FROM memories").fetchall()
        with self.transaction():
            self.conn.execute("DROP TABLE IF EXISTS memory_vectors")
            self.conn.execute(
                "CREATE VIRTUAL TABLE memory_vectors USING vec0(memory_id INTEGER PRIMARY KEY, repo TEXT partition key, "
                f"kind TEXT, status TEXT, embedding float[{embedder.dim}] distance_metric=cosine)")
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('embedder', ?)", (embedder.model_id,))
            for start in range(0, len(rows), 256):
                batch = rows[start : start + 256]
                texts = [_embedded_text(MemoryDraft(kind=r[2], statement=r[4], rationale=r[5], how_to_apply=r[6]))
                         for r in batch]
                vectors = embedder.embed_passages(texts)
                self.conn.executemany(
                    "INSERT INTO memory_vectors(memory_id, repo, kind, status, embedding) VALUES (?, ?, ?, ?, ?)",
                    [(r[0], r[1], r[2], r[3], _blob(v)) for r, v in zip(batch, vectors, strict=True)])


def _check_draft(draft: MemoryDraft, status: str) -> None:
    problems = []
    if draft.kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}")
    if draft.scope not in SCOPES:
        problems.append(f"scope must be one of {', '.join(SCOPES)}")
    if status not in STATUSES:
        problems.append(f"status must be one of {', '.join(STATUSES)}")
    if not draft.statement.strip():
        problems.append("the statement is empty")
    if not 0.0 <= draft.importance <= 1.0:
        problems.append("importance must lie between 0 and 1")
    if any(c.source not in SOURCES for c in draft.citations):
        problems.append(f"a citation's source must be one of {', '.join(SOURCES)}")
    if problems:
        raise InvalidMemoryError(detail="; ".join(problems))


def _redacted_draft(draft: MemoryDraft) -> tuple[MemoryDraft, int]:
    """The draft with every secret in its texts replaced; how many spans were."""
    parts = [redact(t) for t in (draft.statement, draft.rationale, draft.how_to_apply)]
    clean = MemoryDraft(
        kind=draft.kind, statement=parts[0].text.strip(), rationale=parts[1].text.strip(),
        how_to_apply=parts[2].text.strip(), globs=tuple(draft.globs), scope=draft.scope,
        importance=draft.importance, citations=draft.citations, topic=draft.topic)
    return clean, sum(len(p.findings) for p in parts)


def _searchable(draft: MemoryDraft) -> str:
    return "\n".join((draft.kind, draft.statement, draft.rationale, draft.how_to_apply, " ".join(draft.globs)))


def _embedded_text(draft: MemoryDraft) -> str:
    return "\n".join(t for t in (draft.statement, draft.rationale) if t)


def _partition_term(partition: str) -> str:
    """A single FTS term naming a partition (repository keys are hex, the user's is `~user`)."""
    return "p" + hashlib.blake2b(partition.encode(), digest_size=8).hexdigest()


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")  # an acknowledged memory survives a crash
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0


def _create_schema(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn)
    conn.execute("BEGIN IMMEDIATE")
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["memories"].create(
        {"id": int, "repo": str, "kind": str, "scope": str, "statement": str, "rationale": str, "how_to_apply": str,
         "globs": str, "status": str, "importance": float, "use_count": int, "last_used": float, "pinned": int,
         "valid_from": float, "valid_to": float, "created_at": float, "updated_at": float, "topic": str,
         "superseded_by": int, "content_hash": str},
        pk="id", not_null={"repo", "kind", "scope", "statement", "status", "content_hash"})
    db["memories"].create_index(["repo", "content_hash"])
    db["memories"].create_index(["repo", "topic"])
    db["memories"].create_index(["repo", "status"])
    db["provenance"].create(
        {"id": int, "memory_id": int, "source": str, "file": str, "start_line": int, "end_line": int,
         "commit_sha": str, "lines_hash": str, "created_at": float},
        pk="id", foreign_keys=[("memory_id", "memories", "id")])
    db["provenance"].create_index(["memory_id"])
    db["events"].create({"id": int, "at": float, "memory_id": int, "action": str, "detail": str}, pk="id")
    db["events"].create_index(["memory_id"])
    # append-only: history is evidence
    conn.execute("CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN "
                 "SELECT RAISE(ABORT, 'the event log is append-only'); END")
    conn.execute("CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN "
                 "SELECT RAISE(ABORT, 'the event log is append-only'); END")
    conn.execute("CREATE VIRTUAL TABLE memories_fts USING fts5(partition, body, content='', contentless_delete=1, "
                 "tokenize='unicode61 remove_diacritics 2')")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")


def move_aside(path: Path) -> Path:
    """Keeps a damaged file (and its WAL) under a new name; returns it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.replace(Path(f"{target}{suffix}"))
    return target
