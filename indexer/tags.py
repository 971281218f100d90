"""Definitions, references and imports of a parsed file, read with the language's tags query.

Each language has one ``queries/<language>.scm`` in the style of tree-sitter's ``tags.scm``:

- ``@definition.KIND`` on the defining node and ``@name`` on its name; optional ``@body`` (the block
  a long definition is split at) and ``@receiver`` (a type name that scopes a definition declared
  outside it: Go receivers, C++ ``Foo::bar``). ``@scope.KIND`` is the same without reporting a
  symbol (Rust ``impl`` blocks).
- ``@reference.KIND`` on a name that is used (call, type, name); ``@ignore`` on names, or whole
  nodes, whose names are not uses (parameters, import statements).
- ``@import`` on an import statement, ``@import.module`` on the module as written, ``@import.name``
  on each imported name.

When several patterns capture the same name, the first pattern in the file wins (definitions), or
the more specific kind (references: call, then type, then name). A first line ``; inherits: LANG``
appends LANG's patterns after the file's own.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass
from pathlib import Path

from tree_sitter import Node, Query, QueryCursor, Tree

from indexer.languages import tree_sitter_language
from indexer.records import Import, Symbol

QUERY_DIR = Path(__file__).parent / "queries"

# Kinds whose definitions enclose others: they make up dotted scopes and chunk headers.
SCOPE_KINDS = frozenset({"function", "method", "class", "struct", "interface", "enum", "type", "module", "impl"})
_REFERENCE_PRIORITY = {"call": 0, "type": 1}  # any other kind comes after these
_INHERITS = re.compile(r";\s*inherits:\s*(\w+)")
_GENERIC_ARGS = re.compile(r"<[^<>]*>")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@dataclass(slots=True)
class Definition:
    kind: str
    name: str
    node: Node
    name_node: Node
    body: Node | None
    is_symbol: bool  # False for @scope captures
    receiver: str = ""
    scope: str = ""  # dotted enclosing scope, filled by read_tags

    @property
    def qualified_name(self) -> str:
        return f"{self.scope}.{self.name}" if self.scope else self.name


@dataclass(slots=True)
class Tags:
    definitions: list[Definition]  # in file order, scope-only ones included
    references: list[Symbol]
    imports: list[Import]


@dataclass(frozen=True, slots=True)
class TagQueries:
    definitions: Query
    references: Query
    imports: Query


def _query_source(language: str) -> str:
    text = (QUERY_DIR / f"{language}.scm").read_text(encoding="utf-8")
    inherited = _INHERITS.match(text)
    return f"{text}\n{_query_source(inherited.group(1))}" if inherited else text


@functools.cache
def tag_queries(language: str) -> TagQueries:
    """The language's query compiled three times, each keeping one group of patterns."""
    source = _query_source(language)
    grammar = tree_sitter_language(language)
    encoded = source.encode("utf-8")
    groups = ("definitions", "references", "imports")
    compiled = {group: Query(grammar, source) for group in groups}
    probe = compiled["definitions"]
    for index in range(probe.pattern_count):
        pattern = encoded[probe.start_byte_for_pattern(index) : probe.end_byte_for_pattern(index)]
        if b"@definition." in pattern or b"@scope." in pattern:
            keep = "definitions"
        elif b"@import" in pattern:
            keep = "imports"
        else:
            keep = "references"
        for group in groups:
            if group != keep:
                compiled[group].disable_pattern(index)
    return TagQueries(**compiled)


def read_tags(language: str, tree: Tree, source: bytes, lines: list[str]) -> Tags:
    queries = tag_queries(language)
    root = tree.root_node
    definitions = _definitions(queries.definitions, root, source)
    return Tags(
        definitions=definitions,
        references=_references(queries.references, root, source, lines, definitions),
        imports=_imports(queries.imports, root, source),
    )


def definition_symbols(definitions: list[Definition], source: bytes, lines: list[str]) -> list[Symbol]:
    columns = _Columns(source, lines)
    symbols = []
    for d in definitions:
        if d.is_symbol:
            row, byte_column = d.name_node.start_point
            symbols.append(Symbol(d.name, d.kind, row + 1, columns(row, byte_column), last_row(d.node) + 1, d.scope))
    return symbols


def last_row(node: Node) -> int:
    """The last line a node covers: a node ending at column 0 ends on the line before."""
    row, column = node.end_point
    return row - 1 if column == 0 and row > node.start_point.row else row


def _text(source: bytes, node: Node) -> str:
    return source[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _definitions(query: Query, root: Node, source: bytes) -> list[Definition]:
    found: dict[int, tuple[int, Definition]] = {}  # name start byte -> (pattern index, definition)
    for pattern_index, captures in QueryCursor(query).matches(root):
        names = captures.get("name")
        if not names:
            continue
        name_node = names[0]
        previous = found.get(name_node.start_byte)
        if previous is not None and previous[0] <= pattern_index:
            continue
        capture = next(c for c in captures if c.startswith(("definition.", "scope.")))
        kind = capture.partition(".")[2]
        bodies = captures.get("body")
        receivers = captures.get("receiver")
        found[name_node.start_byte] = (
            pattern_index,
            Definition(
                kind=kind,
                name=_text(source, name_node).strip("\"'`"),  # `declare module "x"` names a string
                node=captures[capture][0],
                name_node=name_node,
                body=bodies[0] if bodies else None,
                is_symbol=capture.startswith("definition."),
                receiver=_receiver_name(_text(source, receivers[0])) if receivers else "",
            ),
        )
    definitions = [d for _, d in found.values()]
    definitions.sort(key=lambda d: (d.node.start_byte, -d.node.end_byte))
    stack: list[tuple[int, str]] = []  # (end byte, qualified name) of the enclosing scopes
    for d in definitions:
        while stack and stack[-1][0] < d.node.end_byte:
            stack.pop()
        scope = stack[-1][1] if stack else ""
        if d.receiver:
            scope = f"{scope}.{d.receiver}" if scope else d.receiver
        d.scope = scope
        if d.kind in SCOPE_KINDS:
            stack.append((d.node.end_byte, d.qualified_name))
    return definitions


def _receiver_name(text: str) -> str:
    """`*Config`, `Box<T>`, `ns::Box` -> `Config`, `Box`, `ns.Box`."""
    previous = None
    while previous != text:  # nested generics, innermost first
        previous, text = text, _GENERIC_ARGS.sub("", text)
    return text.replace("::", ".").strip("*&() \t\n")


def _references(
    query: Query, root: Node, source: bytes, lines: list[str], definitions: list[Definition]
) -> list[Symbol]:
    captures = QueryCursor(query).captures(root)
    defined = {d.name_node.start_byte for d in definitions if d.is_symbol}
    best: dict[int, tuple[int, str, Node]] = {}  # start byte -> (priority, kind, name node)
    for capture, nodes in captures.items():
        if not capture.startswith("reference."):
            continue
        kind = capture[len("reference.") :]
        priority = _REFERENCE_PRIORITY.get(kind, len(_REFERENCE_PRIORITY))
        for node in nodes:
            start = node.start_byte
            if start in defined:
                continue
            current = best.get(start)
            if current is None or priority < current[0]:
                best[start] = (priority, kind, node)
    ignored = _merged_ranges([(n.start_byte, n.end_byte) for n in captures.get("ignore", [])])
    scopes = sorted((d for d in definitions if d.kind in SCOPE_KINDS), key=lambda d: d.node.start_byte)
    columns = _Columns(source, lines)
    references: list[Symbol] = []
    stack: list[tuple[int, str]] = []  # (end byte, qualified name) of the scopes around the position
    next_scope = next_ignored = 0
    for start in sorted(best):
        while next_ignored < len(ignored) and ignored[next_ignored][1] <= start:
            next_ignored += 1
        if next_ignored < len(ignored) and ignored[next_ignored][0] <= start:
            continue
        while next_scope < len(scopes) and scopes[next_scope].node.start_byte <= start:
            d = scopes[next_scope]
            while stack and stack[-1][0] <= d.node.start_byte:
                stack.pop()
            stack.append((d.node.end_byte, d.qualified_name))
            next_scope += 1
        while stack and stack[-1][0] <= start:
            stack.pop()
        _, kind, node = best[start]
        row, byte_column = node.start_point
        references.append(
            Symbol(
                source[start : node.end_byte].decode("utf-8", "replace"),
                kind,
                row + 1,
                columns(row, byte_column),
                node.end_point.row + 1,
                stack[-1][1] if stack else "",
            )
        )
    return references


def _merged_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _imports(query: Query, root: Node, source: bytes) -> list[Import]:
    # (statement start, module) -> (line, {name start: name})
    grouped: dict[tuple[int, str], tuple[int, dict[int, str]]] = {}
    for _, captures in QueryCursor(query).matches(root):
        statements, modules = captures.get("import"), captures.get("import.module")
        if not statements or not modules:
            continue
        module = _text(source, modules[0]).strip("\"'`<> \t")
        key = (statements[0].start_byte, module)
        _, names = grouped.setdefault(key, (statements[0].start_point.row + 1, {}))
        for node in captures.get("import.name", []):
            names[node.start_byte] = _text(source, node)
    imports = []
    for (_, module), (line, names) in sorted(grouped.items()):
        if module:
            in_order = [names[start] for start in sorted(names)]
            imports.append(Import(module, tuple(dict.fromkeys(in_order)), line))
    return imports


class _Columns:
    """Byte columns from tree-sitter to code-point columns, cheap on ASCII and on very long lines."""

    def __init__(self, source: bytes, lines: list[str]) -> None:
        self._lines = lines
        self._is_ascii = source.isascii()
        self._multibyte: dict[int, tuple[list[int], list[int]]] = {}  # row -> (byte offsets, extra bytes so far)

    def __call__(self, row: int, byte_column: int) -> int:
        if self._is_ascii or byte_column == 0 or row >= len(self._lines):
            return byte_column
        table = self._multibyte.get(row)
        if table is None:
            table = self._multibyte[row] = self._table(self._lines[row])
        offsets, extra = table
        if not offsets:
            return byte_column
        index = bisect.bisect_left(offsets, byte_column)
        return byte_column - (extra[index - 1] if index else 0)

    @staticmethod
    def _table(line: str) -> tuple[list[int], list[int]]:
        # For each non-ASCII character: its byte offset, and the extra bytes up to and including it.
        offsets: list[int] = []
        extra: list[int] = []
        total = 0
        for match in _NON_ASCII.finditer(line):
            offsets.append(match.start() + total)
            total += len(match.group().encode("utf-8", "surrogatepass")) - 1
            extra.append(total)
        return offsets, extra
