"""Chat turns with repository context through the real chat server, against the raw engine (issue 7).

The server runs in this process on a copy of a real repository (wechatpy from PyPI, bench/corpora.py:
16k lines, Chinese docstrings; indexed with the default embedder unless --no-embeddings) with the
default model; a websocket client asks questions about it, in English and Chinese, each in a new
conversation, and times each turn from sending the message: first token, last token. The server's own
figures per turn (prompt tokens, of them reused from the prefix cache, the engine's time to first
token, decode tokens/s) come with the `done` message.

Baseline, in the same run: the raw engine (`LLMEngine.generate`) on a prompt of the same length
from the same repository's text, with no prefix cache, and the same number of new tokens. The ratios
say what the chat edge costs: retrieval, memory recall, prompt building, the websocket.

    python bench/chat_bench.py              # ~2 minutes on 2 cores (plus indexing the first time)
    python bench/chat_bench.py --quick      # 3 questions

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import corpora
from machine import machine
from websockets.asyncio.client import connect

QUESTIONS = [
    "How does the client get an access token, and when is it refreshed?",
    "What does WeChatCrypto.decrypt_message check before it returns the message?",
    "How are replies turned into XML?",
    "企业微信的 get_suite_token 需要哪些参数？",
    "How does the session storage keep values in memory?",
    "菜单的 try_match 是做什么的？",
    "Which exception is raised when the API returns an error code?",
    "如何给用户打标签？",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def ask(url: str, question: str, max_tokens: int) -> dict:
    async with connect(url) as ws:
        await ws.recv()  # hello
        sent = time.perf_counter()
        await ws.send(json.dumps({"type": "chat", "id": "q", "text": question, "maxTokens": max_tokens}))
        first = None
        tokens = 0
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "token":
                first = first or time.perf_counter()
                tokens += 1
            elif message["type"] in ("done", "error"):
                ended = time.perf_counter()
                break
        if message["type"] == "error":
            raise RuntimeError(message["message"])
        stats = message["stats"]
        return {"question": question, "ttft_s": (first or ended) - sent, "total_s": ended - sent,
                "token_messages": tokens, "prompt_tokens": stats["promptTokens"],
                "cached_tokens": stats["cachedTokens"], "generated": stats["generatedTokens"],
                "engine_ttft_s": stats["timeToFirstTokenS"], "decode_tokens_per_s": stats["tokensPerS"],
                "citations": len(message["citations"])}


def raw_engine(engine, corpus_text: list[int], prompt_tokens: int, max_tokens: int, salt: int) -> dict:
    """The engine alone: a prompt of `prompt_tokens` repository tokens nobody has sent before."""
    from engine import SamplingParams

    ids = [salt, *corpus_text[salt * 997 % 5000:][: prompt_tokens - 1]]
    started = time.perf_counter()
    first = None
    last = None
    for chunk in engine.generate(ids, SamplingParams(max_tokens=max_tokens, ignore_eos=True)):
        if chunk.text and first is None:
            first = time.perf_counter()
        last = chunk
    stats = last.stats
    return {"prompt_tokens": len(ids), "ttft_s": (first or time.perf_counter()) - started,
            "engine_ttft_s": stats.time_to_first_token_s, "decode_tokens_per_s": stats.decode_tokens_per_s,
            "cached_tokens": stats.num_cached_tokens}


async def run(args: argparse.Namespace) -> dict:
    from engine import LLMEngine
    from engine.model_files import default_model_path
    from zhiyin.backends import Backends
    from zhiyin.chat_server import ChatServer
    from zhiyin.conversations import ConversationStore
    from zhiyin.progress import ProgressBoard
    from zhiyin.runtime import open_index

    corpus = corpora.chinese_documented_package()
    work = Path(tempfile.mkdtemp(prefix="zhiyin-chat-bench-"))
    root = work / corpus.name
    shutil.copytree(corpus.root, root)
    os.environ["XDG_DATA_HOME"] = str(work / "data")  # a fresh project memory and conversation store
    engine = LLMEngine.load(default_model_path())
    log(f"indexing {corpus.num_lines} lines of {corpus.source} …")
    started = time.perf_counter()
    index = open_index(root, embeddings=not args.no_embeddings)
    index.update()
    index_s = time.perf_counter() - started
    backends = Backends(root, embeddings=not args.no_embeddings, progress=ProgressBoard(terminal=False),
                        show_error=log, engine=engine, index=index)
    server = ChatServer(backends, ConversationStore(work / "chats.db"), port=0)
    ready = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(server.run(ready))
    await ready
    questions = QUESTIONS[: 3 if args.quick else len(QUESTIONS)]
    await ask(server.socket_url, "warm up", 4)  # the first turn loads the embedder and the memory store
    corpus_ids = engine.encode("\n".join((root / p).read_text(encoding="utf-8", errors="replace")
                                         for p in corpus.files()[:40]))
    turns, raws = [], []
    for n, question in enumerate(questions):  # each turn, then its baseline: the machine's noise hits both
        turns.append(await ask(server.socket_url, question, args.max_tokens))
        t = turns[-1]
        log(f"chat  ttft {t['ttft_s'] * 1000:6.0f} ms (engine {t['engine_ttft_s'] * 1000:5.0f}), "
            f"{t['decode_tokens_per_s']:5.1f} tok/s, prompt {t['prompt_tokens']} ({t['cached_tokens']} cached), "
            f"{t['citations']} sources: {question}")
        raws.append(await asyncio.to_thread(raw_engine, engine, corpus_ids, t["prompt_tokens"], t["generated"], n + 1))
        r = raws[-1]
        log(f"raw   ttft {r['ttft_s'] * 1000:6.0f} ms, {r['decode_tokens_per_s']:5.1f} tok/s, prompt {r['prompt_tokens']}")
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    index.close()
    shutil.rmtree(work, ignore_errors=True)

    def median(rows, key):
        return round(statistics.median(r[key] for r in rows), 4)

    figures = {
        "chat_ttft_s": median(turns, "ttft_s"), "chat_decode_tokens_per_s": median(turns, "decode_tokens_per_s"),
        "chat_engine_ttft_s": median(turns, "engine_ttft_s"), "chat_prompt_tokens": median(turns, "prompt_tokens"),
        "chat_cached_share": round(sum(t["cached_tokens"] for t in turns) / sum(t["prompt_tokens"] for t in turns), 3),
        "chat_overhead_s": round(statistics.median(t["ttft_s"] - t["engine_ttft_s"] for t in turns), 4),
        "chat_total_s": median(turns, "total_s"), "index_s": round(index_s, 1),
    }
    baselines = {"raw_ttft_s": median(raws, "ttft_s"), "raw_decode_tokens_per_s": median(raws, "decode_tokens_per_s")}
    figures["ttft_ratio_chat_over_raw"] = round(figures["chat_ttft_s"] / baselines["raw_ttft_s"], 3)
    figures["decode_ratio_chat_over_raw"] = round(figures["chat_decode_tokens_per_s"]
                                                  / baselines["raw_decode_tokens_per_s"], 3)
    return {"bench": "chat", "machine": machine(),
            "config": {"corpus": corpus.source, "lines": corpus.num_lines, "questions": len(turns),
                       "max_tokens": args.max_tokens, "embeddings": not args.no_embeddings,
                       "threads": os.environ.get("OMP_NUM_THREADS")},
            "figures": figures, "baselines": baselines, "turns": turns, "raw": raws, "targets": {}, "met": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 questions")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per answer (default: 64)")
    parser.add_argument("--no-embeddings", action="store_true", help="index and search without vectors")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    line = json.dumps(result, ensure_ascii=False)
    if args.out:
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    print(line)


if __name__ == "__main__":
    main()
