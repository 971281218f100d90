"""Inline completion in the app core: the clean-up rules, and the real model over a real index."""

import shutil
from pathlib import Path

import pytest

from zhiyin.completion import (
    Completer,
    CompletionRequest,
    absorbed_suffix,
    clean_completion,
    is_multiline_position,
    stable_prefix,
)


@pytest.mark.parametrize("before, after, multiline", [
    ("    ", "", True),                      # an empty line in a body
    ("def load(path):", "", True),          # a line that opens a block
    ("    x = compute(", ")", False),       # mid-line: the rest of the line only
    ("    return total", "", False),
])
def test_single_or_multiline(before: str, after: str, multiline: bool) -> None:
    assert is_multiline_position(before, after) is multiline


def test_single_line_keeps_one_line_and_drops_suffix_overlap() -> None:
    assert clean_completion("items, key=len)\nprint(x)", "    x = sorted(", ")", False) == "items, key=len"


def test_an_auto_closed_bracket_the_completion_writes_itself_is_replaced() -> None:
    # `def f(path|)`: the model writes `: str) -> str:`, through the editor's `)`
    assert absorbed_suffix(": str) -> str:", ")\nnext") == 1
    assert absorbed_suffix("x, y]))", "])  ") == 4  # several closers, trailing blanks, in order
    assert absorbed_suffix("items, key=len", ")") == 0  # the text stops before the `)`: insert
    assert absorbed_suffix(": str) -> str:", ") + rest") == 0  # not only closers after the cursor
    assert absorbed_suffix("]) ", ")]") == 0  # out of order
    assert absorbed_suffix("x", "") == 0


def test_block_stops_where_the_scope_ends() -> None:
    text = "\n    rows = db.query(sql)\n    return rows\n\ndef other():\n    pass"
    assert clean_completion(text, "def fetch(db, sql):", "", True) == "\n    rows = db.query(sql)\n    return rows"
    inner = "total = 0\n    for x in xs:\n        total += x\n    return total\nprint(1)"
    assert clean_completion(inner, "    ", "", True) == "total = 0\n    for x in xs:\n        total += x\n    return total"


def test_repeated_lines_and_blank_results_are_dropped() -> None:
    assert clean_completion("a = 1\nb = 2\na = 1\nb = 2", "", "", True) == "a = 1\nb = 2"
    assert clean_completion("   \n  ", "    ", "", True) == ""
    # on a blank line, a model that breaks the line first: its next line is written at the cursor
    assert clean_completion("\n    return x\n", "    ", "", True) == "return x"
    assert clean_completion("\nprint(x)", "    ", "", True) == ""  # back at the outer level: nothing


@pytest.mark.slow
def test_completion_with_repository_context(tmp_path: Path, engine_bf16, default_count_tokens) -> None:
    from indexer.index import Index

    root = tmp_path / "shop"
    shutil.copytree(Path(__file__).parent / "indexer" / "sample_repo", root)
    index = Index.open(root, db_path=tmp_path / "index.db", count_tokens=default_count_tokens, embedder=None)
    index.update()
    text = (root / "shop" / "orders.py").read_text() + "\n\ndef reopen_order(db: Database, order_id: int) -> None:\n    "
    line = text.count("\n") + 1
    completer = Completer(engine_bf16, index, max_tokens=24)
    result = completer.complete(CompletionRequest("shop/orders.py", text, line, 4))
    assert result is not None and result.multiline and result.text.strip()
    # Out of range positions are answered with nothing, not an error.
    assert completer.complete(CompletionRequest("shop/orders.py", text, line + 5, 0)) is None


@pytest.mark.slow
def test_a_long_file_is_cut_to_the_model_window(tiny_models) -> None:
    from engine import EngineOptions, LLMEngine

    _model, _folder, gguf = tiny_models["llama"]
    engine = LLMEngine.load(gguf, EngineOptions(dtype="fp32"))
    assert engine.max_context == 1024
    text = "".join(f"value_{i} = compute_{i}(value_{i - 1})\n" for i in range(400))  # ~6k tokens
    completer = Completer(engine, None, max_tokens=16)
    prompt = completer._fitting_prompt(text, "", "")
    assert len(prompt.token_ids) + 16 < 1024 and len(prompt.token_ids) > 200
    completer.complete(CompletionRequest("gen.py", text, 401, 0))  # no PromptTooLongError


def test_a_long_prefix_starts_at_a_line_that_moves_in_steps() -> None:
    text = "".join(f"line_{i:04d} = {i}\n" for i in range(2000))  # 17 characters a line
    cut = stable_prefix(text, max_chars=1700, step=32)
    assert len(cut) <= 1700 and cut.startswith("line_1920 ")  # the first multiple of 32 that fits
    # typing on: the start stays until the budget forces the next step
    assert stable_prefix(text + "value = compute(", max_chars=1700, step=32).startswith("line_1920 ")
    assert stable_prefix("x" * 5000, max_chars=1000) == "x" * 1000  # one long line: cut by characters
    assert stable_prefix("short\n", max_chars=1000) == "short\n"
