"""Hybrid search: FTS5 BM25, vector KNN and symbol-name matches, fused by reciprocal rank.

Each leg is good where the others are blind: BM25 at exact identifiers, error strings and paths;
vectors at meaning and at Chinese questions about English code; symbol names at "where is X".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING

import pathspec

from engine import search_text
from indexer.store import ChunkRow, Store

if TYPE_CHECKING:
    from engine.embedder import Embedder

LEGS = ("bm25", "vector", "symbol")
RRF_K = 60  # as in Cormack et al. and Tabby: damps the weight of the very top ranks
# Measured on docstring queries (bench/index_bench.py): at equal weights the vector leg's misses
# push BM25's exact hits out of the top 5 (English recall@5 0.79); at half weight, 0.84.
LEG_WEIGHTS = {"bm25": 1.0, "vector": 0.5, "symbol": 1.0}
# Words that can only be code: snake_case, _private, camelCase, PascalCase with two humps.
_CODE_WORD = re.compile(
    r"\b(?:[A-Za-z]+_[A-Za-z0-9_]+|_[A-Za-z0-9_]+|[a-z]+[A-Z][A-Za-z0-9]*|[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*)\b"
)
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9]{2,}\b")


@dataclass(frozen=True)
class SearchFilters:
    paths: tuple[str, ...] = ()  # gitignore-style patterns; a chunk must match one
    languages: tuple[str, ...] = ()

    @cached_property
    def _spec(self) -> pathspec.PathSpec:
        return pathspec.GitIgnoreSpec.from_lines(self.paths)

    def accepts(self, chunk: ChunkRow) -> bool:
        if self.languages and chunk.language not in self.languages:
            return False
        return not self.paths or self._spec.match_file(chunk.path)


@dataclass(frozen=True, slots=True)
class SearchHit(ChunkRow):
    score: float
    legs: tuple[str, ...]  # the legs that found it


def search(
    store: Store, embedder: Embedder | None, query: str, k: int = 10,
    filters: SearchFilters | None = None, legs: tuple[str, ...] = LEGS,
) -> list[SearchHit]:
    depth = max(50, 5 * k) * (4 if filters else 1)
    ranked: dict[str, list[int]] = {}
    if "bm25" in legs and (match := search_text.match_query(query)):
        ranked["bm25"] = [id for id, _ in store.fts_chunks(match, depth)]
    if "vector" in legs and embedder is not None and store.has_vectors():
        ranked["vector"] = [id for id, _ in store.nearest_chunks(embedder.embed_queries([query])[0], depth)]
    if "symbol" in legs:
        ranked["symbol"] = symbol_chunks(store, query)
    rows = store.chunks({id for ids in ranked.values() for id in ids})
    return fuse(ranked, rows, k, filters)


def fuse(ranked: dict[str, list[int]], rows: dict[int, ChunkRow], k: int,
         filters: SearchFilters | None = None) -> list[SearchHit]:
    """Reciprocal-rank fusion of the legs' rankings (ranks counted after filtering)."""
    scores: dict[int, float] = {}
    found: dict[int, list[str]] = {}
    for leg, ids in ranked.items():
        rank = 0
        for id in ids:
            row = rows.get(id)
            if row is None or (filters is not None and not filters.accepts(row)):
                continue
            rank += 1
            scores[id] = scores.get(id, 0.0) + LEG_WEIGHTS[leg] / (RRF_K + rank)
            found.setdefault(id, []).append(leg)
    best = sorted(scores, key=lambda id: -scores[id])[:k]
    return [_hit(rows[id], scores[id], tuple(found[id])) for id in best]


def symbol_chunks(store: Store, query: str) -> list[int]:
    """Chunks defining a name the query spells out. Words that can only be code (`load_config`,
    `fetchJson`) also match in another case; plain words only as exact, capitalised class names
    (`Settings`), so that "return the file" does not pull in every `file` variable."""
    ids: list[int] = []
    words = query.split()
    code_words = set(_CODE_WORD.findall(query)) | ({words[0]} if len(words) == 1 else set())
    for name in dict.fromkeys([*code_words, *_CAPITALISED.findall(query)]):
        exact = store.definitions(name)
        defs = exact or (store.definitions(name, nocase=True) if name in code_words else [])
        for d in defs:
            chunk = store.chunk_at(d.path, d.line)
            if chunk is not None and chunk.id not in ids:
                ids.append(chunk.id)
    return ids


def _hit(row: ChunkRow, score: float, legs: tuple[str, ...]) -> SearchHit:
    return SearchHit(*(getattr(row, f.name) for f in fields(ChunkRow)), score=score, legs=legs)
