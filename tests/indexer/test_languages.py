"""The language registry and the tags queries behind it."""

import pytest

from indexer.languages import (
    GRAMMARS,
    language_for_path,
    parser_for,
    tree_sitter_language,
)
from indexer.tags import tag_queries


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("a/b.py", "python"), ("stubs/x.pyi", "python"), ("app.mjs", "javascript"), ("App.jsx", "javascript"),
        ("x.ts", "typescript"), ("X.tsx", "tsx"), ("main.go", "go"), ("lib.rs", "rust"), ("A.java", "java"),
        ("ring.c", "c"), ("ring.h", "cpp"), ("x.cc", "cpp"), ("x.HPP", "cpp"), ("README.md", "markdown"),
        ("notes.txt", "text"), ("docs/index.rst", "text"), ("LICENSE", "text"), ("src\\win\\x.py", "python"),
        ("logo.png", None), ("Makefile", None), ("data.json", None), (".gitignore", None),
    ],
)
def test_language_for_path(path: str, language: str | None) -> None:
    assert language_for_path(path) == language


@pytest.mark.parametrize("language", sorted(GRAMMARS))
def test_every_grammar_loads_and_its_query_compiles(language: str) -> None:
    assert parser_for(language).language == tree_sitter_language(language)
    assert tag_queries(language).definitions.pattern_count > 0  # the .scm file compiles for this grammar
