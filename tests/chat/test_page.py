"""The chat page end to end: Debian's Chromium, driven by playwright-core, against a real
`zhiyin serve` process with the default model on a real repository. Screenshots go to
build/screenshots/chat/ (look at them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BROWSER = Path(__file__).parent / "browser"
SCREENSHOTS = Path(__file__).parents[2] / "build" / "screenshots" / "chat"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.slow


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if shutil.which("node") is None or not (BROWSER / "node_modules" / "playwright-core").exists():
        return "playwright-core is not installed (npm ci --prefix tests/chat/browser)"
    return None


@pytest.fixture
def served(workspace: Path, tmp_path: Path):
    if (missing := _browser_missing()) is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)  # CI installs both: a missing browser is a broken CI, not a skip
        pytest.skip(missing)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "ZHIYIN_LANG": "en"}
    process = subprocess.Popen([sys.executable, "-m", "zhiyin.cli", "serve", "--port", "0", "--no-embeddings"],
                               cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"http://\S+", line)
        assert match, f"no address printed: {line!r} {process.stderr.read() if process.poll() is not None else ''}"
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(30)


def test_ask_cite_stop_edit_and_switch_to_chinese_in_chromium(served: str, workspace: Path) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["node", str(BROWSER / "chat_page.mjs"), served, str(SCREENSHOTS)],
                         check=False, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for step in ("load", "question", "stop", "edit", "chinese"):
        assert "error" not in report[step], (step, report[step])
    assert report["load"]["title"] == "Zhiyin chat" and report["load"]["send"] == "Send"

    question = report["question"]
    assert question["samples"] >= 3 and len(question["text"]) > 20  # shown while it streamed, not at the end only
    assert any("shop/config.py" in c for c in question["citations"]), question["citations"]
    assert question["source"]["title"].startswith(question["citations"][0].split("] ")[1].split(":")[0])
    assert question["source"]["code"].strip()

    stop = report["stop"]
    assert stop["text"].endswith("(stopped)") and not stop["stopVisible"]

    edit = report["edit"]
    assert set(edit["files"]) == {"shop/config.py", "shop/db.py"}
    assert any("def read_config" in line for line in edit["added"])
    assert edit["outcome"] == "Applied the edit to 2 file(s)."
    assert "def read_config" in (workspace / "shop" / "config.py").read_text()
    assert "read_config(path)" in (workspace / "shop" / "db.py").read_text()

    chinese = report["chinese"]
    assert chinese["send"] == "发送" and chinese["newChat"] == "新对话" and chinese["lang"] == "zh-CN"
    assert chinese["theme"] == "dark" and chinese["conversations"] >= 3 and chinese["answer"]
    assert report["errors"] == []
    for name in ("answer-with-citations", "stopped", "proposed-edit", "applied-edit", "chinese-dark"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
