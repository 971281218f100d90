"""The completion pipeline's pure parts: the forward-matching cache and the adaptive debounce."""

from __future__ import annotations

import pytest

from lsp_server.completion_cache import CompletionCache
from lsp_server.debounce import AdaptiveDebounce
from zhiyin.completion import Completion


def test_cache_answers_the_rest_of_a_suggestion_being_typed() -> None:
    cache = CompletionCache()
    cache.store("a.py", "x = sorted(", ")\n", Completion("items, key=len", False))
    assert cache.lookup("a.py", "x = sorted(", ")\n") == (True, Completion("items, key=len", False))
    assert cache.lookup("a.py", "x = sorted(ite", ")\n") == (True, Completion("ms, key=len", False))
    # typed something else, typed all of it, other text after the cursor, another document: misses
    assert cache.lookup("a.py", "x = sorted(k", ")\n") == (False, None)
    assert cache.lookup("a.py", "x = sorted(items, key=len", ")\n") == (False, None)
    assert cache.lookup("a.py", "x = sorted(ite", "]\n") == (False, None)
    assert cache.lookup("b.py", "x = sorted(", ")\n") == (False, None)


def test_cache_keeps_replacing_an_auto_closed_bracket_while_the_rest_still_writes_it() -> None:
    cache = CompletionCache()
    cache.store("a.py", "def f(path", ")\n", Completion(": str) -> str:", False, replaces=1))
    assert cache.lookup("a.py", "def f(path: ", ")\n") == (True, Completion("str) -> str:", False, replaces=1))
    # typed through the `)` without the editor stepping over it: the rest no longer writes one
    assert cache.lookup("a.py", "def f(path: str)", ")\n") == (True, Completion(" -> str:", False, replaces=0))


def test_cache_remembers_where_the_model_had_nothing_and_forgets_closed_documents() -> None:
    cache = CompletionCache()
    cache.store("a.py", "pass", "", Completion("", False))
    assert cache.lookup("a.py", "pass", "") == (True, Completion("", False))
    assert cache.lookup("a.py", "pass\n", "") == (False, None)
    cache.forget("a.py")
    assert cache.lookup("a.py", "pass", "") == (False, None)


def test_cache_is_bounded_and_keeps_the_newest() -> None:
    cache = CompletionCache(max_entries=3)
    for i in range(5):
        cache.store("a.py", f"line{i}", "", Completion(f"_{i}", False))
    assert cache.lookup("a.py", "line0", "") == (False, None)
    assert cache.lookup("a.py", "line4", "") == (True, Completion("_4", False))


def test_cache_holds_a_bounded_amount_of_text() -> None:
    cache = CompletionCache(max_chars=1000)
    cache.store("huge.js", "x" * 400, "", Completion("y", False))  # over a quarter: not kept
    assert cache.lookup("huge.js", "x" * 400, "") == (False, None)
    for i in range(6):
        cache.store("a.py", f"{i}" * 200, "", Completion("z", False))
    assert cache.lookup("a.py", "0" * 200, "") == (False, None)  # 6 x 200 chars: the oldest went
    assert cache.lookup("a.py", "1" * 200, "") == (True, Completion("z", False))


def test_debounce_follows_the_typing_pace_within_its_bounds() -> None:
    debounce = AdaptiveDebounce(min_s=0.05, max_s=1.0)
    assert debounce.arrived("a.py", now=0.0) == 0.05  # no pace known yet
    now = 0.0
    for _ in range(8):
        now += 0.3
        delay = debounce.arrived("a.py", now=now)
    assert delay == pytest.approx(0.15)  # half the 300 ms between keystrokes
    assert debounce.arrived("a.py", now=now + 5.0) == pytest.approx(0.15)  # a pause is not typing
    for _ in range(8):
        now += 0.01
        delay = debounce.arrived("b.py", now=now + 10)
    assert delay == 0.05  # very fast typing: the lower bound
