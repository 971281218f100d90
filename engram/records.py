"""What the project memory holds: memories, where each came from, and what recall returns."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("convention", "decision", "fix", "preference", "gotcha")
SCOPES = ("repository", "user")
STATUSES = ("active", "pending", "superseded", "stale", "rejected")
SOURCES = ("rule_file", "git_commit", "user", "chat", "accepted_edit", "review", "import")
PURPOSES = ("chat", "completion", "review")  # what recall is for: each has its budget
USER_PARTITION = "~user"  # the partition of memories scoped to the user, recalled in every repository


@dataclass(frozen=True)
class Citation:
    """Evidence for a memory: a source, and where applicable the lines it rests on."""

    source: str  # one of SOURCES
    file: str | None = None  # relative to the repository root
    start_line: int | None = None  # 1-based, inclusive
    end_line: int | None = None
    commit: str | None = None
    lines_hash: str | None = None  # of the cited lines when recorded: recall re-checks it


@dataclass(frozen=True)
class MemoryDraft:
    """A memory before it is stored: the store redacts, deduplicates and files it."""

    kind: str
    statement: str
    rationale: str = ""
    how_to_apply: str = ""
    globs: tuple[str, ...] = ()
    scope: str = "repository"
    importance: float = 0.5  # 0..1
    citations: tuple[Citation, ...] = ()
    topic: str | None = None  # a newer memory on the same topic supersedes the older (e.g. a rule's heading)


@dataclass(frozen=True)
class Memory:
    id: int
    repo: str
    kind: str
    scope: str
    statement: str
    rationale: str
    how_to_apply: str
    globs: tuple[str, ...]
    status: str
    importance: float
    use_count: int
    pinned: bool
    valid_from: float
    valid_to: float | None
    created_at: float
    topic: str | None
    superseded_by: int | None
    citations: tuple[Citation, ...] = field(default=())


@dataclass(frozen=True)
class Recalled:
    memory: Memory
    score: float
    stale: bool  # a cited file's lines changed since the memory was made
    legs: tuple[str, ...]  # which searches found it: vector, fts, glob


@dataclass
class AddResult:
    id: int
    action: str  # "added", "duplicate" (an existing memory got the citation), "merged", "superseded"
    redactions: int = 0  # secret spans replaced before storing
    superseded: list[int] = field(default_factory=list)
