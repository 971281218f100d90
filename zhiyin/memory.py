"""The project memory as the app core uses it: opened for a repository, learned from its sources,
recalled for a request and placed in a prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from engine.embedder import load_embedder
from engram.git_history import fix_drafts, head_commit
from engram.records import AddResult, Citation, MemoryDraft
from engram.repository import repository_key
from engram.rule_files import drafts_from_rule_file, rule_files
from engram.store import MemoryStore, lines_hash
from zhiyin.config import load_config
from zhiyin.i18n import N_

MAX_STATEMENT_CHARS = 600
MAX_FILES_AS_GLOBS = 5
_COMMENT_MARK = re.compile(r"^\s*(?:#+|//+|/\*+|\*+/?|--|;+)\s?")

_REMEMBER = re.compile(
    r"^(?:please\s+)?(?:remember|keep in mind|note)(?:\s+that)?\s*[:：,，]?\s*(?P<what>.+)$"
    r"|^(?:请)?(?:记住|记一下|记下)(?:一下)?\s*[:：,，]?\s*(?P<what_zh>.+)$", re.IGNORECASE | re.DOTALL)
_ABOUT_ME = re.compile(r"^(?:I |I'm |my |me )|^我", re.IGNORECASE)

MSG_MOVED_ASIDE = N_("The project memory file was damaged; it was moved to {path} and a new one started. "
                     "`zhiyin memory import` restores an export.")


@dataclass
class RepositoryMemory:
    """The store, and which repository of it the current work is about."""

    store: MemoryStore
    repo: str
    root: Path


@dataclass
class LearnReport:
    rules: list[AddResult] = field(default_factory=list)
    fixes: list[AddResult] = field(default_factory=list)
    rules_retired: int = 0  # rule memories whose rule is no longer in its file


def open_memory(root: Path, *, embeddings: bool = True, path: Path | None = None) -> RepositoryMemory:
    """The memory store (user data dir unless `path`), with the configured embedder unless turned off."""
    name = load_config(root).index.embedder
    store = MemoryStore.open(path, embedder=(lambda: load_embedder(name)) if embeddings else None)
    return RepositoryMemory(store, repository_key(root), root)


def learn(memory: RepositoryMemory, *, rules: bool = True, git: bool = True, since: str | None = None) -> LearnReport:
    """Conventions from the rule files (active: the team wrote them) and fixes from git history
    since `since`, else since the last commit learned (pending: inferred, to be approved)."""
    report = LearnReport()
    store, repo = memory.store, memory.repo
    if rules:
        drafts = [draft for path in rule_files(memory.root) for draft in drafts_from_rule_file(memory.root, path)]
        report.rules = store.add_many(drafts, repo, status="active", source="rule_file")
        current_topics = {draft.topic for draft in drafts}
        for old in store.list(repo, statuses=("active", "stale")):
            if old.topic and old.topic.startswith("rule:") and old.topic not in current_topics:
                store.set_status(old.id, "superseded", "rule removed from its file")
                report.rules_retired += 1
    if git:
        key = f"learned:{repo}"
        start = since or store.meta(key)
        report.fixes = store.add_many(fix_drafts(memory.root, start), repo, status="pending", source="git_commit")
        if (head := head_commit(memory.root)) is not None:
            store.set_meta(key, head)
    return report


def convention_from_code(path: str, lines: list[str], start_line: int) -> MemoryDraft:
    """A convention the user pointed at in a file: the selected lines (comment markers dropped when
    the selection is a comment), cited by their place and content, for files of the same kind."""
    stripped = [_COMMENT_MARK.sub("", line) for line in lines]
    is_comment = all(_COMMENT_MARK.match(line) or not line.strip() for line in lines)
    statement = " ".join(part.strip() for part in (stripped if is_comment else lines) if part.strip())
    if len(statement) > MAX_STATEMENT_CHARS:
        statement = statement[: MAX_STATEMENT_CHARS - 1] + "…"
    suffix = PurePosixPath(path).suffix
    end_line = start_line + len(lines) - 1
    return MemoryDraft(
        kind="convention", statement=statement,
        how_to_apply="" if is_comment else f"Follow the pattern of {path}:{start_line}-{end_line}.",
        globs=(f"**/*{suffix}",) if suffix else (),
        citations=(Citation("user", path, start_line, end_line, None, lines_hash(lines)),))


def draft_from_chat(message: str) -> MemoryDraft | None:
    """The memory a chat message asks to keep in so many words ("remember that …", "记住：…"),
    else None: nothing said in chat is stored without being asked."""
    m = _REMEMBER.match(message.strip())
    what = ((m.group("what") or m.group("what_zh") or "") if m else "").strip()
    if not what:
        return None
    scope = "user" if _ABOUT_ME.search(what) else "repository"
    return MemoryDraft(kind="preference" if scope == "user" else "convention", statement=what, scope=scope,
                       citations=(Citation("chat"),))


def remember(memory: RepositoryMemory, draft: MemoryDraft, *, source: str = "user") -> AddResult:
    """A memory the user asked for in so many words: active at once."""
    return memory.store.add(draft, memory.repo, status="active", source=source)


def record_accepted_edit(memory: RepositoryMemory, instruction: str, files: list[str]) -> AddResult:
    """An edit the user accepted says something about how the project goes: kept as a pending
    decision (inferred, so it waits for approval), citing the files it touched."""
    draft = MemoryDraft(kind="decision", statement=instruction, globs=tuple(files[:MAX_FILES_AS_GLOBS]),
                        citations=tuple(Citation("accepted_edit", path) for path in files[:MAX_FILES_AS_GLOBS]))
    return memory.store.add(draft, memory.repo, status="pending", source="accepted_edit")
