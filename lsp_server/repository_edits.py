"""Repository-wide edits for the editor: proposed by the app core, checked, sent as one
`workspace/applyEdit`.

The WorkspaceEdit holds one versioned TextDocumentEdit per file (the version of the editor's copy
when open, null when not: the client then edits the file on disk) and, where the client supports
them, change annotations that ask the user to confirm. Before it is sent, every file is checked
against its text of this moment; if any fails, nothing is sent and each failure is reported.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.uris import from_fs_path

from engine.prompt import TextModel
from lsp_server.positions import position_at
from zhiyin.edit_planner import model_plan, plan_edits
from zhiyin.edits import CheckedEdit, EditPlan, check_plan, disk_text
from zhiyin.i18n import N_, _

if TYPE_CHECKING:
    from lsp_server.server import ZhiyinServer


INDEX_WAIT_S = 300.0  # an edit asked for while the first index runs waits for it
ENGINE_WAIT_S = 120.0
ANNOTATION_ID = "zhiyin-edit"

MSG_EDITING = N_("Zhiyin is editing the repository")
MSG_NO_INDEX = N_("the repository index is not ready")
MSG_NO_MODEL = N_("the model could not be loaded")
MSG_APPLIED = N_("Zhiyin edited {count} files.")
MSG_NOT_APPLIED = N_("Zhiyin applied no edit. {problems}")
MSG_NOTHING = N_("Zhiyin found nothing to change. {problems}")
MSG_DECLINED = N_("The editor did not apply Zhiyin's edit: {reason}")
MSG_ANNOTATION = N_("Zhiyin: {instruction}")


@dataclass
class EditOutcome:
    """What a repository edit did, as the command answers it."""

    applied: bool
    files: list[str] = field(default_factory=list)  # relative paths edited (or that would have been)
    problems: dict[str, str] = field(default_factory=dict)  # path -> why, translated
    message: str = ""  # for the user, translated

    def to_json(self) -> dict:
        return {"applied": self.applied, "files": self.files, "problems": self.problems, "message": self.message}


class _Unavailable(Exception):
    """The index or the model is not there; the message says which, translated."""


class RepositoryEdits:
    def __init__(self, server: ZhiyinServer) -> None:
        self.server = server

    async def propose(self, instruction: str, paths: list[str] | None = None,
                      progress_token: str | None = None) -> EditPlan:
        """The plan for `instruction` (the model's, over `paths` only, when given), made in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self._propose, instruction, paths, progress_token)

    async def apply(self, plan: EditPlan, *, confirmed: bool = False) -> EditOutcome:
        """Checks `plan` against the documents as they are now and, if every file passes, applies it.
        `confirmed`: the user has seen the plan and accepted it; else the editor asks first."""
        root = self.server.backends.root
        problems = dict(plan.problems)
        if root is None or not plan.edits:
            return self._report(EditOutcome(False, problems=problems, message=_(MSG_NOTHING).format(
                problems=_problem_list(problems))))
        checked, failed = check_plan(plan, root, self.read_text)
        files = [c.edit.path for c in checked] + list(failed)
        if failed:
            problems.update(failed)
            return self._report(EditOutcome(False, files, problems,
                                            _(MSG_NOT_APPLIED).format(problems=_problem_list(failed))))
        result = await self.server.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
            edit=self.workspace_edit(checked, plan.instruction, confirmed=confirmed), label=_(MSG_ANNOTATION).format(
                instruction=plan.instruction)))
        if not result.applied:
            return self._report(EditOutcome(False, files, problems, _(MSG_DECLINED).format(
                reason=result.failure_reason or "-")))
        await asyncio.get_running_loop().run_in_executor(None, self.server.backends.record_accepted_edit, plan.instruction, files)
        return self._report(EditOutcome(True, files, problems, _(MSG_APPLIED).format(count=len(checked))))

    def previews(self, plan: EditPlan) -> list[dict]:
        """Each planned file's text once applied, for a client's diff view (offsets stay here)."""
        root = self.server.backends.root
        if root is None:
            return []
        checked, _failed = check_plan(plan, root, self.read_text)
        return [{"path": c.edit.path, "uri": from_fs_path(str(c.path)), "newText": c.new_text} for c in checked]

    async def edit(self, instruction: str, paths: list[str] | None = None) -> EditOutcome:
        """Proposes and applies, with a progress bar while the plan is made."""
        progress = self.server.progress
        token = await asyncio.get_running_loop().run_in_executor(None, progress.begin, _(MSG_EDITING))
        try:
            plan = await self.propose(instruction, paths, token)
        finally:
            progress.end(token)
        return await self.apply(plan)

    def _propose(self, instruction: str, paths: list[str] | None, progress_token: str | None) -> EditPlan:
        backends = self.server.backends
        root = backends.root

        def engine() -> TextModel:
            loaded = backends.wait_for_engine(ENGINE_WAIT_S, threading.Event())
            if loaded is None:
                raise _Unavailable(_(MSG_NO_MODEL))
            return loaded

        def on_file(path: str) -> None:
            self.server.progress.report(progress_token, path)

        with backends.index_for_reading(INDEX_WAIT_S) as index:
            try:
                if root is None or index is None:
                    raise _Unavailable(_(MSG_NO_INDEX))
                if paths is not None:
                    return model_plan(instruction, root, index, engine(), self.read_text, on_file, paths)
                return plan_edits(instruction, root, index, engine, self.read_text, on_file)
            except _Unavailable as e:
                return EditPlan(instruction, problems={".": str(e)})

    def read_text(self, path: Path) -> str:
        """The editor's copy when the file is open (unsaved changes count), else the disk's, exactly
        (line endings kept: offsets index into it)."""
        document = self.server.workspace.text_documents.get(from_fs_path(str(path)))
        if document is not None:
            return document.source
        return disk_text(path)

    def workspace_edit(self, checked: list[CheckedEdit], instruction: str, *, confirmed: bool) -> types.WorkspaceEdit:
        """One edit for all files; unless `confirmed`, annotated so that the editor asks before applying
        (VS Code's refactor preview)."""
        capabilities = self.server.client_capabilities
        encoding = self.server.workspace.position_encoding or types.PositionEncodingKind.Utf16
        annotate = bool(get_capability(capabilities, "workspace.workspace_edit.change_annotation_support", None))
        versioned = bool(get_capability(capabilities, "workspace.workspace_edit.document_changes", False))
        per_file: dict[str, list[types.TextEdit]] = {}
        for c in checked:
            edits = []
            for r in c.edit.replacements:
                span = types.Range(start=position_at(c.old_text, r.start, encoding),
                                   end=position_at(c.old_text, r.end, encoding))
                edits.append(types.AnnotatedTextEdit(range=span, new_text=r.new_text, annotation_id=ANNOTATION_ID)
                             if annotate else types.TextEdit(range=span, new_text=r.new_text))
            per_file[from_fs_path(str(c.path))] = edits
        if not versioned:
            return types.WorkspaceEdit(changes=per_file)
        documents = self.server.workspace.text_documents
        return types.WorkspaceEdit(
            document_changes=[types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=uri, version=documents[uri].version if uri in documents else None),
                edits=edits) for uri, edits in per_file.items()],
            change_annotations={ANNOTATION_ID: types.ChangeAnnotation(
                label=_(MSG_ANNOTATION).format(instruction=instruction), needs_confirmation=not confirmed)}
            if annotate else None)

    def _report(self, outcome: EditOutcome) -> EditOutcome:
        kind = types.MessageType.Info if outcome.applied else types.MessageType.Warning
        self.server.window_show_message(types.ShowMessageParams(type=kind, message=outcome.message))
        return outcome


def _problem_list(problems: dict[str, str]) -> str:
    return "; ".join(f"{path}: {why}" for path, why in problems.items())
