"""Syntax-aware chunks of source code: one definition per chunk where it fits, bodies split at statements.

Pieces are the named children of a syntax node, widened to whole lines: nodes sharing a line share
a piece, and the lines between two nodes go with the later one. Comments and attributes directly
right above a node go with it. A definition too big for the budget is split at its ``@body``'s
children, and the chunks after its signature carry that signature in their header.
"""

from __future__ import annotations

import itertools

from tree_sitter import Node

from indexer.chunking import Chunker, Piece, Scope
from indexer.records import Chunk, TokenCounter
from indexer.tags import Definition, last_row

MAX_DEPTH = 64  # deeper syntax (generated data) is split by lines
MAX_SIGNATURE_CHARS = 400  # of one definition's header
# Nodes that go with the node right below them (doc comments, decorators, attributes).
ATTACHED_TYPES = frozenset({"comment", "line_comment", "block_comment", "attribute_item", "decorator"})
# Nodes that hold a definition ending where they end: decorators, `export`, `template<>`, declarations.
WRAPPER_TYPES = frozenset(
    {
        "decorated_definition",
        "export_statement",
        "expression_statement",
        "lexical_declaration",
        "variable_declaration",
        "ambient_declaration",
        "template_declaration",
        "type_declaration",
        "declaration",
        "field_declaration",
    }
)


def chunk_code(
    lines: list[str],
    source: bytes,
    root: Node,
    definitions: list[Definition],
    count_tokens: TokenCounter,
    max_tokens: int,
) -> list[Chunk]:
    if not lines:
        return []
    chunker = _CodeChunker(lines, source, definitions, count_tokens, max_tokens)
    top = Scope(lines=[], tokens=0, kind="block", symbol="")
    chunker.pack(chunker.pieces(root.named_children, 0, len(lines) - 1), top, 0)
    return chunker.chunks()


class _CodeChunker(Chunker):
    def __init__(
        self,
        lines: list[str],
        source: bytes,
        definitions: list[Definition],
        count_tokens: TokenCounter,
        max_tokens: int,
    ) -> None:
        super().__init__(lines, count_tokens, max_tokens)
        self._source = source
        self._by_node: dict[int, Definition] = {}
        for d in definitions:
            self._by_node.setdefault(d.node.id, d)

    def pieces(self, nodes: list[Node], start: int, end: int) -> list[Piece]:
        """Line ranges covering start..end, one per node or per group of nodes sharing lines."""
        pieces: list[Piece] = []
        for node in nodes:
            if node.start_byte == node.end_byte:  # a MISSING node inserted by error recovery
                continue
            first, last = node.start_point.row, last_row(node)
            if pieces and first <= pieces[-1].end:
                pieces[-1].end = max(pieces[-1].end, last)
                pieces[-1].nodes.append(node)
            else:
                pieces.append(Piece(first, last, nodes=[node]))
        if not pieces:
            return [Piece(start, end)]
        for piece in pieces:
            definition = self._definition_of(piece)
            if definition is not None:
                piece.kind, piece.symbol, piece.data = definition.kind, definition.name, definition
        pieces = self._attach_comments(pieces)
        pieces[0].start = start
        pieces[-1].end = max(pieces[-1].end, end)
        for before, after in itertools.pairwise(pieces):
            after.start = before.end + 1
        return pieces

    def split(self, piece: Piece, scope: Scope, depth: int) -> None:
        definition: Definition | None = piece.data
        if depth >= MAX_DEPTH or not piece.nodes or piece.nodes[0].start_point.row == piece.end:
            super().split(piece, scope, depth)  # one line of syntax (minified code) or too deep: by lines
        elif definition is not None and definition.body is not None and definition.body.named_child_count:
            inner = self._inner_scope(definition, scope)
            self.pack(self.pieces(definition.body.named_children, piece.start, piece.end), inner, depth + 1)
        else:
            children = [child for node in piece.nodes for child in node.named_children]
            if not children:
                super().split(piece, scope, depth)
                return
            if definition is not None:  # a long constant: its parts keep its name
                scope = Scope(scope.lines, scope.tokens, definition.kind, definition.name, outer=scope)
            self.pack(self.pieces(children, piece.start, piece.end), scope, depth + 1)

    def _definition_of(self, piece: Piece) -> Definition | None:
        nodes = [n for n in piece.nodes if n.type not in ATTACHED_TYPES]
        if len(nodes) != 1:
            return None
        node = nodes[0]
        for _ in range(3):
            definition = self._by_node.get(node.id)
            if definition is not None or node.type not in WRAPPER_TYPES:
                return definition
            end = last_row(node)
            inner = next((c for c in reversed(node.named_children) if last_row(c) == end), None)
            if inner is None:
                return None
            node = inner
        return None

    def _attach_comments(self, pieces: list[Piece]) -> list[Piece]:
        kept: list[Piece] = []
        for piece in pieces:
            previous = kept[-1] if kept else None
            if (
                previous is not None
                and previous.nodes
                and all(n.type in ATTACHED_TYPES for n in previous.nodes)
                and previous.end + 1 == piece.nodes[0].start_point.row
            ):
                piece.start = previous.start
                piece.nodes = previous.nodes + piece.nodes
                kept[-1] = piece
            else:
                kept.append(piece)
        return kept

    def _inner_scope(self, definition: Definition, scope: Scope) -> Scope:
        node, body = definition.node, definition.body
        assert body is not None
        row, column = node.start_point
        indent = self.lines[row].encode("utf-8", "surrogatepass")[:column]
        raw = (indent + self._source[node.start_byte : body.start_byte]).decode("utf-8", "replace").rstrip()
        if self._source[body.start_byte : body.start_byte + 1] == b"{":
            raw += " {" if raw else "{"
        signature_end = row + raw.count("\n")
        signature = "\n".join(line.rstrip() for line in raw.split("\n") if line.strip())
        if len(signature) > MAX_SIGNATURE_CHARS:
            signature = signature[:MAX_SIGNATURE_CHARS].rstrip() + " …"
        tokens = scope.tokens + self.count_tokens([signature])[0] + 1
        return Scope(scope.lines + [signature], tokens, definition.kind, definition.name, signature_end, scope)
