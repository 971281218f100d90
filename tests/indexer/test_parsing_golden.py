"""Golden chunks, symbols and imports per language: fixtures/NAME -> golden/NAME.json.

`pytest tests/indexer --update-golden` rewrites the golden files; read their diff before keeping it.
Each record sits on one line so that a change shows as a one-line diff.
"""

import difflib
import json
from pathlib import Path

import pytest

from indexer.parsing import analyze_file
from indexer.records import FileAnalysis

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
# Limits small enough that each fixture's long function (or section) has to split.
MAX_TOKENS = {"GUIDE.md": 128, "release_notes.txt": 64}
DEFAULT_MAX_TOKENS = 192
NAMES = sorted(p.name for p in FIXTURES.iterdir())


def analyze(name: str, count_tokens) -> FileAnalysis:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return analyze_file(f"fixtures/{name}", text, count_tokens, MAX_TOKENS.get(name, DEFAULT_MAX_TOKENS))


def render(name: str, analysis: FileAnalysis) -> str:
    def rows(items: list) -> str:
        if not items:
            return "[]"
        return "[\n" + ",\n".join("    " + json.dumps(item, ensure_ascii=False) for item in items) + "\n  ]"

    chunks = [
        {"lines": [c.start_line, c.end_line], "kind": c.kind, "symbol": c.symbol, "tokens": c.token_count,
         "header": c.header.split("\n") if c.header else []}
        for c in analysis.chunks
    ]
    definitions = [[d.line, d.column, d.end_line, d.kind, d.name, d.scope] for d in analysis.definitions]
    references = [[r.line, r.column, r.kind, r.name, r.scope] for r in analysis.references]
    imports = [{"line": i.line, "module": i.module, "names": list(i.names)} for i in analysis.imports]
    head = {
        "file": name,
        "language": analysis.language,
        "max_chunk_tokens": MAX_TOKENS.get(name, DEFAULT_MAX_TOKENS),
        "has_errors": analysis.has_errors,
    }
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items())
    records = {"chunks": chunks, "definitions": definitions, "imports": imports, "references": references}
    for key, items in records.items():
        body += f",\n  {json.dumps(key)}: {rows(items)}"
    return "{\n" + body + "\n}\n"


@pytest.mark.parametrize("name", NAMES)
def test_golden(name: str, default_count_tokens, request) -> None:
    actual = render(name, analyze(name, default_count_tokens))
    golden = GOLDEN / f"{name}.json"
    if request.config.getoption("--update-golden", default=False):
        golden.write_text(actual, encoding="utf-8")
    assert golden.is_file(), f"no golden file for {name}: run pytest tests/indexer --update-golden"
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(expected.splitlines(), actual.splitlines(), "golden", "actual", lineterm="")
        pytest.fail(f"{name} differs from {golden.name}:\n" + "\n".join(diff), pytrace=False)


@pytest.mark.parametrize("name", NAMES)
def test_chunks_hold_every_line_once_and_fit(name: str, default_count_tokens) -> None:
    analysis = analyze(name, default_count_tokens)
    lines = (FIXTURES / name).read_text(encoding="utf-8").split("\n")
    limit = MAX_TOKENS.get(name, DEFAULT_MAX_TOKENS)
    covered: set[int] = set()
    previous_end = 0
    for chunk in analysis.chunks:
        assert previous_end < chunk.start_line <= chunk.end_line
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.token_count == default_count_tokens([chunk.text])[0] <= limit
        covered.update(range(chunk.start_line, chunk.end_line + 1))
        previous_end = chunk.end_line
    lost = [n for n, line in enumerate(lines, 1) if line.strip() and n not in covered]
    assert not lost, f"lines in no chunk: {lost}"
