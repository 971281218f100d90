"""One file in, its chunks, symbols and imports out: the indexer's entry point for a file's content."""

from __future__ import annotations

from indexer.chunking import LONG_LINE_CHARS, chunk_lines
from indexer.code_chunking import chunk_code
from indexer.languages import GRAMMARS, language_for_path, parser_for
from indexer.prose_chunking import chunk_markdown, chunk_text
from indexer.records import FileAnalysis, TokenCounter
from indexer.tags import definition_symbols, read_tags


def analyze_file(path: str, text: str, count_tokens: TokenCounter, max_chunk_tokens: int = 512) -> FileAnalysis:
    """Chunks, definitions, references and imports of one file.

    ``text`` is already decoded (invalid UTF-8 replaced). A file in no known language is read as
    plain text. A file with syntax errors still yields what its partial tree holds, with
    ``has_errors``. Minified code is cut by characters, without symbols: its names are mangled and
    a 10 MB line would take minutes to walk. Every chunk's text holds at most ``max_chunk_tokens``.
    """
    language = language_for_path(path) or "text"
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # the empty string after the last newline is not a line
    if language in GRAMMARS:
        if is_minified(lines, len(text)):
            return FileAnalysis(language=language, chunks=chunk_lines(lines, count_tokens, max_chunk_tokens, "block"))
        source = text.encode("utf-8", "surrogatepass")
        tree = parser_for(language).parse(source)
        tags = read_tags(language, tree, source, lines)
        return FileAnalysis(
            language=language,
            chunks=chunk_code(lines, source, tree.root_node, tags.definitions, count_tokens, max_chunk_tokens),
            definitions=definition_symbols(tags.definitions, source, lines),
            references=tags.references,
            imports=tags.imports,
            has_errors=tree.root_node.has_error,
        )
    if language == "markdown":
        chunks, headings = chunk_markdown(lines, count_tokens, max_chunk_tokens)
        return FileAnalysis(language=language, chunks=chunks, definitions=headings)
    return FileAnalysis(language=language, chunks=chunk_text(lines, count_tokens, max_chunk_tokens))


def is_minified(lines: list[str], num_chars: int) -> bool:
    """Most of the text sits on lines longer than LONG_LINE_CHARS."""
    return 2 * sum(len(line) for line in lines if len(line) > LONG_LINE_CHARS) > num_chars
