"""What a user attaches to a chat message, made into sources for the turn: `@file` (whole or a
line range), `@symbol` (its definitions, from the index), a selection (text the editor sent) and
`#codeChanges` (the work tree's uncommitted changes).

Files are read only inside the workspace, as UTF-8 text; what cannot be attached is reported by
name and reason, translated, and the turn goes on without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EngineError
from indexer.index import Index
from zhiyin.chat import MAX_SOURCE_CHARS, Attachment
from zhiyin.diffs import read_diff
from zhiyin.edits import workspace_path
from zhiyin.i18n import N_, _, translate_error

MAX_FILE_BYTES = 256 << 10
MAX_DEFINITIONS = 3
CHANGES_LABEL = "git diff HEAD"

MSG_NOT_A_FILE = N_("{path}: no such file in the workspace")
MSG_NOT_TEXT = N_("{path}: not a UTF-8 text file, or larger than 256 KiB")
MSG_NO_SYMBOL = N_("{name}: nothing of that name is indexed")
MSG_NO_INDEX = N_("{name}: the repository is not indexed yet")
MSG_NO_CHANGES = N_("recent changes: {error}")


@dataclass
class AttachRequest:
    """What the message asked for, as parsed from the protocol."""

    files: list[tuple[str, int | None, int | None]] = field(default_factory=list)  # path, first, last line
    symbols: list[str] = field(default_factory=list)
    selections: list[Attachment] = field(default_factory=list)
    changes: bool = False


def gather(request: AttachRequest, root: Path | None, index: Index | None) -> tuple[list[Attachment], list[str]]:
    """The attachments, and what could not be attached (translated, one line each)."""
    attached, problems = list(request.selections), []
    for path, first, last in request.files:
        got = attach_file(root, path, first, last)
        attached.append(got) if isinstance(got, Attachment) else problems.append(got)
    for name in request.symbols:
        if index is None:
            problems.append(_(MSG_NO_INDEX).format(name=name))
            continue
        definitions = index.definitions(name)[:MAX_DEFINITIONS]
        if not definitions:
            problems.append(_(MSG_NO_SYMBOL).format(name=name))
        for d in definitions:
            got = attach_file(root, d.path, d.line, d.end_line)
            attached.append(got) if isinstance(got, Attachment) else problems.append(got)
    if request.changes and root is not None:
        try:
            attached.append(Attachment(CHANGES_LABEL, _changes_text(root)))
        except EngineError as e:
            problems.append(_(MSG_NO_CHANGES).format(error=translate_error(e)))
    return attached, problems


def attach_file(root: Path | None, relative: str, first: int | None, last: int | None) -> Attachment | str:
    path = workspace_path(root, relative) if root is not None else None
    if path is None or not path.is_file():
        return _(MSG_NOT_A_FILE).format(path=relative)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError
        lines = path.read_bytes().decode("utf-8").split("\n")
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return _(MSG_NOT_TEXT).format(path=relative)
    start = max(1, first or 1)
    end = min(len(lines), last or len(lines))
    return Attachment(path.relative_to(root.resolve()).as_posix(), "\n".join(lines[start - 1 : end]), start)


def _changes_text(root: Path) -> str:
    """The uncommitted changes as a compact diff: per file, removed lines `-`, added lines `+`."""
    parts = []
    for change in read_diff(root, worktree=True):
        parts.append(f"--- {change.path} ({change.status})")
        for hunk in change.hunks:
            parts += [f"-{line}" for line in hunk.removed] + [f"+{line}" for _n, line in hunk.added]
        if sum(map(len, parts)) > MAX_SOURCE_CHARS:
            break
    return "\n".join(parts) or "(no uncommitted changes)"
