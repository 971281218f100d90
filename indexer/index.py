"""A repository's index: keeps the database in step with the files, and answers queries.

Incremental by content hash: a file whose size and mtime are unchanged is not read; one whose
bytes are unchanged is not parsed; a chunk whose text is unchanged keeps its vector. Renames are
recognised by content and cost no parsing or embedding.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from indexer.errors import IndexLockedError, IndexUnwritableError, NotADirectoryToIndexError
from indexer.imports import resolve_import
from indexer.parsing import analyze_file
from indexer.records import FileAnalysis, Import, TokenCounter
from indexer.store import Definition, Store, content_hash
from indexer.walker import Candidate, Walker, skip_reason

if TYPE_CHECKING:
    from engine.embedder import Embedder
    from indexer.context import ContextItem
    from indexer.search import SearchFilters, SearchHit

# (phase, done, total): phase is "scan", "parse" or "embed"; total is None while unknown.
Progress = Callable[[str, int, int | None], None]

MAX_CHUNK_TOKENS = 512
_FILES_PER_TRANSACTION = 64
_EMBED_BATCH = 64


@dataclass
class IndexStats:
    files: int = 0
    lines: int = 0
    chunks: int = 0
    symbols: int = 0
    vectors: int = 0
    parsed: int = 0  # files (re)parsed by this run
    renamed: int = 0
    removed: int = 0
    embedded: int = 0  # chunks embedded by this run
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rebuilt: str | None = None  # why the database was rebuilt: "corrupt", "version", "model"


def default_db_path(root: Path) -> Path:
    root = root.resolve()
    digest = hashlib.blake2b(str(root).encode(), digest_size=6).hexdigest()
    return Path(platformdirs.user_cache_dir("zhiyin")) / f"{root.name}-{digest}" / "index.db"


def default_token_counter() -> TokenCounter:
    from engine.checkpoints import load_tokenizer
    from engine.errors import DefaultModelMissingError
    from engine.model_files import default_model_path

    path = default_model_path()
    if path is None:
        raise DefaultModelMissingError()
    return load_tokenizer(path).count_tokens


def default_embedder() -> Embedder:
    from engine.embedder import load_embedder

    return load_embedder()


class Index:
    def __init__(
        self, root: Path, store: Store, count_tokens: TokenCounter, embedder_factory: Callable[[], Embedder] | None,
        *, max_chunk_tokens: int = MAX_CHUNK_TOKENS, rebuilt: str | None = None,
    ) -> None:
        self.root, self.store, self.count_tokens = root, store, count_tokens
        self.max_chunk_tokens = max_chunk_tokens
        self.rebuilt = rebuilt
        self._embedder_factory = embedder_factory
        self._embedder: Embedder | None = None
        self._known_paths: set[str] | None = None

    @classmethod
    def open(
        cls, root: str | Path, *, db_path: Path | None = None, count_tokens: TokenCounter | None = None,
        embedder: Callable[[], Embedder] | None = default_embedder, max_chunk_tokens: int = MAX_CHUNK_TOKENS,
    ) -> Index:
        """The index of the repository at `root`. `embedder`: a factory, called on first need; None: no vectors."""
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise NotADirectoryToIndexError(path=str(root))
        db_path = db_path or default_db_path(root)
        repo_id = hashlib.blake2b(str(root).encode(), digest_size=8).hexdigest()
        try:
            store, rebuilt = Store.open(db_path, repo_id)
        except OSError as e:
            raise IndexUnwritableError(path=str(db_path), detail=e.strerror or str(e)) from None
        index = cls(root, store, count_tokens or default_token_counter(), embedder,
                    max_chunk_tokens=max_chunk_tokens, rebuilt=rebuilt)
        chunker = str(max_chunk_tokens)
        if store.meta("chunker") not in (None, chunker):
            store.reset()  # every chunk changes with the limit
            index.rebuilt = "settings"
        store.set_meta("chunker", chunker)
        return index

    def close(self) -> None:
        self.store.close()

    @property
    def embedder(self) -> Embedder | None:
        if self._embedder is None and self._embedder_factory is not None:
            self._embedder = self._embedder_factory()
        return self._embedder

    # --- writing -------------------------------------------------------------------------

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """One writer per index across processes; readers are never blocked (WAL)."""
        lock_path = Path(f"{self.store.path}.lock")
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexLockedError(path=str(self.store.path)) from None
            yield

    def update(self, progress: Progress | None = None) -> IndexStats:
        """Bring the whole index up to date with the files on disk."""
        start = time.perf_counter()
        stats = IndexStats(rebuilt=self.rebuilt)
        with self._writer():
            walker = Walker(self.root)
            known = self.store.file_states()
            changed: list[Candidate] = []
            seen: set[str] = set()
            for n, cand in enumerate(walker.walk(), 1):
                seen.add(cand.path)
                state = known.get(cand.path)
                if state is None or (state.mtime_ns, state.size) != (cand.mtime_ns, cand.size):
                    changed.append(cand)
                if progress and n % 500 == 0:
                    progress("scan", n, None)
            vanished = {known[p].hash: p for p in known.keys() - seen}
            for i in range(0, len(changed), _FILES_PER_TRANSACTION):
                with self.store.transaction():
                    for cand in changed[i : i + _FILES_PER_TRANSACTION]:
                        self._index_file(cand, known.get(cand.path), vanished, stats)
                if progress:
                    progress("parse", min(i + _FILES_PER_TRANSACTION, len(changed)), len(changed))
            with self.store.transaction():
                for path in vanished.values():
                    self.store.delete_file(path)
                    stats.removed += 1
                if stats.parsed or stats.renamed or stats.removed:
                    self._resolve_imports()
            stats.embedded = self._embed(None, progress, stats)
        self._finish(stats, start, walker.skipped)
        return stats

    def update_file(self, path: str | Path) -> IndexStats:
        """Re-index one file (after a save), or drop it when it is gone or now ignored."""
        start = time.perf_counter()
        stats = IndexStats()
        rel = self.relative_path(path)
        new_chunks: list[int] = []
        with self._writer():
            walker = Walker(self.root)
            cand = walker.candidate(rel)
            with self.store.transaction():
                if cand is None:
                    if self.store.file_state(rel) is not None:
                        self.store.delete_file(rel)
                        stats.removed = 1
                        self._known_paths = None
                else:
                    new_chunks = self._index_file(cand, self.store.file_state(rel), {}, stats)
                    if stats.parsed:
                        self._resolve_imports([rel])
            stats.embedded = self._embed(new_chunks, None, stats)
        self._finish(stats, start, walker.skipped)
        return stats

    def _finish(self, stats: IndexStats, start: float, walker_skipped: dict[str, int]) -> None:
        for reason, n in walker_skipped.items():
            stats.skipped[reason] = stats.skipped.get(reason, 0) + n
        counts = self.store.counts()
        stats.files, stats.lines, stats.chunks = counts["files"], counts["lines"], counts["chunks"]
        stats.symbols, stats.vectors = counts["symbols"], counts["vectors"]
        stats.seconds = time.perf_counter() - start

    def relative_path(self, path: str | Path) -> str:
        p = Path(path)
        if p.is_absolute():
            p = p.resolve().relative_to(self.root) if p.resolve().is_relative_to(self.root) else p
        return p.as_posix()

    def _index_file(self, cand: Candidate, state, vanished: dict[str, str], stats: IndexStats) -> list[int]:
        """Bring one file's rows up to date; the ids of the chunks it added (they need vectors)."""
        try:
            data = cand.abs_path.read_bytes()
        except OSError:  # deleted or unreadable since the walk
            if state is not None:
                self.store.delete_file(cand.path)
                stats.removed += 1
            return []
        reason = skip_reason(data, cand.path)
        if reason is not None:
            stats.skipped[reason] = stats.skipped.get(reason, 0) + 1
            if state is not None:
                self.store.delete_file(cand.path)
            return []
        file_hash = content_hash(data)
        if state is not None and state.hash == file_hash:
            self.store.touch_file(state.id, cand.mtime_ns, cand.size)
            return []
        if state is None and file_hash in vanished:
            self.store.rename_file(vanished.pop(file_hash), cand.path)
            self.store.touch_file(self.store.file_state(cand.path).id, cand.mtime_ns, cand.size)
            stats.renamed += 1
            return []
        text = data.decode("utf-8", errors="replace")
        analysis: FileAnalysis = analyze_file(cand.path, text, self.count_tokens, self.max_chunk_tokens)
        lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        stats.parsed += 1
        return self.store.write_file(
            cand.path, file_hash, cand.mtime_ns, cand.size, lines, analysis, edited=state is not None
        )

    def _resolve_imports(self, paths: list[str] | None = None) -> None:
        """Point imports at files: of every file, or of `paths` only (the repository's file set
        is cached between one-file updates: a save rarely adds or removes a file)."""
        if paths is None or self._known_paths is None:
            self._known_paths = {r[0] for r in self.store.conn.execute("SELECT path FROM files")}
        known = self._known_paths
        known.update(paths or ())
        if paths is None:
            files = self.store.conn.execute("SELECT id, path, language FROM files").fetchall()
        else:
            marks = ",".join("?" * len(paths))
            files = self.store.conn.execute(
                f"SELECT id, path, language FROM files WHERE path IN ({marks})", paths
            ).fetchall()
        for file_id, path, language in files:
            targets = []
            for module, names, line in self.store.imports_of(file_id):
                imp = Import(module, tuple(n for n in names.split(",") if n), line)
                targets.extend((line, t) for t in resolve_import(imp, path, language, known) if t != path)
            self.store.set_import_targets(file_id, targets)

    def _embed(self, ids: list[int] | None, progress: Progress | None, stats: IndexStats) -> int:
        """Embed the chunks `ids`, or every chunk without a vector (also those an interrupted
        run left behind) when None."""
        embedder = self.embedder
        if embedder is None:
            return 0
        with self.store.transaction():
            if self.store.prepare_vectors(embedder.model_id, embedder.dim):
                stats.rebuilt = stats.rebuilt or "model"
                ids = None
        missing = self.store.chunks_without_vectors() if ids is None else ids
        for i in range(0, len(missing), _EMBED_BATCH):
            ids = missing[i : i + _EMBED_BATCH]
            rows = self.store.chunks(ids)
            vectors = embedder.embed_passages([passage_text(rows[id]) for id in ids])
            with self.store.transaction():
                self.store.put_vectors(ids, vectors)
            if progress:
                progress("embed", i + len(ids), len(missing))
        return len(missing)

    # --- reading -------------------------------------------------------------------------

    def search(
        self, query: str, k: int = 10, filters: SearchFilters | None = None, legs: tuple[str, ...] | None = None,
    ) -> list[SearchHit]:
        from indexer.search import LEGS, search

        return search(self.store, self.embedder, query, k, filters, legs or LEGS)

    def definitions(self, name: str) -> list[Definition]:
        """Where `name` is defined (exact case first, else any case)."""
        return self.store.definitions(name) or self.store.definitions(name, nocase=True)

    def files_naming(self, name: str) -> list[str]:
        """The files that define, reference or import the identifier `name`."""
        return self.store.files_naming(name)

    def context_for_cursor(
        self, path: str | Path, line: int, column: int, budget_tokens: int, text: str | None = None,
        legs: tuple[str, ...] | None = None,
    ) -> list[ContextItem]:
        from indexer.context import context_for_cursor
        from indexer.search import LEGS

        rel = self.relative_path(path)
        if text is None:
            text = (self.root / rel).read_text(encoding="utf-8", errors="replace")
        return context_for_cursor(
            self.store, self.embedder, rel, line, column, budget_tokens, text, legs or LEGS, self.count_tokens
        )

    def repo_map(self, budget_tokens: int, focus: tuple[str, ...] = (), mentioned: tuple[str, ...] = ()) -> str:
        from indexer.repo_map import render_repo_map

        return render_repo_map(self.store, budget_tokens, self.count_tokens, focus, mentioned)


def passage_text(chunk) -> str:
    """What the embedder reads of a chunk: where it is, its scope and its opening lines."""
    parts = [chunk.path, chunk.header, chunk.text] if chunk.header else [chunk.path, chunk.text]
    return "\n".join(parts)
