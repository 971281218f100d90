"""`zhiyin.reviewWorkingTree`: the review of the uncommitted changes, as diagnostics.

The same review as `zhiyin review --worktree` (conventions, past fixes, and the model when asked),
run in the language server so the editor's Problems view lists the findings. Each run replaces
the last one's diagnostics: a file that no longer has findings is cleared.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.uris import from_fs_path

from zhiyin.findings import Finding
from zhiyin.i18n import N_, _

if TYPE_CHECKING:
    from zhiyin.review import ReviewResult

DIAGNOSTIC_SOURCE = "zhiyin"
MAX_SECONDS = 120.0  # an editor waits for this command: past it, what remains is listed as skipped
MSG_SUMMARY = N_("Zhiyin reviewed {files} changed files: {findings} findings.")
MSG_EVIDENCE = N_("{message} (from {evidence})")

_SEVERITY = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning,
             "note": types.DiagnosticSeverity.Information}


class ReviewDiagnostics:
    """The diagnostics of the last review, per file URI."""

    def __init__(self) -> None:
        self.published: set[str] = set()

    def publish(self, root: Path, result: ReviewResult,
                send: Callable[[types.PublishDiagnosticsParams], None]) -> None:
        """Sends one `publishDiagnostics` per file with findings, and an empty one per file that had
        findings last time and has none now."""
        by_uri: dict[str, list[types.Diagnostic]] = {}
        for finding in result.findings:
            uri = from_fs_path(str(root / finding.path))
            by_uri.setdefault(uri, []).append(diagnostic(finding))
        for uri in sorted(self.published | set(by_uri)):
            send(types.PublishDiagnosticsParams(uri=uri, diagnostics=by_uri.get(uri, [])))
        self.published = set(by_uri)


def diagnostic(finding: Finding) -> types.Diagnostic:
    # lines are 1-based and inclusive; the range runs to the start of the line after the last one
    span = types.Range(start=types.Position(line=finding.start_line - 1, character=0),
                       end=types.Position(line=finding.end_line, character=0))
    return types.Diagnostic(range=span, message=_(MSG_EVIDENCE).format(message=finding.message, evidence=finding.evidence),
                            severity=_SEVERITY.get(finding.severity, types.DiagnosticSeverity.Warning),
                            code=finding.rule_id, source=DIAGNOSTIC_SOURCE)


def summary(result: ReviewResult) -> dict:
    """The command's answer: counts, a message for the user, and what was skipped and why."""
    return {"findings": len(result.findings), "files": result.files,
            "message": _(MSG_SUMMARY).format(files=result.files, findings=len(result.findings)),
            "skipped": [{"path": path, "reason": why} for path, why in result.skipped]}
