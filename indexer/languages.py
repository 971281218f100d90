"""Which files the indexer reads, in which language, and the tree-sitter objects for each language.

Grammars come from the individual PyPI wheels (tree-sitter-python, ...), which carry compiled
parsers: nothing is downloaded at run time. Languages, parsers and queries are built on first use.
"""

from __future__ import annotations

import functools
import importlib
import posixpath
import threading

from tree_sitter import Language, Parser

# Languages parsed with tree-sitter: id -> (module, function returning the grammar pointer).
GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}

_EXTENSIONS: dict[str, str] = {
    **dict.fromkeys([".py", ".pyi", ".pyw"], "python"),
    **dict.fromkeys([".js", ".mjs", ".cjs", ".jsx"], "javascript"),
    **dict.fromkeys([".ts", ".mts", ".cts"], "typescript"),
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    # .h goes to C++: its grammar reads C headers too, while C's cannot read classes or templates.
    **dict.fromkeys([".h", ".cc", ".cpp", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".tpp"], "cpp"),
    ".inl": "cpp",
    **dict.fromkeys([".md", ".markdown", ".mdx"], "markdown"),
    **dict.fromkeys([".txt", ".text", ".rst", ".adoc"], "text"),
}
# Extension-less files worth indexing as prose (compared in upper case, before any extension).
_TEXT_NAMES = {"README", "CHANGELOG", "CHANGES", "CONTRIBUTING", "AUTHORS", "NOTICE", "LICENSE", "COPYING", "HISTORY"}


def language_for_path(path: str) -> str | None:
    """The language id of a repository file, or None when the indexer does not read such files."""
    name = posixpath.basename(path.replace("\\", "/"))
    stem, ext = posixpath.splitext(name)
    language = _EXTENSIONS.get(ext.lower())
    if language is not None:
        return language
    return "text" if ext == "" and stem.upper() in _TEXT_NAMES else None


@functools.cache
def tree_sitter_language(language: str) -> Language:
    """The grammar of a language id from GRAMMARS (KeyError for prose and unknown ids)."""
    module_name, function_name = GRAMMARS[language]
    module = importlib.import_module(module_name)
    return Language(getattr(module, function_name)())


_parsers = threading.local()  # a Parser is not safe to share between threads


def parser_for(language: str) -> Parser:
    """This thread's parser for a grammar language."""
    cache: dict[str, Parser] | None = getattr(_parsers, "by_language", None)
    if cache is None:
        cache = _parsers.by_language = {}
    parser = cache.get(language)
    if parser is None:
        parser = cache[language] = Parser(tree_sitter_language(language))
    return parser
