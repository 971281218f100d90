"""`zhiyin review`'s core: the findings for a change, within a time budget.

Conventions come from the rule files in the repository (read at review time: a CI container has
no memory store of its own) and from the project memory's active conventions; past fixes from the
fix commits in the history before the change and from the memory's fix memories. Files that cannot
be reviewed (binary, deleted, past the time budget) are reported as skipped, with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.prompt import TextModel
from engram.git_history import fix_drafts, fix_shape
from engram.rule_files import drafts_from_rule_file, rule_files
from indexer.index import Index
from zhiyin.diffs import FileChange
from zhiyin.findings import Finding
from zhiyin.i18n import N_, _
from zhiyin.memory import RepositoryMemory
from zhiyin.review_checks import (
    Convention,
    PastFix,
    convention_findings,
    past_fix_findings,
)
from zhiyin.review_model import model_findings

REVIEW_RULES = ".zhiyin/review.md"  # review-only rules, besides the rule files every tool reads

SKIP_BINARY = N_("binary file")
SKIP_DELETED = N_("deleted")
SKIP_BUDGET = N_("time budget reached")
SKIP_MODEL_BUDGET = N_("time budget reached before the model reviewed this hunk")


@dataclass
class ReviewResult:
    base: str
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    added_lines: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why: translated)
    seconds: float = 0.0


def review(root: Path, changes: list[FileChange], base: str, *, memory: RepositoryMemory | None = None,
           max_seconds: float | None = None, engine: TextModel | None = None,
           index: Index | None = None) -> ReviewResult:
    """The findings for `changes`; with `engine`, the model's too (hunk by hunk, with `index`'s
    context). Once `max_seconds` of reviewing have passed (checked between files and hunks: the
    first file is always reviewed), what remains is skipped and listed."""
    started = time.perf_counter()
    result = ReviewResult(base)
    conventions = project_conventions(root, memory)
    fixes = past_fixes(root, base, memory)
    reviewing = time.perf_counter()
    for change in changes:
        if change.binary:
            result.skipped.append((change.path, _(SKIP_BINARY)))
            continue
        if change.status == "deleted":
            result.skipped.append((change.path, _(SKIP_DELETED)))
            continue
        if max_seconds is not None and time.perf_counter() - reviewing > max_seconds:
            result.skipped.append((change.path, _(SKIP_BUDGET)))
            continue
        result.files += 1
        result.added_lines += change.added_lines
        result.findings += convention_findings(change, conventions)
        result.findings += past_fix_findings(change, fixes)
        if engine is not None:
            for hunk in change.hunks:
                if max_seconds is not None and time.perf_counter() - reviewing > max_seconds:
                    result.skipped.append((f"{change.path}:{hunk.new_start}", _(SKIP_MODEL_BUDGET)))
                    continue
                result.findings += model_findings(engine, change, hunk, index)
    result.findings.sort(key=lambda f: (f.path, f.start_line, f.rule_id))
    result.seconds = time.perf_counter() - started
    return result


def project_conventions(root: Path, memory: RepositoryMemory | None) -> list[Convention]:
    """The rules in the repository's rule files, then the memory's active conventions."""
    conventions: dict[str, Convention] = {}
    paths = rule_files(root)
    if (root / REVIEW_RULES).is_file():
        paths.append(root / REVIEW_RULES)
    for path in paths:
        for draft in drafts_from_rule_file(root, path):
            cite = draft.citations[0]
            conventions.setdefault(draft.statement, Convention(draft.statement, f"{cite.file}:{cite.start_line}",
                                                               draft.globs))
    if memory is not None:
        for m in memory.store.list(memory.repo, statuses=["active"]):
            if m.kind in ("convention", "gotcha", "preference"):
                conventions.setdefault(m.statement, Convention(m.statement, f"memory #{m.id}", m.globs))
    return list(conventions.values())


def past_fixes(root: Path, base: str, memory: RepositoryMemory | None) -> list[PastFix]:
    """Fixes made before the change: fix commits up to `base`, and the memory's fix memories."""
    fixes: dict[str, PastFix] = {}
    drafts = [(d.statement, d.citations[0].commit or "", d.how_to_apply) for d in fix_drafts(root, until=base)]
    if memory is not None:
        drafts += [(m.statement, next((c.commit for c in m.citations if c.commit), f"memory-{m.id}"), m.how_to_apply)
                   for m in memory.store.list(memory.repo, statuses=["active", "pending"], kind="fix")]
    for subject, commit, how in drafts:
        shape = fix_shape(how)
        if shape is not None and any(line.strip() for line in shape[0]):
            fixes.setdefault(commit, PastFix(subject, commit, tuple(shape[0]), tuple(shape[1])))
    return list(fixes.values())
