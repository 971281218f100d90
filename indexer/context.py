"""The repository context a completion at a cursor needs, ranked and cut to a token budget.

In order of how often each one is what the model was missing: the definition of the name just
typed (`foo(` → foo), definitions of other names near the cursor and of imported names, the
enclosing scopes, chunks the user edited recently, and a hybrid search on the lines before the cursor.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from indexer.records import TokenCounter
from indexer.search import search
from indexer.store import ChunkRow, Store

if TYPE_CHECKING:
    from engine.embedder import Embedder

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LAST_IDENTIFIER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[\s(<\[{.,:!?]*$")
LINES_BEFORE = 30
LINES_AFTER = 5
QUERY_LINES = 8
MAX_DEFINITIONS_PER_NAME = 3

# Scores: a definition of the name at the cursor outranks anything else.
_CALL_TARGET = 10.0
_IMPORTED = 0.6
_SCOPE = 0.9
_SEARCH = 0.4
_RECENT = 0.3


@dataclass(frozen=True)
class ContextItem:
    path: str
    start_line: int
    end_line: int
    text: str
    header: str
    reason: str  # definition, import, scope, recent, search
    name: str  # the name it defines (definitions and imports), else ""
    token_count: int
    score: float


def context_for_cursor(
    store: Store, embedder: Embedder | None, path: str, line: int, column: int, budget_tokens: int,
    text: str, legs: tuple[str, ...], count_tokens: TokenCounter,
) -> list[ContextItem]:
    lines = text.split("\n")
    line = min(max(line, 1), max(len(lines), 1))
    before_cursor = lines[line - 1][: max(column, 0)] if lines else ""
    own = store.chunk_at(path, line)
    targets = set(store.import_targets(path))
    folder = posixpath.dirname(path)

    candidates: dict[int, tuple[float, ChunkRow, str, str]] = {}

    def offer(chunk: ChunkRow | None, score: float, reason: str, name: str = "") -> None:
        if chunk is None or (own is not None and chunk.id == own.id):
            return
        best = candidates.get(chunk.id)
        if best is None or score > best[0]:
            candidates[chunk.id] = (score, chunk, reason, name)

    for name, weight in _names_near_cursor(lines, line, before_cursor).items():
        defs = store.definitions(name)[: 4 * MAX_DEFINITIONS_PER_NAME]
        ranked = sorted(defs, key=lambda d: -_place_weight(d.path, path, folder, targets))[:MAX_DEFINITIONS_PER_NAME]
        for d in ranked:
            score = weight * _place_weight(d.path, path, folder, targets) / len(defs) ** 0.5
            offer(store.chunk_at(d.path, d.line), score, "definition", name)

    for module_names in _imported_names(store, path):
        for name in module_names:
            for d in store.definitions(name):
                if d.path in targets:
                    offer(store.chunk_at(d.path, d.line), _IMPORTED, "import", name)

    query = "\n".join([ln for ln in lines[max(0, line - QUERY_LINES) : line - 1] if ln.strip()] + [before_cursor])
    if query.strip():
        for rank, hit in enumerate(search(store, embedder, query, k=8, legs=legs)):
            offer(hit, _SEARCH / (1 + rank), "search")

    for rank, id in enumerate(store.recently_edited_chunks(8)):
        offer(store.chunks([id]).get(id), _RECENT / (1 + rank), "recent")

    items = [ContextItem(c.path, c.start_line, c.end_line, c.text, c.header, reason, name, c.token_count, score)
             for score, c, reason, name in sorted(candidates.values(), key=lambda x: -x[0])]
    if own is not None and own.header:
        tokens = count_tokens([own.header])[0]
        items.append(ContextItem(path, own.start_line, own.start_line, own.header, "", "scope", "", tokens, _SCOPE))
        items.sort(key=lambda item: -item.score)
    return _within_budget(items, budget_tokens)


def _names_near_cursor(lines: list[str], line: int, before_cursor: str) -> dict[str, float]:
    """Identifiers around the cursor, weighted by closeness; the one just typed weighs most."""
    weights: dict[str, float] = {}

    def add(name: str, weight: float) -> None:
        weights[name] = max(weights.get(name, 0.0), weight)

    if m := _LAST_IDENTIFIER.search(before_cursor):
        add(m.group(1), _CALL_TARGET)
    for name in _IDENTIFIER.findall(before_cursor):
        add(name, 1.0)
    for distance in range(1, LINES_BEFORE + 1):
        if line - 1 - distance < 0:
            break
        for name in _IDENTIFIER.findall(lines[line - 1 - distance]):
            add(name, 1.0 / (1 + distance))
    for distance in range(1, LINES_AFTER + 1):
        if line - 1 + distance >= len(lines):
            break
        for name in _IDENTIFIER.findall(lines[line - 1 + distance]):
            add(name, 0.5 / (1 + distance))
    return weights


def _place_weight(def_path: str, path: str, folder: str, import_targets: set[str]) -> float:
    """Where a definition lives: in a file this one imports > the same folder > elsewhere.
    The cursor's own file is mostly in the prompt already."""
    if def_path in import_targets:
        return 3.0
    if def_path == path:
        return 0.3
    if posixpath.dirname(def_path) == folder:
        return 1.5
    return 1.0


def _imported_names(store: Store, path: str) -> list[list[str]]:
    state = store.file_state(path)
    if state is None:
        return []
    return [[n for n in names.split(",") if n and n != "*"] for _, names, _ in store.imports_of(state.id)]


def _within_budget(items: list[ContextItem], budget_tokens: int) -> list[ContextItem]:
    chosen, used = [], 0
    for item in items:
        if used + item.token_count <= budget_tokens:
            chosen.append(item)
            used += item.token_count
    return chosen
