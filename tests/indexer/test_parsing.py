"""analyze_file on bad input: broken UTF-8, minified code, syntax errors, empty files, odd line ends."""

import time

import pytest

from indexer.parsing import analyze_file


def assert_covers(text: str, analysis, limit: int) -> None:
    """Every chunk fits, chunks come in order, and only blank lines are in none."""
    lines = text.split("\n")
    covered: set[int] = set()
    for chunk in analysis.chunks:
        assert chunk.token_count <= limit
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    assert [c.start_line for c in analysis.chunks] == sorted(c.start_line for c in analysis.chunks)
    assert all(n in covered for n, line in enumerate(lines, 1) if line.strip())


def test_invalid_utf8_decoded_with_replacement(default_count_tokens) -> None:
    data = b"def greet(name):\n    return '\xff\xfe' + helper(name)  # \xe4\xbd\xa0\xe5\xa5\xbd\n"
    text = data.decode("utf-8", errors="replace")
    analysis = analyze_file("bad.py", text, default_count_tokens)
    assert [(d.name, d.kind, d.line) for d in analysis.definitions] == [("greet", "function", 1)]
    helper = next(r for r in analysis.references if r.name == "helper")
    # Columns count code points: each U+FFFD is one, though three bytes in UTF-8.
    assert (helper.line, helper.column) == (2, text.split("\n")[1].index("helper"))
    assert analysis.chunks[0].text == text.rstrip("\n")


def test_columns_count_code_points_after_chinese(default_count_tokens) -> None:
    text = 'const 问候 = "你好"; callMe(问候);\n'
    analysis = analyze_file("hello.js", text, default_count_tokens)
    call = next(r for r in analysis.references if r.name == "callMe")
    assert (call.kind, call.column) == ("call", text.index("callMe"))


def minified_js(num_chars: int) -> str:
    parts, size, i = [], 0, 0
    while size < num_chars:
        part = (
            f"function f{i}(a,b){{var c=a+b*{i};if(c>{i}){{return g{i % 97}(c,\"s{i}\")}}"
            f"for(var k=0;k<a.length;k++){{c+=a[k]}}return c}}var o{i}={{k:{i},h:function(x){{return x*{i}}}}};"
        )
        parts.append(part)
        size += len(part)
        i += 1
    return "".join(parts)


@pytest.mark.slow
def test_ten_megabytes_of_minified_javascript(default_count_tokens) -> None:
    text = minified_js(10_000_000)
    started = time.perf_counter()
    analysis = analyze_file("dist/app.min.js", text, default_count_tokens, 512)
    assert time.perf_counter() - started < 60  # about 4 s on the 2-core machines
    assert "".join(c.text for c in analysis.chunks) == text  # cut by characters, nothing lost
    assert analysis.definitions == analysis.references == []  # minified names are noise
    assert all(c.token_count <= 512 and (c.start_line, c.end_line) == (1, 1) for c in analysis.chunks)
    assert max(c.token_count for c in analysis.chunks) > 400  # the windows are not needlessly small


def test_one_long_line_inside_a_normal_file_is_cut_by_characters(default_count_tokens) -> None:
    data = "DATA = [" + ", ".join(str(n * 7919 % 10007) for n in range(600)) + "]"
    functions = "".join(f"\n\ndef load_{n}():\n    return json.dumps(DATA[{n}:])\n" for n in range(150))
    text = f"import json\n\n{data}\n{functions}"
    analysis = analyze_file("table.py", text, default_count_tokens, 128)
    assert_covers(text, analysis, 128)
    pieces = [c for c in analysis.chunks if (c.start_line, c.end_line) == (3, 3)]
    assert len(pieces) > 5 and "".join(c.text for c in pieces) == data
    assert {"DATA", "load_0", "load_149"} <= {d.name for d in analysis.definitions}


BROKEN = '''import os


def before(path):
    """Fine."""
    return os.path.exists(path)


def broken(x:
    if x > 1
        return [x,
    y = {


class After:
    def method(self):
        return before("x")
'''


def test_syntax_errors_still_give_chunks_and_symbols(default_count_tokens) -> None:
    analysis = analyze_file("broken.py", BROKEN, default_count_tokens, 64)
    assert analysis.has_errors
    assert_covers(BROKEN, analysis, 64)
    names = {d.name for d in analysis.definitions}
    assert "before" in names
    assert any(r.name == "exists" for r in analysis.references)
    assert analysis.imports[0].module == "os"


def test_unclosed_brace_in_c(default_count_tokens) -> None:
    text = "#include <stdio.h>\n\nint ok(void) { return 1; }\n\nint broken(void) {\n    if (x {\n        return 2;\n"
    analysis = analyze_file("broken.c", text, default_count_tokens)
    assert analysis.has_errors
    assert_covers(text, analysis, 512)
    assert "ok" in {d.name for d in analysis.definitions}


@pytest.mark.parametrize("path", ["empty.py", "empty.ts", "empty.md", "empty.txt", "empty.go"])
@pytest.mark.parametrize("text", ["", "\n", "\n\n   \n"])
def test_empty_files(path: str, text: str, default_count_tokens) -> None:
    analysis = analyze_file(path, text, default_count_tokens)
    assert analysis.chunks == [] and analysis.definitions == [] and analysis.references == []
    assert analysis.imports == [] and not analysis.has_errors


def test_crlf_line_ends_keep_line_numbers(default_count_tokens) -> None:
    text = "def a():\r\n    return 1\r\n\r\n\r\ndef b():\r\n    return 2\r\n"
    analysis = analyze_file("crlf.py", text, default_count_tokens, 16)
    assert [(d.name, d.line) for d in analysis.definitions] == [("a", 1), ("b", 5)]
    assert [(c.start_line, c.end_line) for c in analysis.chunks] == [(1, 2), (5, 6)]
    assert analysis.chunks[0].text == "def a():\r\n    return 1\r"


def test_unknown_extension_is_read_as_text(default_count_tokens) -> None:
    analysis = analyze_file("notes.weird", "first paragraph\n\nsecond one\n", default_count_tokens)
    assert analysis.language == "text"
    assert [c.kind for c in analysis.chunks] == ["paragraph"]


def test_chunks_over_the_limit_after_the_estimate_are_split_again() -> None:
    """A counter whose newlines cost more than the estimate allows: the final count catches it."""

    def count_tokens(texts: list[str]) -> list[int]:
        return [len(t) + 4 * t.count("\n") for t in texts]

    text = "\n".join(f"x{n} = {n}" for n in range(200)) + "\n"
    analysis = analyze_file("many.py", text, count_tokens, 64)
    assert_covers(text, analysis, 64)
    assert all(c.token_count == count_tokens([c.text])[0] for c in analysis.chunks)


def test_nested_header_names_class_and_method(default_count_tokens) -> None:
    body = "\n".join(f"        total += step({n}) * factor" for n in range(60))
    text = f"class Config:\n    def load(self, path):\n        total = 0\n{body}\n        return total\n"
    analysis = analyze_file("config.py", text, default_count_tokens, 128)
    later = analysis.chunks[1:]
    assert later and all(c.header == "class Config:\n    def load(self, path):" for c in later)
    assert all((c.kind, c.symbol) == ("method", "load") for c in analysis.chunks)
    assert analysis.chunks[0].header == "" and analysis.chunks[0].text.startswith("class Config:")
