"""Cutting a file's lines into chunks under a token limit: the part shared by code and prose.

A chunker turns a level of the file (top-level statements, a class body, a section) into pieces —
line ranges that must not be cut, such as one definition — and packs them: a piece too big for the
budget is split (by its syntax, by lines, as a last resort by characters), a definition big enough to
stand alone becomes its own chunk, and the small pieces between are merged up to the budget.

Token counts of candidate ranges are estimated from per-line counts (one batched call per file);
the final chunk texts are counted exactly in one more call, and the rare chunk the estimate let
over the limit is split again. Every chunk's text is at most ``max_tokens``. The header's tokens
come off the budget (down to half of it), so that header and text together fit too, give or take
the estimate's error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from indexer.records import Chunk, TokenCounter
from indexer.tags import SCOPE_KINDS

MIN_TOKENS_DIVISOR = 4  # a definition under max_tokens / 4 merges with its neighbours
LONG_LINE_CHARS = 2_000  # longer lines are not counted up front: their UTF-8 size bounds their tokens
SEPARATORS = (";", "}", ",", " ", "\t")  # where a character split prefers to cut a long line
LABEL_KINDS = SCOPE_KINDS | {"section"}  # kinds that name the chunk holding them


@dataclass(slots=True)
class Scope:
    """A nesting level: the header lines of the enclosing definitions and the default label."""

    lines: list[str]
    tokens: int
    kind: str  # label of a chunk that holds no definition of its own
    symbol: str
    signature_end: int = -1  # last row of this level's own signature; chunks starting there use `outer`
    outer: Scope | None = None

    def header_for(self, start: int) -> str:
        scope = self
        while scope.outer is not None and start <= scope.signature_end:
            scope = scope.outer
        return "\n".join(scope.lines)


@dataclass(slots=True)
class Piece:
    start: int  # 0-based rows, inclusive
    end: int
    kind: str = ""  # set when the piece is one definition (or section)
    symbol: str = ""
    nodes: list[Any] = field(default_factory=list)  # what the chunker needs to split it further
    data: Any = None


@dataclass(slots=True)
class _Raw:
    start: int
    end: int
    text: str
    scope: Scope
    kind: str
    symbol: str
    is_standalone: bool = False  # one definition big enough to be its own chunk
    tokens: int | None = None  # exact count, where already known


class Chunker:
    """Packs pieces into chunks; subclasses say how a piece too big for its budget is split."""

    def __init__(self, lines: list[str], count_tokens: TokenCounter, max_tokens: int) -> None:
        assert max_tokens >= 8, "a chunk must hold a few tokens"
        self.lines = lines
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.min_tokens = max(1, max_tokens // MIN_TOKENS_DIVISOR)
        self._prefix = _token_prefix_sums(lines, count_tokens)
        self._raw: list[_Raw] = []

    # ---- sizes

    def estimate(self, start: int, end: int) -> int:
        """Tokens of rows start..end: their lines' counts plus half a token per newline.

        Measured on the standard library, a newline adds 0.05 tokens at the median, 0.6 at the 90th
        percentile and never more than 1 (it merges with the next line's indentation).
        """
        return self._prefix[end + 1] - self._prefix[start] + (end - start) // 2

    def budget(self, scope: Scope) -> int:
        return max(self.max_tokens - scope.tokens, self.max_tokens // 2)

    def is_blank(self, row: int) -> bool:
        return not self.lines[row].strip()

    # ---- packing

    def pack(self, pieces: list[Piece], scope: Scope, depth: int) -> None:
        budget = self.budget(scope)
        group: list[Piece] = []
        for piece in pieces:
            size = self.estimate(piece.start, piece.end)
            if size > budget:
                # A small run just before a long statement goes with its first chunk: `for ...:` with its
                # body. Not before a definition or section, which opens a unit of its own.
                if group and not piece.kind and self.estimate(group[0].start, group[-1].end) < self.min_tokens:
                    piece.start = group[0].start
                else:
                    self._flush(group, scope)
                group = []
                self.split(piece, scope, depth)
                continue
            if piece.kind and size >= self.min_tokens:
                self._flush(group, scope)
                group = []
                self.emit(piece.start, piece.end, scope, piece.kind, piece.symbol, is_standalone=True)
                continue
            if group and self.estimate(group[0].start, piece.end) > budget:
                self._flush(group, scope)
                group = []
            group.append(piece)
        self._flush(group, scope)

    def split(self, piece: Piece, scope: Scope, depth: int) -> None:
        """Splits a piece over the budget; the default cuts it by lines."""
        kind, symbol = self.label([piece], scope)
        self.split_lines(piece.start, piece.end, scope, kind, symbol, self.budget(scope))

    def label(self, group: list[Piece], scope: Scope) -> tuple[str, str]:
        if group[0].start <= scope.signature_end:  # the chunk opens the definition being split
            return scope.kind, scope.symbol
        named = [p for p in group if p.kind in LABEL_KINDS]
        if len(named) == 1:
            return named[0].kind, named[0].symbol
        if not named and len(group) == 1 and group[0].kind:
            return group[0].kind, group[0].symbol
        return scope.kind, scope.symbol

    def _flush(self, group: list[Piece], scope: Scope) -> None:
        if group:
            self.emit(group[0].start, group[-1].end, scope, *self.label(group, scope))

    def emit(self, start: int, end: int, scope: Scope, kind: str, symbol: str, is_standalone: bool = False) -> None:
        while start <= end and self.is_blank(start):
            start += 1
        while end >= start and self.is_blank(end):
            end -= 1
        if start <= end:
            text = "\n".join(self.lines[start : end + 1])
            self._raw.append(_Raw(start, end, text, scope, kind, symbol, is_standalone))

    # ---- last resorts

    def split_lines(self, start: int, end: int, scope: Scope, kind: str, symbol: str, budget: int) -> None:
        """Greedy runs of whole lines under the budget, cut at a blank line when one is late enough."""
        row = start
        while row <= end:
            if self.is_blank(row):
                row += 1
                continue
            if self.estimate(row, row) > budget:
                self.split_chars(row, scope, kind, symbol, budget)
                row += 1
                continue
            last = row
            last_blank = -1
            while last < end and self.estimate(row, last + 1) <= budget:
                last += 1
                if self.is_blank(last):
                    last_blank = last
            if last < end and last_blank > row and self.estimate(row, last_blank) >= budget // 2:
                last = last_blank
            self.emit(row, last, scope, kind, symbol)
            row = last + 1

    def split_chars(self, row: int, scope: Scope, kind: str, symbol: str, budget: int) -> None:
        """One line over the budget (minified code): windows sized from a sample, halved until they fit."""
        line = self.lines[row]
        sample = line[: budget * 8]
        chars_per_token = len(sample) / max(1, self.count_tokens([sample])[0])
        width = max(1, int(budget * chars_per_token * 0.9))
        done: list[tuple[int, int, int]] = []
        todo = self._cut(line, 0, len(line), width)
        while todo:
            counts = self.count_tokens([line[a:b] for a, b in todo])
            retry: list[tuple[int, int]] = []
            for (a, b), count in zip(todo, counts):
                if count <= budget or b - a <= 1:
                    done.append((a, b, count))
                else:
                    retry.extend(self._halve(line, a, b))
            todo = retry
        for a, b, count in sorted(done):
            if line[a:b].strip():
                self._raw.append(_Raw(row, row, line[a:b], scope, kind, symbol, tokens=count))

    @staticmethod
    def _halve(line: str, start: int, end: int) -> list[tuple[int, int]]:
        """Two spans, cut after a separator in the quarter before the middle when there is one."""
        middle = (start + end) // 2
        best = max(line.rfind(sep, start + (end - start) // 4, middle) for sep in SEPARATORS)
        cut = best + 1 if best >= start else middle
        return [(start, cut), (cut, end)]

    @staticmethod
    def _cut(line: str, start: int, end: int, width: int) -> list[tuple[int, int]]:
        spans = []
        while start < end:
            stop = min(start + width, end)
            if stop < end:
                floor = stop - max(1, width // 4)
                best = max(line.rfind(sep, floor, stop) for sep in SEPARATORS)
                if best > start:
                    stop = best + 1
            spans.append((start, stop))
            start = stop
        return spans

    # ---- results

    def chunks(self) -> list[Chunk]:
        """The chunks emitted so far, counted exactly; any the estimate let over the limit is split again."""
        raw = self._merge_fragments(self._raw)
        counts = self._count(raw)
        while any(count > self.max_tokens for count in counts):
            fitted: list[_Raw] = []
            for r, count in zip(raw, counts):
                if count <= self.max_tokens:
                    fitted.append(r)
                    continue
                self._raw = []
                budget = max(1, self.estimate(r.start, r.end) * self.max_tokens // count * 9 // 10)
                self.split_lines(r.start, r.end, r.scope, r.kind, r.symbol, min(budget, self.max_tokens))
                fitted.extend(self._raw)
            raw = fitted
            counts = self._count(raw)
        self._raw = []
        return [
            Chunk(r.start + 1, r.end + 1, r.text, r.scope.header_for(r.start), r.kind, r.symbol, count)
            for r, count in zip(raw, counts)
        ]

    def _count(self, raw: list[_Raw]) -> list[int]:
        """Exact counts of the chunks, counting in one call those not counted yet."""
        texts = [r.text for r in raw if r.tokens is None]
        fresh = iter(self.count_tokens(texts) if texts else [])
        counts = []
        for r in raw:
            if r.tokens is None:
                r.tokens = next(fresh)
            counts.append(r.tokens)
        return counts

    def _merge_fragments(self, raw: list[_Raw]) -> list[_Raw]:
        """Joins small chunks of one level to a neighbour: a lone `while 1:`, a loop's tail, a main guard.

        Two small non-definition chunks merge; a tiny one (under a quarter of the small size) also
        merges into a definition beside it. Only whole lines of the same level, within its budget.
        """
        tiny = self.min_tokens // 4
        merged: list[_Raw] = []
        for r in raw:
            previous = merged[-1] if merged else None
            if previous is None or previous.scope is not r.scope:
                merged.append(r)
                continue
            sizes = (self.estimate(previous.start, previous.end), self.estimate(r.start, r.end))
            if previous.is_standalone and r.is_standalone:
                fits = False
            elif previous.is_standalone or r.is_standalone:
                fits = (sizes[1] if previous.is_standalone else sizes[0]) < tiny
            else:
                fits = min(sizes) < self.min_tokens
            if not (
                fits
                and self._is_whole_lines(previous)
                and self._is_whole_lines(r)
                and self.estimate(previous.start, r.end) <= self.budget(r.scope)
            ):
                merged.append(r)
                continue
            if previous.start <= r.scope.signature_end:
                kind, symbol = r.scope.kind, r.scope.symbol
            elif (previous.kind, previous.symbol) == (r.kind, r.symbol) or previous.is_standalone:
                kind, symbol = previous.kind, previous.symbol
            elif r.is_standalone:
                kind, symbol = r.kind, r.symbol
            else:
                kind, symbol = r.scope.kind, r.scope.symbol
            text = "\n".join(self.lines[previous.start : r.end + 1])
            is_standalone = previous.is_standalone or r.is_standalone
            merged[-1] = _Raw(previous.start, r.end, text, r.scope, kind, symbol, is_standalone)
        return merged

    def _is_whole_lines(self, r: _Raw) -> bool:
        return r.start != r.end or r.text == self.lines[r.start]


def chunk_lines(lines: list[str], count_tokens: TokenCounter, max_tokens: int, kind: str) -> list[Chunk]:
    """Chunks of runs of whole lines, lines too long cut by characters: for text without structure."""
    chunker = Chunker(lines, count_tokens, max_tokens)
    scope = Scope([], 0, kind, "")
    chunker.split_lines(0, len(lines) - 1, scope, kind, "", chunker.budget(scope))
    return chunker.chunks()


def _token_prefix_sums(lines: list[str], count_tokens: TokenCounter) -> list[int]:
    """prefix[i] = tokens of lines[:i], each distinct short line counted once."""
    distinct = list({line for line in lines if line and len(line) <= LONG_LINE_CHARS})
    counted = dict(zip(distinct, count_tokens(distinct))) if distinct else {}
    prefix = [0]
    total = 0
    for line in lines:
        tokens = counted.get(line)
        if tokens is None:  # empty, or long: every token holds at least one byte
            tokens = len(line.encode("utf-8", "surrogatepass"))
        total += tokens
        prefix.append(total)
    return prefix
