"""Chunks of Markdown (heading sections, then paragraphs) and plain text (paragraphs).

A Markdown section runs from its heading to the next heading of the same or a higher level, so it
holds its subsections: a section that fits is one chunk, a bigger one is split into its opening
paragraphs and its subsections, each carrying the heading above it in its header. Paragraphs are
runs of non-blank lines; a fenced code block is one paragraph, blank lines and all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from indexer.chunking import Chunker, Piece, Scope
from indexer.records import Chunk, Symbol, TokenCounter

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r" {0,3}([-+*]|\d+[.)])[ \t]")


@dataclass(slots=True)
class _Heading:
    row: int  # the heading's first row
    last_row: int  # its underline for a setext heading
    level: int
    title: str


def chunk_text(lines: list[str], count_tokens: TokenCounter, max_tokens: int) -> list[Chunk]:
    if not lines:
        return []
    chunker = _ProseChunker(lines, count_tokens, max_tokens)
    chunker.pack(chunker.paragraphs(0, len(lines) - 1), Scope([], 0, "paragraph", ""), 0)
    return chunker.chunks()


def chunk_markdown(
    lines: list[str], count_tokens: TokenCounter, max_tokens: int
) -> tuple[list[Chunk], list[Symbol]]:
    """The chunks (all of kind `section`), and one `heading` definition per heading.

    A heading's scope is the titles above it, dotted: "Guide.Setup".
    """
    if not lines:
        return [], []
    headings = _headings(lines)
    chunker = _ProseChunker(lines, count_tokens, max_tokens)
    chunker.pack(chunker.sections(0, len(lines) - 1, headings), Scope([], 0, "section", ""), 0)
    return chunker.chunks(), _heading_symbols(headings, lines)


class _ProseChunker(Chunker):
    def __init__(self, lines: list[str], count_tokens: TokenCounter, max_tokens: int) -> None:
        super().__init__(lines, count_tokens, max_tokens)
        self._fenced = _fenced_rows(lines)

    def sections(self, start: int, end: int, headings: list[_Heading]) -> list[Piece]:
        """Pieces for start..end: paragraphs before the first heading, then one piece per top-level section."""
        if not headings:
            return self.paragraphs(start, end)
        level = min(h.level for h in headings)
        tops = [i for i, h in enumerate(headings) if h.level == level]
        first = headings[tops[0]]
        pieces = self.sections(start, first.row - 1, headings[: tops[0]]) if first.row > start else []
        for n, i in enumerate(tops):
            heading = headings[i]
            following = tops[n + 1] if n + 1 < len(tops) else len(headings)
            last = headings[following].row - 1 if following < len(headings) else end
            inner = headings[i + 1 : following]
            pieces.append(Piece(heading.row, last, "section", heading.title, data=(heading, inner)))
        return pieces

    def paragraphs(self, start: int, end: int) -> list[Piece]:
        pieces: list[Piece] = []
        row = start
        while row <= end:
            if self.is_blank(row) and row not in self._fenced:
                row += 1
                continue
            first = row
            while row + 1 <= end and (not self.is_blank(row + 1) or row + 1 in self._fenced):
                row += 1
            pieces.append(Piece(first, row))
            row += 1
        return pieces or [Piece(start, end)]

    def split(self, piece: Piece, scope: Scope, depth: int) -> None:
        if piece.data is None:
            super().split(piece, scope, depth)
            return
        heading, inner = piece.data
        title_lines = [line.rstrip() for line in self.lines[heading.row : heading.last_row + 1]]
        title = "\n".join(title_lines)
        tokens = scope.tokens + self.count_tokens([title])[0] + 1
        section = Scope(scope.lines + [title], tokens, "section", heading.title, heading.last_row, scope)
        body_start = heading.last_row + 1
        pieces = [Piece(piece.start, heading.last_row)]  # the heading: merged with what follows it
        if body_start <= piece.end:
            pieces += self.sections(body_start, piece.end, inner)
        self.pack(pieces, section, depth + 1)


def _fenced_rows(lines: list[str]) -> set[int]:
    """Rows inside fenced code blocks, fences included."""
    rows: set[int] = set()
    fence = ""
    for row, line in enumerate(lines):
        if fence:
            rows.add(row)
            closing = line.strip()
            if len(closing) >= len(fence) and set(closing) == {fence[0]}:
                fence = ""
            continue
        match = _FENCE.match(line)
        if match:
            fence = match.group(1)
            rows.add(row)
    return rows


def _headings(lines: list[str]) -> list[_Heading]:
    fenced = _fenced_rows(lines)
    headings: list[_Heading] = []
    for row, line in enumerate(lines):
        if row in fenced:
            continue
        atx = _ATX.match(line)
        if atx:
            headings.append(_Heading(row, row, len(atx.group(1)), (atx.group(2) or "").strip()))
            continue
        setext = _SETEXT.match(line)
        if setext and row > 0 and _is_setext_title(lines, row - 1, fenced, headings):
            headings.append(_Heading(row - 1, row, 1 if setext.group(1)[0] == "=" else 2, lines[row - 1].strip()))
    return headings


def _is_setext_title(lines: list[str], row: int, fenced: set[int], headings: list[_Heading]) -> bool:
    line = lines[row]
    return (
        bool(line.strip())
        and row not in fenced
        and not (headings and headings[-1].last_row == row)
        and not line.startswith(("    ", "\t", ">"))
        and not _LIST_ITEM.match(line)
        and (row == 0 or not lines[row - 1].strip())  # one-line paragraph: a longer one would absorb it
    )


def _heading_symbols(headings: list[_Heading], lines: list[str]) -> list[Symbol]:
    symbols = []
    stack: list[_Heading] = []
    for i, heading in enumerate(headings):
        while stack and stack[-1].level >= heading.level:
            stack.pop()
        following = next((h for h in headings[i + 1 :] if h.level <= heading.level), None)
        last = following.row - 1 if following else len(lines) - 1
        while last > heading.last_row and not lines[last].strip():
            last -= 1
        scope = ".".join(h.title for h in stack)
        symbols.append(Symbol(heading.title, "heading", heading.row + 1, 0, last + 1, scope))
        stack.append(heading)
    return symbols
