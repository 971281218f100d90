"""Past fixes from git history: each fix commit becomes a `fix` memory, pending until approved.

A commit is a fix when its subject says so (fix, bug, regression, crash, 修复, 修正 …). The memory
keeps the subject as the statement, the message body as the rationale, the shape of the buggy and
the fixed code (the first hunk's removed and added lines) as how to apply it, the changed files as
its globs, and the commit plus the fixed lines as evidence: when those lines change later, recall
marks the memory stale.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engram.records import Citation, MemoryDraft
from engram.store import lines_hash

FIX_SUBJECT = re.compile(r"\b(?:fix(?:e[sd])?|bug(?:fix)?|hotfix|regression|crash(?:es)?)\b|修复|修正|解决.*问题",
                         re.IGNORECASE)
DEFAULT_DEPTH = 200  # commits read when no starting point is known
SHAPE_LINES = 6  # removed / added lines kept as the fix's shape
MAX_FILES_AS_GLOBS = 5
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class Hunk:
    path: str
    new_start: int  # 1-based line of the first added line in the fixed file
    removed: list[str]
    added: list[str]


def head_commit(root: Path) -> str | None:
    out = _git(root, "rev-parse", "--verify", "HEAD")
    return out.strip() or None


def fix_drafts(root: Path, since: str | None = None, until: str = "HEAD") -> list[MemoryDraft]:
    """Fix memories from the commits after `since` (a ref, or a date such as "2 weeks ago") up to
    `until`; the last DEFAULT_DEPTH commits when None. Oldest first, so newer fixes supersede."""
    if since is None:
        selection = ["-n", str(DEFAULT_DEPTH), until]
    elif _git(root, "rev-parse", "--verify", "--quiet", f"{since}^{{commit}}").strip():
        selection = [f"{since}..{until}"]
    else:
        selection = [f"--since={since}", until]
    log = _git(root, "log", "--no-merges", "--reverse", "--format=%H%x00%s%x00%b%x1e", *selection)
    drafts = []
    for record in log.split("\x1e"):
        if not record.strip():
            continue
        sha, subject, body = (record.strip("\n").split("\x00") + ["", ""])[:3]
        if FIX_SUBJECT.search(subject):
            drafts.append(_draft(root, sha, subject.strip(), body.strip()))
    return drafts


def fix_shape(how_to_apply: str) -> tuple[list[str], list[str]] | None:
    """(buggy lines, fixed lines) of a fix memory's how_to_apply, as `fix_drafts` writes it."""
    if not how_to_apply.startswith("Before:\n") or "\nAfter:\n" not in how_to_apply:
        return None
    before, after = how_to_apply[len("Before:\n"):].split("\nAfter:\n", 1)
    return before.split("\n") if before else [], after.split("\n") if after else []


def _draft(root: Path, sha: str, subject: str, body: str) -> MemoryDraft:
    hunks = _hunks(_git(root, "show", "--format=", "--unified=0", "--no-color", "--no-ext-diff", sha))
    citations = []
    shape = ""
    if hunks:
        first = next((h for h in hunks if h.added), hunks[0])
        shape = "Before:\n" + "\n".join(first.removed[:SHAPE_LINES]) + "\nAfter:\n" + "\n".join(first.added[:SHAPE_LINES])
        if first.added:
            fixed = _git(root, "show", f"{sha}:{first.path}").split("\n")
            end = first.new_start + len(first.added) - 1
            citations.append(Citation("git_commit", first.path, first.new_start, end, sha,
                                      lines_hash(fixed[first.new_start - 1 : end])))
    if not citations:
        citations.append(Citation("git_commit", commit=sha))
    paths = tuple(dict.fromkeys(h.path for h in hunks))[:MAX_FILES_AS_GLOBS]
    return MemoryDraft(kind="fix", statement=subject, rationale=body.split("\n\n")[0][:1000],
                       how_to_apply=shape, globs=paths, citations=tuple(citations))


def _hunks(diff: str) -> list[Hunk]:
    hunks: list[Hunk] = []
    path = None
    for line in diff.split("\n"):
        if line.startswith("+++ "):
            path = line[6:] if line.startswith("+++ b/") else None
        elif (m := _HUNK.match(line)) and path is not None:
            hunks.append(Hunk(path, int(m.group(1)), [], []))
        elif hunks and path is not None and hunks[-1].path == path:
            if line.startswith("-") and not line.startswith("---"):
                hunks[-1].removed.append(line[1:])
            elif line.startswith("+"):
                hunks[-1].added.append(line[1:])
    return hunks


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60, check=False,
                              errors="replace").stdout
    except (OSError, subprocess.SubprocessError):
        return ""
