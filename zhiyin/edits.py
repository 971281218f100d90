"""Repository edits: per-file replacements made against a known text, checked before anything lands.

An edit carries the hash of the text it was made against and applies to that text only. Checking
refuses, per file: a path that resolves outside the workspace (`..`, absolute, through a symlink),
a file changed since the edit was proposed, replacements that overlap or fall outside the text,
and a result that no longer parses. A plan lands whole or not at all: half a rename is broken code.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from indexer.languages import GRAMMARS, language_for_path, parser_for
from zhiyin.i18n import N_, _

MSG_OUTSIDE = N_("it lies outside the workspace")
MSG_UNREADABLE = N_("it cannot be read as UTF-8 text")
MSG_CHANGED = N_("it changed after the edit was proposed")
MSG_BAD_REPLACEMENTS = N_("the replacements overlap or fall outside the file")
MSG_BREAKS_SYNTAX = N_("the edited file would no longer parse")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Replacement:
    start: int  # code point offsets into the base text
    end: int
    new_text: str


@dataclass(frozen=True)
class FileEdit:
    path: str  # relative to the workspace root, POSIX separators
    base_hash: str  # text_hash of the text the offsets index into
    replacements: tuple[Replacement, ...]  # sorted by start, not overlapping

    def apply(self, text: str) -> str:
        out, position = [], 0
        for r in self.replacements:
            out += [text[position : r.start], r.new_text]
            position = r.end
        return "".join(out) + text[position:]

    def fits(self, text: str) -> bool:
        position = 0
        for r in self.replacements:
            if not position <= r.start <= r.end <= len(text):
                return False
            position = r.end
        return True


@dataclass
class EditPlan:
    instruction: str
    edits: list[FileEdit] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # path -> why it has no edit, translated

    def to_json(self) -> dict[str, Any]:
        return {"instruction": self.instruction, "problems": self.problems, "edits": [
            {"path": e.path, "baseHash": e.base_hash,
             "replacements": [[r.start, r.end, r.new_text] for r in e.replacements]} for e in self.edits]}

    @classmethod
    def from_json(cls, data: Any) -> EditPlan:
        """The plan `to_json` wrote; ValueError when `data` is not one."""
        try:
            edits = [FileEdit(str(e["path"]), str(e["baseHash"]),
                              tuple(Replacement(int(s), int(t), str(n)) for s, t, n in e["replacements"]))
                     for e in data["edits"]]
            return cls(str(data.get("instruction", "")), edits, {str(k): str(v) for k, v in
                                                                 dict(data.get("problems", {})).items()})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an edit plan: {e}") from e


@dataclass(frozen=True)
class CheckedEdit:
    edit: FileEdit
    path: Path  # absolute, inside the workspace
    old_text: str
    new_text: str

    def unified_diff(self, context: int = 3) -> str:
        return "".join(difflib.unified_diff(self.old_text.splitlines(keepends=True),
                                            self.new_text.splitlines(keepends=True),
                                            f"a/{self.edit.path}", f"b/{self.edit.path}", n=context))


def disk_text(path: Path) -> str:
    """A file's text exactly as stored (line endings kept: a plan's offsets index into it)."""
    return path.read_bytes().decode("utf-8")


def workspace_path(root: Path, relative: str) -> Path | None:
    """The file `relative` names inside `root`, links resolved; None when it lies outside."""
    if not relative or PurePosixPath(relative).is_absolute() or Path(relative).is_absolute():
        return None
    root = root.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path != root else None


def check_plan(plan: EditPlan, root: Path, read_text: Callable[[Path], str],
               ) -> tuple[list[CheckedEdit], dict[str, str]]:
    """Each edit checked against the file's current text (`read_text`: the editor's copy if open,
    else the disk's; raises OSError or UnicodeDecodeError): those that pass, and per path why the
    others fail."""
    checked, problems = [], {}
    for edit in plan.edits:
        path = workspace_path(root, edit.path)
        if path is None:
            problems[edit.path] = _(MSG_OUTSIDE)
            continue
        try:
            text = read_text(path)
        except (OSError, UnicodeDecodeError):
            problems[edit.path] = _(MSG_UNREADABLE)
            continue
        if text_hash(text) != edit.base_hash:
            problems[edit.path] = _(MSG_CHANGED)
        elif not edit.fits(text):
            problems[edit.path] = _(MSG_BAD_REPLACEMENTS)
        else:
            new_text = edit.apply(text)
            if breaks_syntax(edit.path, text, new_text):
                problems[edit.path] = _(MSG_BREAKS_SYNTAX)
            else:
                checked.append(CheckedEdit(edit, path, text, new_text))
    return checked, problems


def breaks_syntax(path: str, old_text: str, new_text: str) -> bool:
    """Whether tree-sitter finds errors in `new_text` that `old_text` did not have (a file that
    was already broken only has to stay no worse)."""
    language = language_for_path(path)
    if language not in GRAMMARS:
        return False
    parser = parser_for(language)
    old_errors = parser.parse(old_text.encode("utf-8", "surrogatepass")).root_node.has_error
    return not old_errors and parser.parse(new_text.encode("utf-8", "surrogatepass")).root_node.has_error


def write_edits(checked: list[CheckedEdit]) -> None:
    """Writes the edited files to disk, all or none as far as the file system allows: every new
    text goes to a temporary file beside its target first (a full disk fails here, before any
    file changed), then each replaces its target atomically, keeping the file's mode."""
    staged: list[tuple[Path, Path]] = []
    try:
        for c in checked:
            fd, temp = tempfile.mkstemp(prefix=f".{c.path.name}.", suffix=".zhiyin", dir=c.path.parent)
            staged.append((Path(temp), c.path))
            with os.fdopen(fd, "wb") as f:
                f.write(c.new_text.encode("utf-8", "surrogatepass"))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temp, c.path.stat().st_mode & 0o7777)
    except BaseException:
        for temp, _target in staged:
            temp.unlink(missing_ok=True)
        raise
    for temp, target in staged:
        os.replace(temp, target)
