"""Where memories come from: rule files and git history, learned into a real store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engram.git_history import fix_drafts
from engram.rule_files import drafts_from_rule_file, parse_rules, rule_files
from zhiyin.memory import draft_from_chat, learn, open_memory

AGENTS = """# Agent guide

Read this before you change anything.

## Style

- Use `pathlib.Path` for paths.
- Keep functions under 40 lines;
  split them otherwise.

```python
- this is code, not a rule
```

## Commits

1. Commit messages follow Conventional Commits.
"""

CURSOR_RULE = """---
description: API handlers
globs: src/api/**/*.py, src/api/**/*.pyi
alwaysApply: false
---

- Handlers return pydantic models, never dicts.
"""

CONTINUE_RULE = """---
name: 前端
globs: ["web/**/*.tsx"]
---

组件一律使用函数组件和 hooks，不要写 class 组件。
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(root), "PATH": "/usr/bin:/bin"},
                          ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".cursor" / "rules").mkdir(parents=True)
    (root / ".continue" / "rules").mkdir(parents=True)
    (root / "AGENTS.md").write_text(AGENTS, encoding="utf-8")
    (root / ".cursor" / "rules" / "api.mdc").write_text(CURSOR_RULE, encoding="utf-8")
    (root / ".continue" / "rules" / "web.md").write_text(CONTINUE_RULE, encoding="utf-8")
    (root / "pay.py").write_text("def total(items):\n    return sum(i.price for i in items)\n", encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "Start the shop")
    return root


def test_rules_are_list_items_and_paragraphs_not_code_or_headings() -> None:
    rules = parse_rules(AGENTS.split("\n"))
    assert [r.text for r in rules] == [
        "Read this before you change anything.", "Use `pathlib.Path` for paths.",
        "Keep functions under 40 lines; split them otherwise.", "Commit messages follow Conventional Commits."]
    assert [(r.heading, r.start_line, r.end_line) for r in rules][2] == ("Style", 8, 9)


def test_rule_files_give_conventions_with_globs_and_citations(repo: Path) -> None:
    assert [p.relative_to(repo).as_posix() for p in rule_files(repo)] == [
        "AGENTS.md", ".cursor/rules/api.mdc", ".continue/rules/web.md"]
    cursor = drafts_from_rule_file(repo, repo / ".cursor" / "rules" / "api.mdc")
    assert [(d.statement, d.globs) for d in cursor] == [
        ("Handlers return pydantic models, never dicts.", ("src/api/**/*.py", "src/api/**/*.pyi"))]
    web = drafts_from_rule_file(repo, repo / ".continue" / "rules" / "web.md")
    assert web[0].globs == ("web/**/*.tsx",) and "hooks" in web[0].statement
    assert web[0].citations[0].file == ".continue/rules/web.md" and web[0].citations[0].start_line == 6


def test_fix_commits_become_fix_memories_with_the_code_shape(repo: Path) -> None:
    (repo / "pay.py").write_text("def total(items):\n    return sum(i.price * i.quantity for i in items)\n",
                                 encoding="utf-8")
    git(repo, "commit", "-q", "-am", "Fix totals ignoring the quantity\n\nOrders of 3 were billed as 1.")
    (repo / "README.md").write_text("shop\n", encoding="utf-8")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Add a readme")
    drafts = fix_drafts(repo)
    assert len(drafts) == 1
    fix = drafts[0]
    assert fix.kind == "fix" and fix.statement == "Fix totals ignoring the quantity"
    assert fix.rationale == "Orders of 3 were billed as 1."
    assert "i.price for i" in fix.how_to_apply and "i.price * i.quantity" in fix.how_to_apply
    assert fix.globs == ("pay.py",)
    citation = fix.citations[0]
    assert citation.source == "git_commit" and citation.file == "pay.py" and (citation.start_line, citation.end_line) == (2, 2)
    assert len(citation.commit) == 40


def test_learn_twice_supersedes_rewritten_rules_and_reads_only_new_commits(repo: Path, tmp_path: Path) -> None:
    memory = open_memory(repo, embeddings=False, path=tmp_path / "engram.db")
    first = learn(memory)
    assert sum(r.action == "added" for r in first.rules) == 6 and first.fixes == []
    (repo / "AGENTS.md").write_text(AGENTS.replace("Use `pathlib.Path` for paths.", "Use `os.path` for paths.")
                                    .replace("1. Commit messages follow Conventional Commits.\n", ""), encoding="utf-8")
    (repo / "pay.py").write_text("def total(items):\n    return round(sum(i.price for i in items), 2)\n",
                                 encoding="utf-8")
    git(repo, "commit", "-q", "-am", "修复金额的浮点误差")
    second = learn(memory)
    assert [r.action for r in second.rules].count("superseded") == 1 and second.rules_retired == 1
    assert [memory.store.get(r.id).status for r in second.fixes] == ["pending"]  # inferred: to approve
    active = {m.statement for m in memory.store.list(memory.repo, statuses=["active"])}
    assert "Use `os.path` for paths." in active and "Use `pathlib.Path` for paths." not in active
    assert learn(memory).fixes == []  # nothing new since
    memory.store.close()


@pytest.mark.parametrize(("message", "statement", "scope"), [
    ("Remember that the staging database is read-only.", "the staging database is read-only.", "repository"),
    ("please remember: I prefer pytest fixtures over setUp", "I prefer pytest fixtures over setUp", "user"),
    ("记住：金额一律用整数分存储", "金额一律用整数分存储", "repository"),
    ("请记住我喜欢用中文回答", "我喜欢用中文回答", "user"),
    ("How do I remember the user's choice?", None, None),  # a question, not a request
    ("记住", None, None),
])
def test_only_explicit_requests_in_chat_become_memories(message: str, statement, scope) -> None:
    draft = draft_from_chat(message)
    assert (draft.statement, draft.scope) == (statement, scope) if statement else draft is None
