"""The project memory as the app core uses it: opened for a repository, learned from its sources,
recalled for a request and placed in a prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.embedder import load_embedder
from engram.git_history import fix_drafts, head_commit
from engram.records import AddResult, MemoryDraft
from engram.repository import repository_key
from engram.rule_files import drafts_from_rule_file, rule_files
from engram.store import MemoryStore
from zhiyin.config import load_config
from zhiyin.i18n import N_

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
        current_topics = set()
        for path in rule_files(memory.root):
            for draft in drafts_from_rule_file(memory.root, path):
                current_topics.add(draft.topic)
                report.rules.append(store.add(draft, repo, status="active", source="rule_file"))
        for old in store.list(repo, statuses=("active", "stale")):
            if old.topic and old.topic.startswith("rule:") and old.topic not in current_topics:
                store.set_status(old.id, "superseded", "rule removed from its file")
                report.rules_retired += 1
    if git:
        key = f"learned:{repo}"
        start = since or store.meta(key)
        for draft in fix_drafts(memory.root, start):
            report.fixes.append(store.add(draft, repo, status="pending", source="git_commit"))
        if (head := head_commit(memory.root)) is not None:
            store.set_meta(key, head)
    return report


def remember(memory: RepositoryMemory, draft: MemoryDraft, *, source: str = "user") -> AddResult:
    """A memory the user asked for in so many words: active at once."""
    return memory.store.add(draft, memory.repo, status="active", source=source)
