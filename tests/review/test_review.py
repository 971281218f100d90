"""`zhiyin review` on a real package's code: pathspec's source (installed from PyPI) committed into a
temporary git repository, then changed the way a pull request would change it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pathspec
import pytest
from markdown_it import MarkdownIt

from tests.review import rdjson_consumer
from tests.test_cli import CJK, assert_one_line_error, zhiyin

SARIF_SCHEMA = json.loads((Path(__file__).parent / "sarif-2.1.0.json").read_text(encoding="utf-8"))
AGENTS_ZH = "# 约定\n\n- 不要用 `print()` 输出调试信息，统一用 `logging`。\n"
BUGGY = "def last_pattern(patterns):\n    return patterns[len(patterns)]\n"
FIXED = "def last_pattern(patterns):\n    return patterns[len(patterns) - 1]\n"


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(root.parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env).stdout


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "pathspec"
    shutil.copytree(Path(pathspec.__file__).parent, root / "pathspec",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "AGENTS.md").write_text(AGENTS_ZH, encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    commit(root, "Import pathspec")
    return root


def review(repo: Path, *args: str, lang: str = "en"):
    env = {"XDG_DATA_HOME": str(repo.parent / "data"), "XDG_CACHE_HOME": str(repo.parent / "cache")}
    return zhiyin("review", "--repo", str(repo), *args, lang=lang, env=env, tmp_home=repo.parent / "config")


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_a_chinese_convention_violated_in_a_diff_is_reported_in_chinese(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD").strip()
    append(repo / "pathspec" / "util.py", "\n\ndef debug_patterns(patterns):\n    print(patterns)  # 临时调试\n")
    commit(repo, "Add a debug helper")
    result = review(repo, "--base", base, "--lang", "zh-CN", "--format", "json")
    assert result.returncode == 1, result.stderr  # a warning: fails at the default --fail-on warning
    report = json.loads(result.stdout)
    [finding] = report["findings"]
    assert finding["path"] == "pathspec/util.py" and finding["category"] == "convention"
    assert finding["evidence"] == "AGENTS.md:3" and CJK.search(finding["message"]) and "print" in finding["message"]
    assert finding["suggestion"].strip() == "logging(patterns)  # 临时调试"
    line = (repo / "pathspec" / "util.py").read_text(encoding="utf-8").split("\n")[finding["start_line"] - 1]
    assert "print(patterns)" in line


def test_a_past_fix_reintroduced_with_renamed_variables_cites_the_old_commit(repo: Path) -> None:
    append(repo / "pathspec" / "util.py", "\n\n" + BUGGY)
    commit(repo, "Add last_pattern")
    (repo / "pathspec" / "util.py").write_text(
        (repo / "pathspec" / "util.py").read_text(encoding="utf-8").replace(BUGGY, FIXED), encoding="utf-8")
    fix = commit(repo, "Fix off-by-one in last_pattern")
    append(repo / "pathspec" / "pattern.py", "\n\ndef final_rule(rules):\n    return rules[len(rules)]\n")
    commit(repo, "Add final_rule")
    result = review(repo, "--base", fix, "--format", "json")
    assert result.returncode == 1, result.stderr
    [finding] = json.loads(result.stdout)["findings"]
    assert finding["path"] == "pathspec/pattern.py" and finding["category"] == "bug"
    assert finding["evidence"] == f"commit {fix}" and fix[:8] in finding["message"]
    assert "len(patterns) - 1" in finding["suggestion"]


def test_a_clean_refactor_has_no_findings(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD").strip()
    util = repo / "pathspec" / "util.py"
    text = util.read_text(encoding="utf-8")
    assert "def normalize_file(" in text
    util.write_text(re.sub(r"\bnorm_file\b", "normalized", text), encoding="utf-8")  # rename a local
    (repo / "pathspec" / "_helpers.py").write_text("def first(items):\n    return items[0] if items else None\n",
                                                   encoding="utf-8")
    commit(repo, "Refactor: clearer names")
    result = review(repo, "--base", base, "--fail-on", "warning")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 findings" in result.stdout


def test_every_format_round_trips_through_its_consumer(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD").strip()
    append(repo / "pathspec" / "util.py", "\n\ndef shout(text):\n    print(text.upper())\n")
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    commit(repo, "Shout")
    sarif = json.loads(review(repo, "--base", base, "--format", "sarif").stdout)
    jsonschema.validate(sarif, SARIF_SCHEMA)  # the official SARIF 2.1.0 schema
    assert sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "pathspec/util.py"
    notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert any("logo.png" in n["message"]["text"] for n in notes)  # skipped, and said so

    github = review(repo, "--base", base, "--format", "github").stdout.splitlines()
    annotation = re.fullmatch(r"::warning file=([^,]+),line=(\d+),endLine=(\d+),title=(\w+)::(.+)", github[0])
    assert annotation and annotation.group(1) == "pathspec/util.py" and annotation.group(4) == "convention"

    rdjson = rdjson_consumer.parse(review(repo, "--base", base, "--format", "rdjson").stdout)  # as reviewdog reads it
    [diagnostic] = rdjson.diagnostics
    assert rdjson_consumer.severity_name(diagnostic.severity) == "WARNING"
    assert diagnostic.location.path == "pathspec/util.py" and diagnostic.code.value
    [suggestion] = diagnostic.suggestions
    fixed = rdjson_consumer.apply_suggestion((repo / "pathspec" / "util.py").read_text(encoding="utf-8"), suggestion)
    assert fixed.endswith("def shout(text):\n    logging(text.upper())\n")
    with pytest.raises(rdjson_consumer.json_format.ParseError):  # the consumer is strict: a typo would not pass
        rdjson_consumer.parse('{"diagnostics": [{"message": "x", "severity": "WARN"}]}')

    markdown = review(repo, "--base", base, "--format", "markdown").stdout
    tokens = MarkdownIt().parse(markdown)  # what a PR comment renders: a heading, then one item per finding
    assert next(t.content for t in tokens if t.type == "inline") == "Zhiyin review"
    items = [t.content for t in tokens if t.type == "inline" and "pathspec/util.py:" in t.content]
    assert len(items) == 1 and "convention" in items[0]
    out = repo.parent / "report.sarif"
    assert review(repo, "--base", base, "--format", "sarif", "-o", str(out)).returncode == 1
    jsonschema.validate(json.loads(out.read_text(encoding="utf-8")), SARIF_SCHEMA)
    assert review(repo, "--base", base, "--fail-on", "error").returncode == 0  # warnings only


def test_renames_deletions_binary_and_non_utf8_files(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "mv", "pathspec/util.py", "pathspec/utilities.py")
    (repo / "pathspec" / "_meta.py").unlink()
    (repo / "latin1.py").write_bytes("# caf\xe9\nprint('x')\n".encode("latin-1"))
    (repo / "data.bin").write_bytes(bytes(range(256)) * 4)
    commit(repo, "Move things around")
    result = review(repo, "--base", base, "--format", "json")
    report = json.loads(result.stdout)
    skipped = {s["path"]: s["why"] for s in report["skipped"]}
    assert skipped.get("data.bin") == "binary file" and skipped.get("pathspec/_meta.py") == "deleted"
    assert [f["path"] for f in report["findings"]] == ["latin1.py"]  # the rename adds nothing; print() is new


def test_a_huge_diff_stops_at_the_time_budget_and_says_what_it_skipped(repo: Path) -> None:
    append(repo / "pathspec" / "util.py", "\n\n" + BUGGY)
    commit(repo, "Add last_pattern")
    (repo / "pathspec" / "util.py").write_text(
        (repo / "pathspec" / "util.py").read_text(encoding="utf-8").replace(BUGGY, FIXED), encoding="utf-8")
    base = commit(repo, "Fix off-by-one in last_pattern")  # every added line is now compared with it
    for i in range(50):
        (repo / "gen" / f"m{i}.py").parent.mkdir(exist_ok=True)
        (repo / "gen" / f"m{i}.py").write_text("".join(f"value_{j} = {j} * 2\n" for j in range(1000)), encoding="utf-8")
    commit(repo, "Generated tables: 50k lines")
    full = json.loads(review(repo, "--base", base, "--format", "json").stdout)
    assert full["files"] == 50 and full["added_lines"] == 50_000 and not full["skipped"]
    print(f"50k added lines reviewed in {full['seconds']:.2f} s")
    result = review(repo, "--base", base, "--format", "json", "--max-seconds", "0.001")
    report = json.loads(result.stdout)
    assert report["files"] >= 1 and report["skipped"]  # a partial result, and what it left out
    assert report["files"] + len(report["skipped"]) == 50
    assert all(s["why"] == "time budget reached" for s in report["skipped"])


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_environment_errors_are_one_translated_line(repo: Path, tmp_path: Path, lang: str) -> None:
    not_git = tmp_path / "plain"
    not_git.mkdir()
    assert_one_line_error(zhiyin("review", "--repo", str(not_git), lang=lang, tmp_home=tmp_path / "c"), lang, "git")
    assert_one_line_error(review(repo, "--base", "origin/no-such-branch", lang=lang), lang, "origin/no-such-branch",
                          "fetch")


def test_the_model_pass_keeps_only_valid_findings() -> None:
    from zhiyin.review_model import parse_findings

    added = {10, 11}
    good = '{"findings": [{"line": 11, "severity": "warning", "category": "bug", "message": "off by one"}]}'
    assert [(f.start_line, f.severity, f.message) for f in parse_findings(good, "a.py", added)] == \
        [(11, "warning", "off by one")]
    broken = 'Sure! {"findings": [{"line": 10, "severity": "urgent", "category": "oops", "message": "leak",}'
    [repaired] = parse_findings(broken, "a.py", added)  # repaired JSON; unknown labels fall back
    assert (repaired.severity, repaired.category) == ("note", "bug")
    for answer in ('{"findings": [{"line": 99, "message": "x"}]}', "I think the code is fine.", "",
                   '{"findings": [{"line": "10", "message": ""}]}', "[1, 2, 3]"):
        assert parse_findings(answer, "a.py", added) == []


def test_the_model_reviews_hunks_and_learn_remembers_the_fix_commits(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD").strip()
    append(repo / "pathspec" / "util.py", "\n\n" + BUGGY)
    commit(repo, "Add last_pattern")
    (repo / "pathspec" / "util.py").write_text(
        (repo / "pathspec" / "util.py").read_text(encoding="utf-8").replace(BUGGY, FIXED), encoding="utf-8")
    commit(repo, "Fix off-by-one in last_pattern")
    result = review(repo, "--base", base, "--format", "json", "--with-model", "--learn", "--fail-on", "error")
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    added = {line for f in report["findings"] for line in range(f["start_line"], f["end_line"] + 1)}
    text = (repo / "pathspec" / "util.py").read_text(encoding="utf-8").split("\n")
    assert all(text[line - 1].strip() for line in added)  # whatever the model said, it points at real lines
    assert "1 fix commits" in result.stderr
    listing = zhiyin("memory", "list", "--status", "pending", "--json", "--repo", str(repo), tmp_home=repo.parent / "config",
                     env={"XDG_DATA_HOME": str(repo.parent / "data")})
    assert "Fix off-by-one in last_pattern" in listing.stdout
