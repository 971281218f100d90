"""The change under review, read from git: which files changed and which lines were added.

`read_diff` runs git (base..head, the index, or the work tree) with rename detection and parses the
unified diff. Binary files are kept as such (no lines), non-UTF-8 text is decoded with
replacements and marked, deleted files have no added lines. A missing base in a shallow CI
checkout is a clear error that says how to fetch more history.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import N_, EngineError

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
DEFAULT_BRANCHES = ("origin/HEAD", "origin/main", "origin/master", "main", "master")


class NotAGitRepositoryError(EngineError):
    message = N_("{path} is not inside a git repository. Run `zhiyin review` in a git work tree, or pass --repo.")


class MissingBaseError(EngineError):
    message = N_("The base {ref} is not in this checkout (a shallow clone?). Fetch more history, e.g. "
                 "`git fetch --deepen=100 origin` or `actions/checkout` with `fetch-depth: 0`, or pass --base.")


class GitError(EngineError):
    message = N_("git failed: {detail}")


@dataclass
class Hunk:
    old_start: int
    new_start: int
    added: list[tuple[int, str]] = field(default_factory=list)  # (line in the new file, text)
    removed: list[str] = field(default_factory=list)


@dataclass
class FileChange:
    path: str  # in the new tree (the old path for deletions)
    old_path: str | None = None  # set for renames
    status: str = "modified"  # added, modified, deleted, renamed
    binary: bool = False
    not_utf8: bool = False
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def added_lines(self) -> int:
        return sum(len(h.added) for h in self.hunks)


def merge_base(root: Path, base: str | None) -> str:
    """The commit the change is compared with: `base` as given, else the merge base of HEAD with
    the default branch, else HEAD's parent."""
    _check_repository(root)
    if base is not None:
        if not _git_ok(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"):
            raise MissingBaseError(ref=base)
        return base
    for branch in DEFAULT_BRANCHES:
        if _git_ok(root, "rev-parse", "--verify", "--quiet", branch):
            found = _git(root, "merge-base", "HEAD", branch).strip()
            head = _git(root, "rev-parse", "HEAD").strip()
            if found and found != head:
                return found
    if _git_ok(root, "rev-parse", "--verify", "--quiet", "HEAD~1"):
        return "HEAD~1"
    raise MissingBaseError(ref="HEAD~1")


def read_diff(root: Path, base: str | None = None, head: str | None = None, *, staged: bool = False,
              worktree: bool = False) -> list[FileChange]:
    """The changed files between `base` and `head` (default HEAD), or of the index (`staged`) or the
    work tree (`worktree`) against HEAD or `base`."""
    _check_repository(root)
    args = ["diff", "--no-color", "--no-ext-diff", "--find-renames", "--unified=3"]
    if staged:
        args += ["--cached", base or "HEAD"]
    elif worktree:
        args += [base or "HEAD"]
    else:
        args += [merge_base(root, base), head or "HEAD"]
    raw = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=300, check=False)
    if raw.returncode != 0:
        raise GitError(detail=raw.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or "?")
    return parse_diff(raw.stdout)


def parse_diff(data: bytes) -> list[FileChange]:
    files: list[FileChange] = []
    current: FileChange | None = None
    hunk: Hunk | None = None
    new_line = 0
    for raw in data.split(b"\n"):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", "replace")
            if current is not None:
                current.not_utf8 = True
        if line.startswith("diff --git "):
            current, hunk = FileChange(path=_b_path(line)), None
            files.append(current)
        elif current is None:
            continue
        elif line.startswith("new file mode"):
            current.status = "added"
        elif line.startswith("deleted file mode"):
            current.status = "deleted"
        elif line.startswith("rename from "):
            current.old_path, current.status = line[len("rename from "):], "renamed"
        elif line.startswith("rename to "):
            current.path = line[len("rename to "):]
        elif line.startswith(("Binary files ", "GIT binary patch")):
            current.binary = True
        elif line.startswith(("+++ ", "--- ")):
            continue
        elif m := _HUNK.match(line):
            hunk = Hunk(int(m.group(1)), int(m.group(3)))
            current.hunks.append(hunk)
            new_line = hunk.new_start
        elif hunk is not None and line.startswith("+"):
            hunk.added.append((new_line, line[1:]))
            new_line += 1
        elif hunk is not None and line.startswith("-"):
            hunk.removed.append(line[1:])
        elif hunk is not None and line.startswith(" "):
            new_line += 1
    return files


def _b_path(header: str) -> str:
    """The new path of `diff --git a/x b/x` (quoted paths unquoted)."""
    rest = header[len("diff --git "):]
    half = rest[len(rest) // 2 + 1 :] if rest.count(" b/") != 1 else rest.split(" b/", 1)[1]
    return half.strip('"').removeprefix("b/")


def _check_repository(root: Path) -> None:
    if not _git_ok(root, "rev-parse", "--is-inside-work-tree"):
        raise NotAGitRepositoryError(path=str(root))


def _git_ok(root: Path, *args: str) -> bool:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60, check=False).returncode == 0


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60,
                          check=False, errors="replace").stdout
