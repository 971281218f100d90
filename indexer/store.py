"""The index database: SQLite in WAL mode with FTS5 and sqlite-vec, one file per repository.

Readers keep working while one writer indexes (WAL). A damaged file or one written by another
schema version is moved aside and rebuilt: an index is a cache, never the only copy of anything.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysqlite3.dbapi2 as sqlite3
import sqlite_utils
import sqlite_vec

from engine import search_text
from indexer.records import Chunk, FileAnalysis

SCHEMA_VERSION = 2  # 2: the embedding model's id on every vector
_PER_FILE_TABLES = ("symbols", "refs", "imports", "import_targets")

_FTS_SCHEMA = (
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(names, body, content='', contentless_delete=1, "
    "tokenize='unicode61 remove_diacritics 2')"
)


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class FileState:
    id: int
    hash: str
    mtime_ns: int
    size: int


@dataclass(frozen=True, slots=True)
class ChunkRow:
    id: int
    path: str
    language: str
    start_line: int
    end_line: int
    kind: str
    symbol: str
    header: str
    text: str
    token_count: int


@dataclass(frozen=True, slots=True)
class Definition:
    path: str
    name: str
    kind: str
    line: int
    end_line: int
    scope: str
    signature: str


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path, repo_id: str) -> None:
        self.conn, self.path, self.repo_id = conn, path, repo_id

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, repo_id: str) -> tuple[Store, str | None]:
        """The store at `path`, and why it was rebuilt ("corrupt", "version") or None."""
        path.parent.mkdir(parents=True, exist_ok=True)
        rebuilt = None
        try:
            conn = _connect(path)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and not _has_tables(conn):
                _create_schema(conn, repo_id)
            elif version != SCHEMA_VERSION:
                conn.close()
                rebuilt = "version"
            else:
                conn.execute("SELECT count(*) FROM files").fetchone()
        except sqlite3.DatabaseError:
            rebuilt = "corrupt"
        if rebuilt:
            _remove_database(path)
            conn = _connect(path)
            _create_schema(conn, repo_id)
        return cls(conn, path, repo_id), rebuilt

    def close(self) -> None:
        self.conn.close()

    def reset(self) -> None:
        """Start again from an empty database."""
        self.conn.close()
        _remove_database(self.path)
        self.conn = _connect(self.path)
        _create_schema(self.conn, self.repo_id)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- meta ----------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # --- files ---------------------------------------------------------------------------

    def file_states(self) -> dict[str, FileState]:
        rows = self.conn.execute("SELECT path, id, hash, mtime_ns, size FROM files")
        return {path: FileState(id, h, m, s) for path, id, h, m, s in rows}

    def file_state(self, path: str) -> FileState | None:
        row = self.conn.execute("SELECT id, hash, mtime_ns, size FROM files WHERE path = ?", (path,)).fetchone()
        return FileState(*row) if row else None

    def touch_file(self, file_id: int, mtime_ns: int, size: int) -> None:
        self.conn.execute("UPDATE files SET mtime_ns = ?, size = ? WHERE id = ?", (mtime_ns, size, file_id))

    def write_file(
        self, path: str, file_hash: str, mtime_ns: int, size: int, lines: int,
        analysis: FileAnalysis, *, edited: bool,
    ) -> list[int]:
        """Store one file's analysis; returns the ids of its new chunks (the ones without a vector).
        Chunks whose content is unchanged keep their id, and their vector."""
        now = time.time()
        row = self.conn.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is None:
            file_id = self.conn.execute(
                "INSERT INTO files(path, hash, mtime_ns, size, language, lines, has_errors, indexed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (path, file_hash, mtime_ns, size, analysis.language, lines, analysis.has_errors, now),
            ).lastrowid
        else:
            file_id = row[0]
            self.conn.execute(
                "UPDATE files SET hash = ?, mtime_ns = ?, size = ?, language = ?, lines = ?, has_errors = ?, "
                "indexed_at = ? WHERE id = ?",
                (file_hash, mtime_ns, size, analysis.language, lines, analysis.has_errors, now, file_id),
            )
        new_chunks = self._write_chunks(file_id, path, analysis.chunks, edited_at=now if edited else None)
        self._write_symbols(file_id, analysis)
        return new_chunks

    def _write_chunks(self, file_id: int, path: str, chunks: list[Chunk], edited_at: float | None) -> list[int]:
        old: dict[str, list[int]] = {}
        for id, h in self.conn.execute("SELECT id, hash FROM chunks WHERE file_id = ?", (file_id,)):
            old.setdefault(h, []).append(id)
        new: list[int] = []
        for c in chunks:
            h = content_hash(f"{c.header}\n{c.text}".encode())
            kept = old.get(h)
            if kept:
                self.conn.execute(
                    "UPDATE chunks SET start_line = ?, end_line = ?, kind = ?, symbol = ? WHERE id = ?",
                    (c.start_line, c.end_line, c.kind, c.symbol, kept.pop()),
                )
                continue
            id = self.conn.execute(
                "INSERT INTO chunks(file_id, start_line, end_line, kind, symbol, header, text, hash, token_count, "
                "edited_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (file_id, c.start_line, c.end_line, c.kind, c.symbol, c.header, c.text, h, c.token_count, edited_at),
            ).lastrowid
            self._fts_insert(id, path, c.symbol, c.header, c.text)
            new.append(id)
        self._delete_chunks([id for ids in old.values() for id in ids])
        return new

    def _write_symbols(self, file_id: int, analysis: FileAnalysis) -> None:
        for table in _PER_FILE_TABLES:
            self.conn.execute(f"DELETE FROM {table} WHERE file_id = ?", (file_id,))
        lines = _source_lines(analysis.chunks)
        self.conn.executemany(
            "INSERT INTO symbols(file_id, name, kind, line, column, end_line, scope, signature) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(file_id, s.name, s.kind, s.line, s.column, s.end_line, s.scope, lines.get(s.line, ""))
             for s in analysis.definitions],
        )
        counts: dict[str, int] = {}
        for s in analysis.references:
            counts[s.name] = counts.get(s.name, 0) + 1
        self.conn.executemany(
            "INSERT INTO refs(file_id, name, count) VALUES (?, ?, ?)", [(file_id, n, c) for n, c in counts.items()]
        )
        self.conn.executemany(
            "INSERT INTO imports(file_id, module, names, line) VALUES (?, ?, ?, ?)",
            [(file_id, i.module, ",".join(i.names), i.line) for i in analysis.imports],
        )

    def set_import_targets(self, file_id: int, targets: list[tuple[int, str]]) -> None:
        """`targets`: (line, resolved path) pairs for this file's imports."""
        self.conn.execute("DELETE FROM import_targets WHERE file_id = ?", (file_id,))
        self.conn.executemany(
            "INSERT OR IGNORE INTO import_targets(file_id, line, target) VALUES (?, ?, ?)",
            [(file_id, line, t) for line, t in targets],
        )

    def imports_of(self, file_id: int) -> list[tuple[str, str, int]]:
        return self.conn.execute("SELECT module, names, line FROM imports WHERE file_id = ?", (file_id,)).fetchall()

    def import_targets(self, path: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT t.target FROM import_targets t JOIN files f ON f.id = t.file_id WHERE f.path = ?",
            (path,),
        )]

    def rename_file(self, old_path: str, new_path: str) -> None:
        file_id = self.conn.execute("SELECT id FROM files WHERE path = ?", (old_path,)).fetchone()[0]
        self.conn.execute("UPDATE files SET path = ? WHERE id = ?", (new_path, file_id))
        rows = self.conn.execute("SELECT id, symbol, header, text FROM chunks WHERE file_id = ?", (file_id,))
        for id, symbol, header, text in rows.fetchall():
            self.conn.execute("DELETE FROM chunks_fts WHERE rowid = ?", (id,))
            self._fts_insert(id, new_path, symbol, header, text)

    def delete_file(self, path: str) -> None:
        row = self.conn.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is None:
            return
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE file_id = ?", (row[0],))]
        self._delete_chunks(ids)
        for table in _PER_FILE_TABLES:
            self.conn.execute(f"DELETE FROM {table} WHERE file_id = ?", (row[0],))
        self.conn.execute("DELETE FROM files WHERE id = ?", (row[0],))

    def _delete_chunks(self, ids: list[int]) -> None:
        if not ids:
            return
        params = [(i,) for i in ids]
        self.conn.executemany("DELETE FROM chunks_fts WHERE rowid = ?", params)
        if self.has_vectors():
            self.conn.executemany("DELETE FROM chunk_vectors WHERE chunk_id = ?", params)
        self.conn.executemany("DELETE FROM chunks WHERE id = ?", params)

    def _fts_insert(self, id: int, path: str, symbol: str, header: str, text: str) -> None:
        names = search_text.document(f"{path} {symbol} {header}")
        self.conn.execute(
            "INSERT INTO chunks_fts(rowid, names, body) VALUES (?, ?, ?)", (id, names, search_text.document(text))
        )

    # --- vectors -------------------------------------------------------------------------

    def has_vectors(self) -> bool:
        return self.meta("vector_model") is not None

    def prepare_vectors(self, model_id: str, dim: int) -> bool:
        """Make the vector table hold `model_id`'s vectors; True when old ones were dropped."""
        if self.meta("vector_model") == model_id:
            return False
        dropped = self.has_vectors()
        self.conn.execute("DROP TABLE IF EXISTS chunk_vectors")
        self.conn.execute(
            "CREATE VIRTUAL TABLE chunk_vectors USING vec0(chunk_id INTEGER PRIMARY KEY, "
            f"repo TEXT PARTITION KEY, model TEXT, embedding FLOAT[{int(dim)}] distance_metric=cosine)"
        )
        self.set_meta("vector_model", model_id)
        return dropped

    def chunks_without_vectors(self) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM chunks WHERE id NOT IN (SELECT chunk_id FROM chunk_vectors) ORDER BY id"
        )]

    def put_vectors(self, ids: list[int], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        model = self.meta("vector_model")
        self.conn.executemany(
            "INSERT OR REPLACE INTO chunk_vectors(chunk_id, repo, model, embedding) VALUES (?, ?, ?, ?)",
            [(id, self.repo_id, model, v.tobytes()) for id, v in zip(ids, vectors)],
        )

    def nearest_chunks(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if not self.has_vectors():
            return []
        return self.conn.execute(
            "SELECT chunk_id, distance FROM chunk_vectors WHERE embedding MATCH ? AND k = ? AND repo = ? "
            "ORDER BY distance",
            (np.asarray(vector, dtype=np.float32).tobytes(), k, self.repo_id),
        ).fetchall()

    # --- reading -------------------------------------------------------------------------

    def fts_chunks(self, match: str, k: int) -> list[tuple[int, float]]:
        # bm25 weights: a hit in the path, name or enclosing signatures counts more than one in the body.
        return self.conn.execute(
            "SELECT rowid, bm25(chunks_fts, 4.0, 1.0) AS score FROM chunks_fts WHERE chunks_fts MATCH ? "
            "ORDER BY score LIMIT ?",
            (match, k),
        ).fetchall()

    def chunks(self, ids: Iterable[int]) -> dict[int, ChunkRow]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            "SELECT c.id, f.path, f.language, c.start_line, c.end_line, c.kind, c.symbol, c.header, c.text, "
            f"c.token_count FROM chunks c JOIN files f ON f.id = c.file_id WHERE c.id IN ({marks})",
            ids,
        )
        return {r[0]: ChunkRow(*r) for r in rows}

    def chunk_at(self, path: str, line: int) -> ChunkRow | None:
        row = self.conn.execute(
            "SELECT c.id FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.path = ? AND c.start_line <= ? "
            "AND c.end_line >= ? ORDER BY c.end_line - c.start_line LIMIT 1",
            (path, line, line),
        ).fetchone()
        return self.chunks([row[0]])[row[0]] if row else None

    def recently_edited_chunks(self, limit: int) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM chunks WHERE edited_at IS NOT NULL ORDER BY edited_at DESC LIMIT ?", (limit,)
        )]

    def definitions(self, name: str, *, nocase: bool = False) -> list[Definition]:
        collate = " COLLATE NOCASE" if nocase else ""
        rows = self.conn.execute(
            "SELECT f.path, s.name, s.kind, s.line, s.end_line, s.scope, s.signature FROM symbols s "
            f"JOIN files f ON f.id = s.file_id WHERE s.name = ?{collate}",
            (name,),
        )
        return [Definition(*r) for r in rows]

    def all_definitions(self) -> Iterator[Definition]:
        rows = self.conn.execute(
            "SELECT f.path, s.name, s.kind, s.line, s.end_line, s.scope, s.signature FROM symbols s "
            "JOIN files f ON f.id = s.file_id"
        )
        return (Definition(*r) for r in rows)

    def files_naming(self, name: str) -> list[str]:
        """Paths of the files that define, reference or import `name`."""
        rows = self.conn.execute(
            "SELECT f.path FROM files f WHERE f.id IN (SELECT file_id FROM symbols WHERE name = ?1 "
            "UNION SELECT file_id FROM refs WHERE name = ?1 "
            "UNION SELECT file_id FROM imports WHERE ',' || names || ',' LIKE '%,' || ?1 || ',%') ORDER BY f.path",
            (name,),
        )
        return [path for (path,) in rows]

    def all_references(self) -> Iterator[tuple[str, str, int]]:
        """(path, name, count) for every name each file references."""
        return iter(self.conn.execute("SELECT f.path, r.name, r.count FROM refs r JOIN files f ON f.id = r.file_id"))

    def counts(self) -> dict[str, int]:
        one = lambda sql: self.conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "files": one("SELECT count(*) FROM files"),
            "lines": one("SELECT coalesce(sum(lines), 0) FROM files"),
            "chunks": one("SELECT count(*) FROM chunks"),
            "symbols": one("SELECT count(*) FROM symbols"),
            "vectors": one("SELECT count(*) FROM chunk_vectors") if self.has_vectors() else 0,
        }


def _source_lines(chunks: list[Chunk]) -> dict[int, str]:
    """Line number -> its stripped source line, rebuilt from the chunks (the file text is not kept);
    for the definitions' signatures."""
    return {c.start_line + offset: line.strip()[:200]
            for c in chunks for offset, line in enumerate(c.text.split("\n"))}


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0


def _create_schema(conn: sqlite3.Connection, repo_id: str) -> None:
    db = sqlite_utils.Database(conn)
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["files"].create(
        {"id": int, "path": str, "hash": str, "mtime_ns": int, "size": int, "language": str, "lines": int,
         "has_errors": int, "indexed_at": float},
        pk="id", not_null={"path", "hash", "mtime_ns", "size", "language"},
    )
    db["files"].create_index(["path"], unique=True)
    db["chunks"].create(
        {"id": int, "file_id": int, "start_line": int, "end_line": int, "kind": str, "symbol": str, "header": str,
         "text": str, "hash": str, "token_count": int, "edited_at": float},
        pk="id", foreign_keys=[("file_id", "files", "id")],
    )
    db["chunks"].create_index(["file_id", "start_line"])
    db["chunks"].create_index(["edited_at"])
    for table, columns in (
        ("symbols", {"file_id": int, "name": str, "kind": str, "line": int, "column": int, "end_line": int,
                     "scope": str, "signature": str}),
        ("refs", {"file_id": int, "name": str, "count": int}),
        ("imports", {"file_id": int, "module": str, "names": str, "line": int}),
        ("import_targets", {"file_id": int, "line": int, "target": str}),
    ):
        db[table].create(columns, foreign_keys=[("file_id", "files", "id")])
        db[table].create_index(["file_id"])
    db["symbols"].create_index(["name"])
    db["refs"].create_index(["name"])
    db["import_targets"].create_index(["file_id", "line", "target"], unique=True)
    conn.execute(_FTS_SCHEMA)
    conn.execute("INSERT INTO meta(key, value) VALUES ('repo_id', ?)", (repo_id,))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
