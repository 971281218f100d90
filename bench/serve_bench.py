"""OpenAI-compatible serving: `zhiyin engine serve` against llama.cpp's server (llama-cpp-python
0.3.36 `[server]`), same model file, same machine, one after the other (issue 10).

Each server is started as its own process with the default GGUF and 2 threads; then 1, 4 and 16
clients each send --requests streaming completions (a code prompt of ~200 tokens from a real file,
64 new tokens, temperature 0) one after another. Per request: time to first token and to the last;
per phase: completion tokens per second over the phase's wall time. Tokens are counted as streamed
chunks (one token each on both servers).

llama.cpp's server comes from its own virtual environment (it pins FastAPI and Starlette versions of
its own): `make bench-baselines` builds `.venv-llama`; or pass --llama-python.

    python bench/serve_bench.py               # ~5 minutes on 2 cores
    python bench/serve_bench.py --quick       # 1 and 4 clients, fewer requests

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import openai
from machine import machine

from engine.model_files import default_model_path

PROMPT_FILE = ROOT / "engine" / "scheduler.py"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_zhiyin(threads: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "zhiyin.cli", "engine", "serve", "--port", "0",
                                "--threads", str(threads), "--max-queue", "256"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    url = re.search(r"http://\S+/v1", process.stdout.readline()).group(0)
    return process, url


def start_llama_cpp(python: str, model: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                                "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads),
                                "--n_threads_batch", str(threads),
                                "--interrupt_requests", "False"],  # else a new request cuts the running one off
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("llama.cpp's server did not start")


def one_request(url: str, model: str, prompt: str, max_tokens: int) -> dict:
    api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    sent = time.perf_counter()
    first, tokens = None, 0
    for chunk in api.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                        stream=True):
        if chunk.choices and chunk.choices[0].text:
            first = first or time.perf_counter()
            tokens += 1
    ended = time.perf_counter()
    return {"ttft_s": (first or ended) - sent, "latency_s": ended - sent, "tokens": tokens}


def phase(url: str, model: str, prompts: list[str], clients: int, requests: int, max_tokens: int) -> dict:
    def client(n: int) -> list[dict]:
        return [one_request(url, model, prompts[(n * requests + i) % len(prompts)], max_tokens)
                for i in range(requests)]

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        rows = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    latencies = sorted(r["latency_s"] for r in rows)
    ttfts = sorted(r["ttft_s"] for r in rows)
    return {"clients": clients, "requests": len(rows), "wall_s": round(wall, 2),
            "tokens_per_s": round(sum(r["tokens"] for r in rows) / wall, 2),
            "latency_p50_s": round(statistics.median(latencies), 3),
            "latency_p95_s": round(latencies[max(0, int(0.95 * len(latencies)) - 1)], 3),
            "ttft_p50_s": round(statistics.median(ttfts), 3),
            "ttft_p95_s": round(ttfts[max(0, int(0.95 * len(ttfts)) - 1)], 3),
            "mean_tokens": round(statistics.mean(r["tokens"] for r in rows), 1)}


def prompts() -> list[str]:
    """Windows of ~200 tokens (~800 characters) from a real source file, each a different prefix."""
    text = PROMPT_FILE.read_text(encoding="utf-8")
    return [text[i : i + 800] for i in range(0, len(text) - 800, 700)]


def measure(name: str, start, levels: list[int], requests: int, max_tokens: int) -> list[dict]:
    process, url = start()
    try:
        model = openai.OpenAI(base_url=url, api_key="unused").models.list().data[0].id
        one_request(url, model, "warm up", 4)
        out = []
        for clients in levels:
            out.append(phase(url, model, prompts(), clients, requests, max_tokens))
            r = out[-1]
            log(f"{name:8} {clients:2} clients: {r['tokens_per_s']:6.1f} tok/s, latency p50 {r['latency_p50_s']:.2f} s "
                f"p95 {r['latency_p95_s']:.2f} s, ttft p50 {r['ttft_p50_s']:.2f} s, {r['mean_tokens']} tokens/request")
        return out
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=None, help="requests per client (default: 4; --quick 2)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-python", default=str(ROOT / ".venv-llama" / "bin" / "python"),
                        help="a Python with llama-cpp-python[server]==0.3.36 (default: .venv-llama)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    levels = [1, 4] if args.quick else [1, 4, 16]
    requests = args.requests or (2 if args.quick else 4)
    model = default_model_path()
    zhiyin = measure("zhiyin", lambda: start_zhiyin(args.threads), levels, requests, args.max_tokens)
    baseline = None
    if Path(args.llama_python).exists():
        baseline = measure("llama.cpp", lambda: start_llama_cpp(args.llama_python, model, args.threads), levels,
                           requests, args.max_tokens)
    else:
        log(f"no llama.cpp server at {args.llama_python}: the baseline is skipped (make bench-baselines)")
    figures = {f"tokens_per_s_{r['clients']}": r["tokens_per_s"] for r in zhiyin}
    figures |= {f"latency_p50_s_{r['clients']}": r["latency_p50_s"] for r in zhiyin}
    figures |= {f"latency_p95_s_{r['clients']}": r["latency_p95_s"] for r in zhiyin}
    baselines = {}
    if baseline:
        baselines = {f"llama_cpp_tokens_per_s_{r['clients']}": r["tokens_per_s"] for r in baseline}
        baselines |= {f"llama_cpp_latency_p50_s_{r['clients']}": r["latency_p50_s"] for r in baseline}
        baselines |= {f"llama_cpp_latency_p95_s_{r['clients']}": r["latency_p95_s"] for r in baseline}
        figures |= {f"throughput_ratio_{z['clients']}": round(z["tokens_per_s"] / b["tokens_per_s"], 3)
                    for z, b in zip(zhiyin, baseline, strict=True)}
    result = {"bench": "serve", "machine": machine(),
              "config": {"model": model.name, "threads": args.threads, "requests_per_client": requests,
                         "max_tokens": args.max_tokens, "levels": levels},
              "figures": figures, "baselines": baselines, "phases": {"zhiyin": zhiyin, "llama_cpp": baseline},
              "targets": {}, "met": {}}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
