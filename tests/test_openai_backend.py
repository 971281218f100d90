"""An OpenAI-compatible server as the model: completions, a chat turn and a review through
`OpenAIModel` against `zhiyin engine serve` (started here) and llama.cpp's server (llama-cpp-python,
a peer nobody here wrote, serving the same GGUF); start-up checks; and the faults a network brings,
played by small stand-in servers: a server killed mid-stream, one that never answers, 429s, broken
server-sent events."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine import SamplingParams
from engine.openai_client import (
    OpenAIModel,
    ServerAuthError,
    ServerError,
    ServerModelMissingError,
    ServerUnreachableError,
)
from tests.test_openai_server import start
from zhiyin.chat import chat_turn
from zhiyin.completion import Completer, CompletionRequest
from zhiyin.diffs import parse_diff
from zhiyin.edit_planner import model_plan
from zhiyin.review import review

pytestmark = pytest.mark.slow
SAMPLE = Path(__file__).parent / "indexer" / "sample_repo"
ROOT = Path(__file__).parent.parent
LLAMA_PYTHON = ROOT / ".venv-llama" / "bin" / "python"


@pytest.fixture(scope="module")
def zhiyin_server(tmp_path_factory):
    process, url = start(tmp_path_factory.mktemp("remote"))
    yield url
    process.terminate()
    process.wait(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(default_model):
    if not LLAMA_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("llama.cpp's server is missing: make llama-server")
        pytest.skip("llama.cpp's server is not installed (make llama-server)")
    port = free_port()
    process = subprocess.Popen([str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(default_model),
                                "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
                                "--interrupt_requests", "False"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            OpenAIModel(url, max_retries=0, timeout_s=2)
            break
        except ServerUnreachableError:
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(30)


@pytest.fixture
def index(tmp_path: Path, default_count_tokens):
    from indexer.index import Index

    root = tmp_path / "shop"
    shutil.copytree(SAMPLE, root)
    index = Index.open(root, db_path=tmp_path / "index.db", count_tokens=default_count_tokens, embedder=None)
    index.update()
    yield index
    index.close()


@pytest.mark.parametrize("peer", ["zhiyin", "llama.cpp"])
def test_completion_chat_and_review_run_through_an_openai_server(peer, request, index) -> None:
    url = request.getfixturevalue("zhiyin_server" if peer == "zhiyin" else "llama_server")
    model = OpenAIModel(url)
    assert model.model_id and model.max_context >= 2048
    # a completion at a cursor, with repository context, as the language server asks for one
    text = (index.root / "shop" / "db.py").read_text()
    line = text.split("\n").index("    def query(self, sql: str, *params) -> list[tuple]:") + 2
    completion = Completer(model, index, max_tokens=24).complete(CompletionRequest("shop/db.py", text, line, 8))
    assert completion is not None and completion.prompt_tokens > 0
    # a chat turn: streamed, with citations
    events = list(chat_turn(model, "What does load_config return?", index=index))
    assert sum(1 for e in events if e.text) > 3 and events[-1].done
    assert "shop/config.py" in {c.path for c in events[-1].citations}
    # an edit the model writes (a tiny model may propose nothing: a plan with a reason, never a crash)
    plan = model_plan("add a docstring to load_config", index.root, index, model,
                      lambda path: path.read_text(encoding="utf-8"), paths=["shop/config.py"])
    assert plan.edits or plan.problems
    # a review's model pass
    diff = (b"diff --git a/shop/orders.py b/shop/orders.py\n--- a/shop/orders.py\n+++ b/shop/orders.py\n"
            b"@@ -1,2 +1,4 @@\n import sqlite3\n+def total(items):\n+    return sum(i.price for i in items) / len(items)\n")
    result = review(index.root, parse_diff(diff), "HEAD", engine=model, index=index)
    assert result.skipped == [] or all(path != "shop/orders.py" for path, _why in result.skipped)


def test_start_up_checks_say_what_is_wrong(zhiyin_server, tmp_path: Path) -> None:
    with pytest.raises(ServerUnreachableError) as unreachable:
        OpenAIModel(f"http://127.0.0.1:{free_port()}/v1", max_retries=0, timeout_s=2)
    assert "Cannot reach the model server" in str(unreachable.value)
    with pytest.raises(ServerModelMissingError, match="does not serve gpt-9"):
        OpenAIModel(zhiyin_server, "gpt-9")
    process, url = start(tmp_path, "--api-key-env", "K", env={"K": "right"})
    try:
        with pytest.raises(ServerAuthError):
            OpenAIModel(url, api_key="wrong", max_retries=0)
        assert OpenAIModel(url, api_key="right").model_id
    finally:
        process.terminate()
        process.wait(30)


def test_a_server_killed_mid_stream_is_reported_and_the_next_one_works(tmp_path: Path) -> None:
    process, url = start(tmp_path)
    model = OpenAIModel(url, max_retries=0)
    stream = model.generate(model.completion_prompt("Write a long story:"), SamplingParams(max_tokens=2000))
    next(stream)
    process.kill()
    process.wait(10)
    with pytest.raises(ServerError):
        for _chunk in stream:
            pass
    process, url = start(tmp_path)
    try:
        again = OpenAIModel(url, max_retries=0)
        assert "".join(c.text for c in again.generate(again.completion_prompt("def f():"), SamplingParams(max_tokens=4)))
    finally:
        process.terminate()
        process.wait(30)


# --- stand-ins for a misbehaving peer: they speak just enough HTTP to fail in one way each ---------

MODELS = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'
GOOD_SSE = (b'data: {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "ok", '
            b'"finish_reason": null}]}\n\ndata: {"id": "c", "object": "text_completion", "choices": [{"index": 0, '
            b'"text": "", "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
GOOD_CHAT_SSE = (b'data: {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": '
                 b'{"content": "hi"}, "finish_reason": "length"}]}\n\ndata: [DONE]\n\n')


class Peer:
    def __init__(self, completions) -> None:
        self.requests = 0
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, MODELS, "application/json")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.endswith("/chat/completions"):  # the client's start-up probe
                    self._send(200, GOOD_CHAT_SSE, "text/event-stream")
                    return
                peer.requests += 1
                completions(self, peer.requests)

            def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_429s_are_retried_with_backoff() -> None:
    def completions(handler, n: int) -> None:
        if n <= 2:
            handler._send(429, b'{"error": {"message": "slow down"}}', "application/json", {"Retry-After": "0"})
        else:
            handler._send(200, GOOD_SSE, "text/event-stream")

    peer = Peer(completions)
    try:
        model = OpenAIModel(peer.url, max_retries=3)
        text = "".join(c.text for c in model.generate(model.completion_prompt("x"), SamplingParams(max_tokens=4)))
        assert text == "ok" and peer.requests == 3
    finally:
        peer.close()


def test_a_server_that_never_answers_times_out() -> None:
    def completions(handler, n: int) -> None:
        time.sleep(10)

    peer = Peer(completions)
    try:
        model = OpenAIModel(peer.url, max_retries=0, timeout_s=1)
        started = time.monotonic()
        with pytest.raises((ServerError, ServerUnreachableError)):
            list(model.generate(model.completion_prompt("x"), SamplingParams(max_tokens=4)))
        assert time.monotonic() - started < 5
    finally:
        peer.close()


def test_broken_server_sent_events_are_an_error_not_a_hang() -> None:
    def completions(handler, n: int) -> None:
        handler._send(200, b"data: {not json\n\ndata: [DONE]\n\n", "text/event-stream")

    peer = Peer(completions)
    try:
        model = OpenAIModel(peer.url, max_retries=0, timeout_s=5)
        with pytest.raises(ServerError):
            list(model.generate(model.completion_prompt("x"), SamplingParams(max_tokens=4)))
    finally:
        peer.close()
