"""What an editor's "review my changes" and "show memories" ask of the language server: the real
server over stdio, a real repository (pathspec's sources, a convention in Chinese in AGENTS.md)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pathspec
import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pytest_lsp import ClientServerConfig

from tests.lsp.test_edits import command
from tests.lsp.test_server import CJK, SERVER_COMMAND, server_env
from tests.review.test_review import AGENTS_ZH, commit, git

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEBUG_LINE = "\n\ndef show(patterns):\n    print(patterns)  # 临时调试\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("review") / "pathspec"
    shutil.copytree(Path(pathspec.__file__).parent, root / "pathspec", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "AGENTS.md").write_text(AGENTS_ZH, encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    commit(root, "Import pathspec")
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(repo: Path):
    client = await ClientServerConfig(server_command=SERVER_COMMAND, server_env=server_env(repo.parent)).start()
    await client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=repo.as_uri(), locale="zh-CN",
        initialization_options={"embeddings": False}))
    yield client
    await client.shutdown_session()
    await client.stop()


async def diagnostics_for(client, uri: str, expect_empty: bool) -> list[types.Diagnostic]:
    for _ in range(100):  # the notification comes before the command's answer, but let it land
        found = client.diagnostics.get(uri)
        if found is not None and (not found) == expect_empty:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no diagnostics for {uri}: {client.diagnostics}")


async def test_review_findings_become_diagnostics_and_clear_when_fixed(client, repo: Path) -> None:
    util = repo / "pathspec" / "util.py"
    original = util.read_text(encoding="utf-8")
    util.write_text(original + DEBUG_LINE, encoding="utf-8")  # uncommitted: the working tree
    summary = await command(client, "zhiyin.reviewWorkingTree")
    assert summary["findings"] == 1 and summary["files"] == 1 and CJK.search(summary["message"])
    [diagnostic] = await diagnostics_for(client, util.as_uri(), expect_empty=False)
    line = original.count("\n") + 3  # 0-based: the print line
    assert util.read_text(encoding="utf-8").split("\n")[line].strip().startswith("print(patterns)")
    assert diagnostic.range.start.line == line and diagnostic.source == "zhiyin"
    assert diagnostic.severity in (types.DiagnosticSeverity.Warning, types.DiagnosticSeverity.Error)
    assert "AGENTS.md:3" in diagnostic.message and CJK.search(diagnostic.message)
    assert str(diagnostic.code).startswith("convention/")

    util.write_text(original, encoding="utf-8")  # fixed: the next review clears the file's problems
    summary = await command(client, "zhiyin.reviewWorkingTree")
    assert summary["findings"] == 0 and summary["files"] == 0
    assert not await diagnostics_for(client, util.as_uri(), expect_empty=True)


async def test_a_remembered_convention_is_listed_with_its_citation(client, repo: Path) -> None:
    assert await command(client, "zhiyin.listMemories") == []
    util = repo / "pathspec" / "util.py"
    lines = util.read_text(encoding="utf-8").split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("def normalize_file("))
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=util.as_uri(), language_id="python", version=1, text="\n".join(lines))))
    span = {"start": {"line": start, "character": 0}, "end": {"line": start + 1, "character": 0}}
    remembered = await command(client, "zhiyin.rememberConvention", util.as_uri(), span)
    [memory] = await command(client, "zhiyin.listMemories")
    assert memory["id"] == remembered["id"] and memory["statement"] == remembered["statement"]
    assert memory["kind"] == "convention" and memory["status"] == "active"
    assert memory["citations"][0]["file"] == "pathspec/util.py" and memory["citations"][0]["start_line"] == start + 1


async def test_stats_name_the_model_and_the_index(client) -> None:
    # an editor's status bar polls this; the document opened above started the model and the index
    for _ in range(600):
        stats = await client.protocol.send_request_async("zhiyin/stats", None)  # attributes, as pygls reads objects
        if stats.model is not None and stats.index_ready:
            break
        await asyncio.sleep(0.2)
    assert "SmolLM2" in stats.model and stats.index_ready is True
    assert stats.model_state == "ready" and stats.model_error is None
    assert stats.kv_disk.corrupt == 0 and stats.kv_disk.bytes_read >= 0  # the disk tier is on by default
    tiers = stats.kv_tiers  # bytes per tier: the device tier is what the pool holds, unbounded by default
    assert round(tiers.device_bytes / 2**20, 1) == stats.kv_resident_mib and tiers.device_budget is None
    assert tiers.host_bytes == 0 and tiers.disk_bytes >= 0  # dense attention keeps no FP8 pools


async def test_a_model_that_cannot_load_is_reported_in_the_stats(tmp_path: Path) -> None:
    command_line = [*SERVER_COMMAND[:2], "zhiyin", "lsp", "--model", str(tmp_path / "missing.gguf")]
    client = await ClientServerConfig(server_command=command_line, server_env=server_env(tmp_path)).start()
    try:
        await client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities(), locale="zh-CN"))
        stats = await client.protocol.send_request_async("zhiyin/stats", None)
        assert stats.model_state == "idle"  # nothing asked for the model yet
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=(tmp_path / "a.py").as_uri(), language_id="python", version=1, text="import os\n")))
        for _ in range(300):
            stats = await client.protocol.send_request_async("zhiyin/stats", None)
            if stats.model_state == "failed":
                break
            assert stats.model_state == "loading"
            await asyncio.sleep(0.1)
        assert stats.model_state == "failed" and "missing.gguf" in stats.model_error and CJK.search(stats.model_error)
        assert any(stats.model_error in m.message for m in client.messages)  # the user was told too
        await client.shutdown_session()
    finally:
        await client.stop()


async def test_without_a_folder_the_commands_say_to_open_one(tmp_path: Path) -> None:
    client = await ClientServerConfig(server_command=SERVER_COMMAND, server_env=server_env(tmp_path)).start()
    try:
        await client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities(), locale="zh-CN"))
        for name in ("zhiyin.reviewWorkingTree", "zhiyin.listMemories"):
            with pytest.raises(JsonRpcInvalidParams) as error:
                await command(client, name)
            assert CJK.search(str(error.value)), error.value
        await client.shutdown_session()
    finally:
        await client.stop()
