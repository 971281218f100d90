"""LSP positions (0-based line, column in the negotiated encoding's code units; UTF-16 unless the
client offered another) to the app core's cursor (1-based line, column in code points)."""

from __future__ import annotations

from lsprotocol import types

# code units of one code point, per position encoding
_UNITS = {
    types.PositionEncodingKind.Utf8: lambda c: len(c.encode("utf-8")),
    types.PositionEncodingKind.Utf16: lambda c: 2 if ord(c) > 0xFFFF else 1,
    types.PositionEncodingKind.Utf32: lambda c: 1,
}


def cursor_from_position(text: str, position: types.Position, encoding: str) -> tuple[int, int] | None:
    """(1-based line, 0-based code point column) of `position` in `text`; None when it lies outside
    the document or inside a character (e.g. between the two halves of a UTF-16 surrogate pair)."""
    lines = text.split("\n")  # what the app core counts; a CRLF line keeps its "\r" at the end
    if not 0 <= position.line < len(lines) or position.character < 0:
        return None
    line = lines[position.line].removesuffix("\r")
    if line.isascii():  # one unit per character in every encoding: no walk over a long line
        return (position.line + 1, position.character) if position.character <= len(line) else None
    units_of = _UNITS.get(encoding, _UNITS[types.PositionEncodingKind.Utf16])
    units = 0
    for column, char in enumerate(line):
        if units == position.character:
            return position.line + 1, column
        units += units_of(char)
        if units > position.character:
            return None
    return (position.line + 1, len(line)) if units == position.character else None


def position_at(text: str, offset: int, encoding: str) -> types.Position:
    """The LSP position of the code point offset `offset` in `text`."""
    line_start = text.rfind("\n", 0, offset) + 1
    units_of = _UNITS.get(encoding, _UNITS[types.PositionEncodingKind.Utf16])
    return types.Position(line=text.count("\n", 0, offset),
                          character=sum(units_of(c) for c in text[line_start:offset]))
