"""`zhiyin engine serve` as an OpenAI-compatible server, driven by the official `openai` client and
raw HTTP: completions (with a suffix), chat, streaming, errors, API keys, a bounded queue, clients
that go away, and concurrent requests batched together."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.slow


def start(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "zhiyin.cli", "engine", "serve", "--port", "0", *args],
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://\S+/v1", line)
    assert match, (line, process.stderr.read() if process.poll() is not None else "")
    return process, match.group(0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, url = start(tmp_path_factory.mktemp("serve"), "--max-queue", "2", "--max-batch", "8")
    yield url
    process.terminate()
    process.wait(30)


def client(url: str, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, **options)


def metrics(url: str) -> dict[str, float]:
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")}


def post(url: str, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/v1" + path, body, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def test_models_completions_infill_and_chat_through_the_openai_client(server: str) -> None:
    api = client(server)
    model = api.models.list().data[0].id
    assert model.startswith("SmolLM2-135M-Instruct")
    done = api.completions.create(model=model, prompt="def fibonacci(n):", max_tokens=12, temperature=0)
    assert done.choices[0].text and done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == 12 and done.usage.prompt_tokens > 3
    again = api.completions.create(model=model, prompt="def fibonacci(n):", max_tokens=12, temperature=0)
    assert again.choices[0].text == done.choices[0].text  # greedy is repeatable
    assert again.usage.prompt_tokens_details.cached_tokens >= 0
    infill = api.completions.create(model=model, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))",
                                    max_tokens=8, temperature=0)
    assert infill.choices[0].text
    chat = api.chat.completions.create(model=model, messages=[{"role": "system", "content": "Answer briefly."},
                                                              {"role": "user", "content": "What is 2 + 2?"}],
                                       max_tokens=16, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    assert chat.choices[0].finish_reason in ("stop", "length")


def test_streams_arrive_as_server_sent_events_with_usage(server: str) -> None:
    api = client(server)
    pieces, usage, finish = [], None, None
    for chunk in api.chat.completions.create(model="default", messages=[{"role": "user", "content": "Count to ten."}],
                                             max_tokens=20, temperature=0, stream=True,
                                             stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 3 and finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= len([p for p in pieces if p])
    text = "".join(c.choices[0].text for c in client(server).completions.create(
        model="default", prompt="for i in range(", max_tokens=10, temperature=0, stream=True))
    assert text


def test_bad_requests_get_openai_errors(server: str) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(server).completions.create(model="gpt-9", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client(server).completions.create(model="default", prompt="x", max_tokens=1, top_p=0)
    for body in (b"{not json", b"[1]", json.dumps({"prompt": 5}).encode(), json.dumps({"messages": []}).encode(),
                 json.dumps({"prompt": "x", "max_tokens": -1}).encode()):
        path = "/chat/completions" if b"messages" in body else "/completions"
        status, error = post(server, path, body)
        assert status == 400 and error["error"]["message"], body
    status, error = post(server, "/completions", json.dumps({"prompt": "x" * 200_000, "max_tokens": 1}).encode())
    assert status == 400 and "token" in error["error"]["message"].lower()  # longer than the context


def test_concurrent_requests_are_batched_and_a_full_queue_answers_429(server: str) -> None:
    api = client(server)

    def ask(n: int):
        try:
            return api.completions.create(model="default", prompt=f"# task {n}\ndef solve():", max_tokens=48,
                                          temperature=0)
        except openai.RateLimitError as e:
            return e

    before = metrics(server)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(16)))
    done = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(done) + len(refused) == 16 and len(done) >= 8  # 8 run together, 2 may wait, the rest retry later
    assert all(r.choices[0].text for r in done)
    assert all(r.response.headers["retry-after"] for r in refused)
    after = metrics(server)
    assert after["zhiyin_rejected_requests_total"] - before["zhiyin_rejected_requests_total"] == len(refused)
    assert after["zhiyin_queue_depth"] == 0 and after["zhiyin_running_requests"] == 0
    assert after["zhiyin_peak_batch_size"] >= 4  # decoded together, not one after another


def test_a_client_that_goes_away_mid_stream_stops_its_generation(server: str) -> None:
    before = metrics(server)
    stream = client(server).completions.create(model="default", prompt="Write a long story:", max_tokens=2000,
                                                temperature=0, stream=True)
    next(iter(stream))
    stream.close()  # the connection closes
    deadline = time.monotonic() + 10
    while metrics(server)["zhiyin_running_requests"] and time.monotonic() < deadline:
        time.sleep(0.1)
    after = metrics(server)
    assert after["zhiyin_running_requests"] == 0
    assert after["zhiyin_generated_tokens_total"] - before["zhiyin_generated_tokens_total"] < 1000


def test_an_api_key_is_required_when_set_and_beyond_loopback(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--api-key-env", "ZHIYIN_TEST_KEY", env={"ZHIYIN_TEST_KEY": "s3cret"})
    try:
        with pytest.raises(openai.AuthenticationError):
            client(url).models.list()
        assert openai.OpenAI(base_url=url, api_key="s3cret").models.list().data
    finally:
        process.terminate()
        process.wait(30)
    refused = subprocess.run([sys.executable, "-m", "zhiyin.cli", "engine", "serve", "--host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=60, check=False,
                             env={**os.environ, "ZHIYIN_LANG": "en"})
    assert refused.returncode == 2 and "--api-key-env" in refused.stderr and "Traceback" not in refused.stderr


def test_sparse_attention_reports_what_it_read_in_usage(tmp_path: Path) -> None:
    """With `attention = "sparse-fp8"` a prompt longer than sinks + window + budget decodes sparsely,
    and the response's usage says what that read (an extension field OpenAI clients ignore)."""
    (tmp_path / "config" / "zhiyin").mkdir(parents=True)
    config = '[engine]\nattention = "sparse-fp8"\nkv_host_mib = 64\n'  # below the prompt's FP8 copies
    (tmp_path / "config" / "zhiyin" / "config.toml").write_text(config, encoding="utf-8")
    process, url = start(tmp_path)
    try:
        prompt = "".join(f"def function_{i}(value):\n    return value * {i}\n\n" for i in range(300))  # ~5k tokens
        api = client(url, timeout=600)
        answer = api.completions.create(model=api.models.list().data[0].id, prompt=prompt, max_tokens=4, temperature=0)
        sparse = answer.usage.model_extra["sparse_attention"]
        assert answer.usage.prompt_tokens > 64 + 2048 + 2048
        assert sparse["layer_steps"] == 29 * 3 and 0.7 < sparse["fp8_coverage"] < 1  # layer 0 stays dense
        assert 0 < sparse["captured_mass"] <= 1 and sparse["budget_tokens"] > 0 and sparse["probes"] >= 29
        live = metrics(url)  # the host tier held its budget, handing FP8 blocks back and reading them again
        assert live["zhiyin_kv_host_budget_bytes"] == 64 << 20 >= live["zhiyin_kv_host_peak"]
        assert live["zhiyin_kv_host_demotions_total"] > 0 and live["zhiyin_kv_host_promotions_total"] > 0
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "ZHIYIN_LANG": "en"}
        shown = subprocess.run([sys.executable, "-m", "zhiyin.cli", "engine", "stats", "--url", url],
                               capture_output=True, text=True, env=env, timeout=60, check=True).stdout
        assert re.search(r"host \(FP8\)\s+[\d.]+\s+64\.0", shown) and "handed back to the OS" in shown
    finally:
        process.terminate()
        process.wait(30)


def test_engine_stats_reads_a_running_servers_tiers(server, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "ZHIYIN_LANG": "en"}
    shown = subprocess.run([sys.executable, "-m", "zhiyin.cli", "engine", "stats", "--url", server],
                           capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    device = metrics(server)['zhiyin_kv_bytes{tier="device"}']
    assert f"Engine at {server}" in shown and "device (full precision)" in shown and device > 0
    assert re.search(rf"device \(full precision\)\s+{device / 2**20:.1f}\s+-", shown)  # unbounded: no budget
    nobody = subprocess.run([sys.executable, "-m", "zhiyin.cli", "engine", "stats", "--url", "http://127.0.0.1:9"],
                            capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    assert "No engine is serving at http://127.0.0.1:9" in nobody
