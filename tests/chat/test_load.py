"""Many clients at once against the real server and the default model: each gets its own streamed
answer, in arrival order; a client that stops reading delays nobody else; memory comes back."""

from __future__ import annotations

import asyncio
import json
import resource
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from engine.memory import trim_heap
from tests.chat.conftest import receive, turn

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

CLIENTS = 50
RSS_GROWTH_LIMIT = 48 << 20  # what 50 finished clients may leave behind, heap trimmed


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


async def test_fifty_clients_each_get_their_own_answer_in_turn_and_memory_returns(server) -> None:
    first_tokens: list[int] = []

    async def one(n: int) -> tuple[int, list[str], dict]:
        async with connect(server.socket_url) as ws:
            await ws.recv()
            tokens, done = await turn(ws, f"q{n}", f"Say the number {n}.", maxTokens=6, codebase=False,
                                      on_first_token=lambda: first_tokens.append(n))
            return n, tokens, done

    await one(-1)  # warm: the first turn's allocations are not a leak
    trim_heap()
    baseline = rss_bytes()
    tasks = []
    for n in range(CLIENTS):  # arrivals spaced so that their order is known
        tasks.append(asyncio.create_task(one(n)))
        await asyncio.sleep(0.02)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 900)
    conversations = set()
    for n, tokens, done in results:
        assert done["type"] == "done" and not done["cancelled"], (n, done)
        assert tokens and done["stats"]["generatedTokens"] >= 1
        conversations.add(done["conversation"])
    assert len(conversations) == CLIENTS  # each its own conversation, nothing crossed
    # the engine's queue is first come, first served: each prefill starts in arrival order, so first tokens
    # arrive in it, give or take a few places (arrivals 20 ms apart can reach the queue slightly out of
    # order). Not the order they finish in: batched answers of different lengths finish out of it.
    first_tokens.remove(-1)
    assert sum(abs(position - n) for position, n in enumerate(first_tokens)) <= CLIENTS // 2, first_tokens
    async with connect(server.socket_url) as ws:  # still serving
        await ws.recv()
        await ws.send(json.dumps({"type": "status"}))
        status = await receive(ws, "status")
        assert status["engine"]["queued"] == 0 and status["clients"] == 1
        assert status["engine"]["kvTiers"]["device_bytes"] > 0  # the KV cache per tier, for the panel's status
    trim_heap()
    growth = rss_bytes() - baseline
    print(f"RSS {baseline / 2**20:.0f} MiB -> +{growth / 2**20:.1f} MiB after {CLIENTS} clients")
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB over {baseline / 2**20:.0f} MiB"


async def test_a_client_that_stops_reading_delays_nobody(server, workspace) -> None:
    big = workspace / "big.txt"
    big.write_text("x = 1  # filler\n" * 12_000)  # ~190 KB: a few of these fill any socket buffer
    async with connect(server.socket_url, max_queue=1) as stalled:
        await stalled.recv()
        # asks for megabytes and never reads them: the server's writes to it block
        for n in range(40):
            await stalled.send(json.dumps({"type": "source", "id": n, "path": "big.txt", "startLine": 1,
                                           "endLine": 12_000}))
        await stalled.send(json.dumps({"type": "chat", "id": "slow", "text": "Write a long story.", "codebase": False,
                                       "maxTokens": 64}))
        await asyncio.sleep(1)
        async with connect(server.socket_url) as ws:
            await ws.recv()
            tokens, done = await asyncio.wait_for(turn(ws, "fast", "Say hi.", maxTokens=8, codebase=False), 120)
            assert done["type"] == "done" and tokens
