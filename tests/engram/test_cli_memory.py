"""`zhiyin memory …` as a user runs it, in both languages, against the store in a private data dir."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.test_cli import CJK, assert_one_line_error, zhiyin


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "AGENTS.md").write_text("# Rules\n\n- Money is stored in integer cents.\n", encoding="utf-8")
    subprocess.run(["git", "-C", str(root), "init", "-q"], check=True)
    return root


def memory(repo: Path, *args: str, lang: str = "en"):
    env = {"XDG_DATA_HOME": str(repo.parent / "data"), "XDG_CACHE_HOME": str(repo.parent / "cache")}
    return zhiyin("memory", *args, "--repo", str(repo), lang=lang, env=env, tmp_home=repo.parent / "config")


def test_a_memory_is_added_found_corrected_and_forgotten(repo: Path) -> None:
    added = memory(repo, "add", "Use structlog for logging, never print.", "--why", "logs are parsed",
                   "--glob", "src/**/*.py")
    assert added.returncode == 0, added.stderr
    assert "Remembered as #1." in added.stdout
    learned = memory(repo, "learn", "--no-git")
    assert "1 conventions from rule files" in learned.stdout, learned.stdout

    found = memory(repo, "search", "日志用什么库？", "--json")  # a Chinese question, an English memory
    assert found.returncode == 0, found.stderr
    hits = [json.loads(line) for line in found.stdout.splitlines()]
    assert hits[0]["statement"] == "Use structlog for logging, never print."

    edited = memory(repo, "edit", "1", "--statement", "Use structlog for logging; print only in scripts/.")
    assert "replaces #1" in edited.stdout, edited.stdout
    listing = memory(repo, "list", "--json")
    statements = [json.loads(line)["statement"] for line in listing.stdout.splitlines()]
    assert "Use structlog for logging; print only in scripts/." in statements
    assert "Use structlog for logging, never print." not in statements  # superseded: history, not listed
    history = memory(repo, "list", "--status", "superseded", "--json")
    assert "never print" in history.stdout

    shown = memory(repo, "show", "1", lang="zh_CN")
    assert "status:superseded" in shown.stdout and CJK.search(shown.stdout)
    forgotten = memory(repo, "forget", "1", lang="zh_CN")
    assert forgotten.returncode == 0 and CJK.search(forgotten.stdout)
    assert "never print" not in memory(repo, "list", "--status", "superseded", "--json").stdout


def test_export_and_import_round_trip_and_render_for_other_tools(repo: Path, tmp_path: Path) -> None:
    memory(repo, "add", "API handlers return pydantic models.", "--kind", "decision", "--glob", "api/**")
    memory(repo, "add", "Answer in Chinese.", "--kind", "preference", "--user")
    exported = tmp_path / "memories.jsonl"
    assert memory(repo, "export", "-o", str(exported)).returncode == 0
    lines = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
    assert {m["statement"] for m in lines} == {"API handlers return pydantic models.", "Answer in Chinese."}

    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "-C", str(other), "init", "-q"], check=True)
    env_other = {"XDG_DATA_HOME": str(tmp_path / "data2")}
    imported = zhiyin("memory", "import", str(exported), "--repo", str(other), env=env_other, tmp_home=tmp_path / "c")
    assert "2 memories imported" in imported.stdout, imported.stderr
    agents = zhiyin("memory", "export", "--format", "agents-md", "--repo", str(other), env=env_other,
                    tmp_home=tmp_path / "c")
    assert "## Decisions" in agents.stdout and "- API handlers return pydantic models." in agents.stdout
    rules = zhiyin("memory", "export", "--format", "cursor-rules", "-o", str(other / ".cursor" / "rules"),
                   "--repo", str(other), env=env_other, tmp_home=tmp_path / "c")
    assert rules.returncode == 0, rules.stderr
    mdc = "\n".join(p.read_text(encoding="utf-8") for p in (other / ".cursor" / "rules").glob("*.mdc"))
    assert "globs: api/**" in mdc and "alwaysApply: true" in mdc


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_user_errors_are_one_translated_line(repo: Path, lang: str, tmp_path: Path) -> None:
    assert_one_line_error(memory(repo, "show", "42", lang=lang), lang, "42")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"kind": "convention", "statement": "ok"}\n{"kind": "opinion"}\n', encoding="utf-8")
    assert_one_line_error(memory(repo, "import", str(broken), lang=lang), lang, "broken.jsonl", "2")
    assert_one_line_error(memory(repo, "add", " ", lang=lang), lang)
