"""What parsing a file yields: chunks, symbols and imports. Lines are 1-based and inclusive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Counts the tokens of many texts at once (the engine tokenizer's ``count_tokens``).
TokenCounter = Callable[[list[str]], list[int]]


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    kind: str  # function, method, class, interface, struct, enum, type, variable, constant, field, module, macro, heading
    line: int
    column: int  # 0-based, in code points
    end_line: int
    scope: str = ""  # dotted enclosing scope, e.g. "Config.load"; "" at top level


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # as written: "os.path", ".utils", "./utils", "github.com/x/y", "stdio.h"
    names: tuple[str, ...] = ()  # imported names; empty when the whole module is imported
    line: int = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    start_line: int
    end_line: int
    text: str
    header: str  # signatures of the enclosing scopes, outermost first, one per line; "" at top level
    kind: str  # function, method, class, block, paragraph, ...
    symbol: str  # the main name the chunk defines, or ""
    token_count: int


@dataclass(slots=True)
class FileAnalysis:
    language: str
    chunks: list[Chunk] = field(default_factory=list)
    definitions: list[Symbol] = field(default_factory=list)
    references: list[Symbol] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    has_errors: bool = False  # the parser recovered from syntax errors: the tree is partial
