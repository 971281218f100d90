"""Repository-wide edits and code actions over LSP: the real server over stdio, a client that
applies `workspace/applyEdit` as an editor would, a Chinese-speaking user."""

from __future__ import annotations

import ast
import asyncio
import shutil
from pathlib import Path
from typing import Union

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.lsp.test_server import CJK, SAMPLE_REPO, SERVER_COMMAND, server_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

# a third module that uses load_config, with the name also in a string and a comment (not renamed)
ADMIN = '''"""Admin tasks."""

from shop.config import load_config


def show(path: str) -> str:
    settings = load_config(path)  # load_config reads JSON
    return "load_config: " + settings.database_url
'''


def offset_of(text: str, position: types.Position) -> int:
    """UTF-16 LSP position to an index into `text` (the client did not ask for another encoding)."""
    lines = text.split("\n")
    head = "\n".join(lines[: position.line]) + ("\n" if position.line else "")
    line = lines[position.line].encode("utf-16-le")[: 2 * position.character].decode("utf-16-le")
    return len(head) + len(line)


class Editor:
    """Applies the server's workspace edits to the files on disk and records them."""

    def __init__(self) -> None:
        self.received: list[types.ApplyWorkspaceEditParams] = []
        self.registrations: list[types.Registration] = []

    def apply(self, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        self.received.append(params)
        for change in params.edit.document_changes:
            path = Path(change.text_document.uri.removeprefix("file://"))
            text = path.read_bytes().decode("utf-8")
            for edit in sorted(change.edits, key=lambda e: (e.range.start.line, e.range.start.character),
                               reverse=True):
                text = text[: offset_of(text, edit.range.start)] + edit.new_text + text[offset_of(text, edit.range.end):]
            path.write_bytes(text.encode("utf-8"))
        return types.ApplyWorkspaceEditResult(applied=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edits") / "repo"
    shutil.copytree(SAMPLE_REPO, root)
    (root / "shop" / "admin.py").write_text(ADMIN, encoding="utf-8")
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(repo: Path):
    client = await ClientServerConfig(server_command=SERVER_COMMAND, server_env=server_env(repo.parent)).start()
    editor = Editor()

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(_client: LanguageClient, params: types.ApplyWorkspaceEditParams):
        return editor.apply(params)

    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register_capability(_client: LanguageClient, params: types.RegistrationParams):
        editor.registrations += params.registrations

    await client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(
            window=types.WindowClientCapabilities(work_done_progress=True),
            workspace=types.WorkspaceClientCapabilities(
                apply_edit=True,
                workspace_edit=types.WorkspaceEditClientCapabilities(
                    document_changes=True, change_annotation_support=types.ChangeAnnotationsSupportOptions()),
                did_change_watched_files=types.DidChangeWatchedFilesClientCapabilities(dynamic_registration=True))),
        root_uri=repo.as_uri(), locale="zh-CN", initialization_options={"embeddings": False}))
    yield client, editor
    await client.shutdown_session()
    await client.stop()


async def command(client: LanguageClient, name: str, *arguments):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=list(arguments)))


async def test_a_rename_across_three_files_lands_as_one_workspace_edit(session, repo: Path) -> None:
    client, editor = session
    before = len(editor.received)
    result = await command(client, "zhiyin.editRepository", "把 load_config 重命名为 read_settings")
    assert result["applied"], result
    assert sorted(result["files"]) == ["shop/admin.py", "shop/config.py", "shop/db.py"]
    assert CJK.search(result["message"]) and "3" in result["message"]  # 知音修改了 3 个文件。
    assert len(editor.received) == before + 1  # one WorkspaceEdit for all three files
    edit = editor.received[-1].edit
    assert {c.text_document.version for c in edit.document_changes} == {None}  # none open in the editor
    assert edit.change_annotations["zhiyin-edit"].needs_confirmation
    assert all(e.annotation_id == "zhiyin-edit" for c in edit.document_changes for e in c.edits)
    for name in ("config.py", "db.py", "admin.py"):
        source = (repo / "shop" / name).read_text(encoding="utf-8")
        ast.parse(source)  # still Python
        names = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
        assert "load_config" not in names and "read_settings" in source
    admin = (repo / "shop" / "admin.py").read_text(encoding="utf-8")
    assert '"load_config: "' in admin and "# load_config reads JSON" in admin  # strings, comments untouched


async def test_an_edit_whose_target_changed_meanwhile_is_rejected_whole(session, repo: Path) -> None:
    client, editor = session
    plan = await command(client, "zhiyin.proposeEdits", "rename Settings to ShopSettings")
    assert sorted(e["path"] for e in plan["edits"]) == ["shop/config.py", "shop/db.py"]
    previews = {p["path"]: p for p in plan["previews"]}  # what an editor's diff view shows
    config = repo / "shop" / "config.py"
    assert sorted(previews) == ["shop/config.py", "shop/db.py"] and previews["shop/config.py"]["uri"] == config.as_uri()
    assert previews["shop/config.py"]["newText"] == config.read_text(encoding="utf-8").replace(
        "class Settings", "class ShopSettings").replace("-> Settings", "-> ShopSettings").replace(
        "return Settings(", "return ShopSettings(")
    db = repo / "shop" / "db.py"
    db.write_text(db.read_text(encoding="utf-8") + "\n# edited meanwhile\n", encoding="utf-8")
    config_before = (repo / "shop" / "config.py").read_text(encoding="utf-8")
    before = len(editor.received)
    result = await command(client, "zhiyin.applyEdits", plan)
    assert not result["applied"] and list(result["problems"]) == ["shop/db.py"]
    assert CJK.search(result["problems"]["shop/db.py"])
    assert len(editor.received) == before  # nothing sent to the editor
    assert (repo / "shop" / "config.py").read_text(encoding="utf-8") == config_before  # nor half applied


async def test_edits_resolving_outside_the_workspace_are_refused(session, repo: Path, tmp_path: Path) -> None:
    client, editor = session
    secret = repo.parent / "secret.py"
    secret.write_text("TOKEN = 'x'\n", encoding="utf-8")
    (repo / "escape").symlink_to(repo.parent, target_is_directory=True)
    from zhiyin.edits import text_hash

    edit = {"baseHash": text_hash("TOKEN = 'x'\n"), "replacements": [[0, 5, "STOLEN"]]}
    plan = {"instruction": "x", "edits": [{"path": "../secret.py", **edit}, {"path": "escape/secret.py", **edit},
                                           {"path": str(secret), **edit}]}
    before = len(editor.received)
    result = await command(client, "zhiyin.applyEdits", plan)
    assert not result["applied"] and len(result["problems"]) == 3
    assert len(editor.received) == before and secret.read_text(encoding="utf-8") == "TOKEN = 'x'\n"


async def test_bad_command_arguments_get_a_clear_error(session) -> None:
    client, _editor = session
    for name, arguments in (("zhiyin.editRepository", []), ("zhiyin.editRepository", [42]),
                            ("zhiyin.applyEdits", [{"edits": "all"}]), ("zhiyin.fixDiagnostic", ["x"])):
        with pytest.raises(JsonRpcInvalidParams) as error:
            await command(client, name, *arguments)
        assert CJK.search(str(error.value)), error.value


def read_code_actions_as_editors_do(client: LanguageClient) -> None:
    """lsprotocol 2025.0.0 reads every result item with a "command" key as a Command, dropping
    the CodeAction around it; editors look at whether "command" is a string (VS Code's
    `Command.is`). Teach the test client the same."""
    converter = client.protocol._converter

    def hook(value, _type):
        is_command = isinstance(value.get("command"), str)
        return converter.structure(value, types.Command if is_command else types.CodeAction)

    converter.register_structure_hook(Union[types.Command, types.CodeAction], hook)  # noqa: UP007 (lsprotocol's key)


async def test_code_actions_offer_a_fix_and_an_explanation(session, repo: Path) -> None:
    client, _editor = session
    read_code_actions_as_editors_do(client)
    uri = (repo / "shop" / "orders.py").as_uri()
    text = (repo / "shop" / "orders.py").read_text(encoding="utf-8")
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    selection = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=8, character=0))
    diagnostic = types.Diagnostic(range=selection, message="undefined name 'Databse'", source="pyflakes")
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=selection,
        context=types.CodeActionContext(diagnostics=[diagnostic])))
    commands = {a.command.command: a for a in actions}
    assert set(commands) == {"zhiyin.fixDiagnostic", "zhiyin.explainCode", "zhiyin.rememberConvention"}
    fix = commands["zhiyin.fixDiagnostic"]
    assert fix.kind == types.CodeActionKind.QuickFix and list(fix.diagnostics) == [diagnostic]
    assert CJK.search(fix.title) and "Databse" in fix.title

    explanation = await command(client, "zhiyin.explainCode", *commands["zhiyin.explainCode"].command.arguments)
    assert isinstance(explanation, str) and explanation.strip()
    assert any(m.message == explanation for m in client.messages)  # shown to the user too


async def test_files_changed_outside_the_editor_reach_the_index(session, repo: Path) -> None:
    client, editor = session
    assert [r.method for r in editor.registrations] == ["workspace/didChangeWatchedFiles"]
    (repo / "shop" / "refunds.py").write_text("def refund_order(order_id: int) -> None:\n    pass\n",
                                               encoding="utf-8")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[types.FileEvent(
        uri=(repo / "shop" / "refunds.py").as_uri(), type=types.FileChangeType.Created)]))
    for _tick in range(100):  # the server re-indexes in the background
        plan = await command(client, "zhiyin.proposeEdits", "rename refund_order to refund")
        if plan["edits"]:
            break
        await asyncio.sleep(0.1)
    assert [e["path"] for e in plan["edits"]] == ["shop/refunds.py"]


async def test_a_plan_the_user_already_accepted_is_applied_without_asking_again(session, repo: Path) -> None:
    client, editor = session
    plan = await command(client, "zhiyin.proposeEdits", "rename refund_order to issue_refund")
    assert [p["path"] for p in plan["previews"]] == ["shop/refunds.py"]  # the client showed this diff
    result = await command(client, "zhiyin.applyEdits", plan)
    assert result["applied"], result
    annotation = editor.received[-1].edit.change_annotations["zhiyin-edit"]
    assert annotation.needs_confirmation is False  # no second preview in the editor
    assert "def issue_refund(" in (repo / "shop" / "refunds.py").read_text(encoding="utf-8")


async def test_fix_with_zhiyin_runs_the_model_and_reports_per_file(session, repo: Path) -> None:
    """The tiny default model seldom writes a SEARCH/REPLACE block that matches: whatever it
    writes, the result is either a checked edit that still parses or a reason for that file."""
    client, _editor = session
    before = (repo / "shop" / "orders.py").read_text(encoding="utf-8")
    uri = (repo / "shop" / "orders.py").as_uri()
    result = await command(client, "zhiyin.fixDiagnostic", uri, 3, "missing docstring")
    assert result["files"] == ["shop/orders.py"] or set(result["problems"]) == {"shop/orders.py"}, result
    after = (repo / "shop" / "orders.py").read_text(encoding="utf-8")
    if result["applied"]:
        ast.parse(after)
    else:
        assert after == before and CJK.search(result["problems"]["shop/orders.py"])


def stored_memories(repo: Path) -> list:
    from engram.store import MemoryStore

    store = MemoryStore.open(repo.parent / "data" / "zhiyin" / "engram.db")
    try:
        return store.list(None)
    finally:
        store.close()


async def test_remember_this_stores_a_cited_convention_and_accepted_edits_a_pending_decision(session, repo: Path) -> None:
    client, _editor = session
    read_code_actions_as_editors_do(client)
    path = repo / "shop" / "money.py"
    path.write_text("# Amounts are integer cents; never use float for money.\nPRICE = 1999\n", encoding="utf-8")
    uri = path.as_uri()
    comment = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=1, character=0))
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=comment,
        context=types.CodeActionContext(diagnostics=[])))
    remember = next(a for a in actions if a.command.command == "zhiyin.rememberConvention")
    assert CJK.search(remember.title)  # 记住这条项目约定
    result = await command(client, "zhiyin.rememberConvention", *remember.command.arguments)
    assert result["statement"] == "Amounts are integer cents; never use float for money."
    assert any(CJK.search(m.message) and f"#{result['id']}" in m.message for m in client.messages)

    memories = {m.statement: m for m in stored_memories(repo)}
    convention = memories["Amounts are integer cents; never use float for money."]
    assert convention.status == "active" and convention.globs == ("**/*.py",)
    assert (convention.citations[0].file, convention.citations[0].start_line) == ("shop/money.py", 1)
    # the rename accepted earlier in this module is remembered, pending the user's approval
    decision = memories["把 load_config 重命名为 read_settings"]
    assert decision.kind == "decision" and decision.status == "pending"
    assert {c.file for c in decision.citations} == {"shop/admin.py", "shop/config.py", "shop/db.py"}
