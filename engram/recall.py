"""Recall: the memories that matter for a request, within a token budget.

Three legs, fused by reciprocal rank: nearest vectors in the repository's partition and the
user's (a Chinese question finds an English memory: the embedder is multilingual), FTS5 on
split identifiers and Chinese bigrams, and path globs (a memory that applies to `src/api/**`
comes up for any file there). Then importance, recency and pins weigh in; a memory whose cited
lines changed since is marked stale, ranked down and returned with that flag, so the caller can
say so. Completion asks with a small budget and no model call; chat and review with more.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from engram.records import USER_PARTITION, Memory, Recalled
from engram.store import MemoryStore, lines_hash

LEGS = ("vector", "fts", "glob")
RRF_K = 10  # few candidates: rank differences must still count against importance and recency
LEG_WEIGHTS = {"vector": 1.0, "fts": 1.0, "glob": 0.6}
MAX_VECTOR_DISTANCE = 0.85  # cosine; farther is unrelated for the multilingual embedders here
CANDIDATES = 30  # per leg
STALE_FACTOR = 0.5
PINNED_FACTOR = 1.5
RECENCY_HALF_LIFE_DAYS = 180.0


@dataclass(frozen=True)
class Budget:
    max_items: int
    max_tokens: int


BUDGETS = {
    "completion": Budget(3, 150),
    "chat": Budget(8, 800),
    "review": Budget(10, 1000),
}


def recall(store: MemoryStore, query: str, repo: str, *, path: str | None = None, purpose: str = "chat",
           root: Path | None = None, count_tokens: Callable[[str], int] | None = None,
           legs: tuple[str, ...] = LEGS) -> list[Recalled]:
    """The memories of `repo` (and the user's) for `query` at the file `path`, best first, cut to
    the purpose's budget. With `root`, citations are re-checked against the files there: newly
    stale memories are marked so. The memories returned count as used."""
    budget = BUDGETS[purpose]
    results = rank(store, query, repo, path=path, root=root, legs=legs)
    for result in results:
        if result.stale and result.memory.status == "active":
            store.set_status(result.memory.id, "stale", "cited lines changed")
    count = count_tokens or (lambda text: len(text) // 3 + 1)
    chosen, used = [], 0
    for result in results:
        cost = count(result.memory.statement) + 8
        if len(chosen) == budget.max_items or used + cost > budget.max_tokens:
            break
        chosen.append(result)
        used += cost
    store.mark_used([r.memory.id for r in chosen])
    return chosen


def rank(store: MemoryStore, query: str, repo: str, *, path: str | None = None, root: Path | None = None,
         legs: tuple[str, ...] = LEGS) -> list[Recalled]:
    """Every candidate the legs find, best first; reads only (no budget, no status change)."""
    partitions = [repo, USER_PARTITION]
    ranked: dict[str, list[int]] = {}
    if "vector" in legs and (vector := store.embed_query(query)) is not None:
        ranked["vector"] = [i for i, d in store.vector_search(vector, partitions, CANDIDATES)
                            if d <= MAX_VECTOR_DISTANCE]
    if "fts" in legs:
        ranked["fts"] = [i for i, _s in store.fts_search(query, partitions, CANDIDATES)]
    if "glob" in legs and path:
        ranked["glob"] = _glob_matches(store, partitions, path)

    fused: dict[int, float] = {}
    found_by: dict[int, list[str]] = {}
    for leg, ids in ranked.items():
        for position, memory_id in enumerate(ids):
            fused[memory_id] = fused.get(memory_id, 0.0) + LEG_WEIGHTS[leg] / (RRF_K + position + 1)
            found_by.setdefault(memory_id, []).append(leg)
    memories = store.memories(fused)
    now = time.time()
    results = []
    for memory_id, score in fused.items():
        memory = memories[memory_id]
        stale = memory.status == "stale" or (root is not None and _citation_changed(memory, root))
        results.append(Recalled(memory, score * _weight(memory, stale, now), stale, tuple(found_by[memory_id])))
    results.sort(key=lambda r: -r.score)
    return results


def _weight(memory: Memory, stale: bool, now: float) -> float:
    age_days = max(0.0, now - memory.valid_from) / 86400
    recency = 0.8 + 0.2 * math.exp(-age_days * math.log(2) / RECENCY_HALF_LIFE_DAYS)
    weight = (0.85 + 0.3 * memory.importance) * recency  # relevance leads; these break near ties
    if stale:
        weight *= STALE_FACTOR
    if memory.pinned:
        weight *= PINNED_FACTOR
    return weight


@functools.lru_cache(maxsize=4096)
def _spec(glob: str) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines([glob])


def _glob_matches(store: MemoryStore, partitions: list[str], path: str) -> list[int]:
    """Memories whose globs match `path`, the most specific (longest glob) first."""
    matches = []
    for memory_id, globs in store.with_globs(partitions):
        hit = [g for g in globs if _spec(g).match_file(path)]
        if hit:
            matches.append((max(len(g) for g in hit), memory_id))
    return [memory_id for _length, memory_id in sorted(matches, reverse=True)][:CANDIDATES]


def _citation_changed(memory: Memory, root: Path) -> bool:
    """Whether any cited block of lines now reads differently or is gone. A block that only moved
    (lines inserted or deleted above it) is found again and is not a change."""
    for citation in memory.citations:
        if not (citation.file and citation.start_line and citation.lines_hash):
            continue
        try:
            lines = (root / citation.file).read_text(encoding="utf-8", errors="replace").split("\n")
        except OSError:
            return True
        size = (citation.end_line or citation.start_line) - citation.start_line + 1
        start = citation.start_line - 1
        if lines_hash(lines[start : start + size]) == citation.lines_hash:
            continue
        if not any(lines_hash(lines[i : i + size]) == citation.lines_hash for i in range(len(lines) - size + 1)):
            return True
    return False
