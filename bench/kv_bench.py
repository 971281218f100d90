"""The disk tier of the KV cache: a repository context reused by a new process instead of recomputed.

A 32k-token repository prefix (files of this Python's standard library, bench/corpora.py, each
under a path header, as the app core places repository context first) and a question after it.
Three fresh processes, each loading the default model with sparse FP8 attention (32k is past its
8k trained window, so positions are remapped):

- cold: an empty disk tier; prefills everything and leaves the prefix's chunks on disk;
- warm: the same prefix, another question; restores the prefix from disk;
- recompute (the baseline): the warm prompt with the disk tier off.

Figures: time to first token of each (median over `--repeats` warm/recompute pairs), their ratio
(target ≥ 10), disk bytes read, whether warm and recompute continue with the same 16 tokens, peak RSS.

    python bench/kv_bench.py                 # ~6 minutes on 2 cores
    python bench/kv_bench.py --tokens 8192   # a shorter prefix

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import corpora  # noqa: E402

from bench.machine import machine  # noqa: E402

TARGETS = {"reuse_ttft_speedup": [">=", 10.0]}
QUESTIONS = ("\n# Question: which function above parses a date string?\n# Answer:",
             "\n# Question: where are command-line options defined above?\n# Answer:")


def repository_prefix(tokens: int) -> str:
    """Whole files of the stdlib slice under path headers, until about `tokens` tokens."""
    from engine.checkpoints import load_tokenizer
    from engine.model_files import default_model_path

    tokenizer = load_tokenizer(default_model_path())
    corpus = corpora.python_stdlib()
    parts, count = [], 0
    for path in corpus.files():
        text = f"# File: {path}\n" + (corpus.root / path).read_text(encoding="utf-8", errors="replace") + "\n"
        n = len(tokenizer.encode(text))
        if count + n > tokens:
            continue  # too long for what is left: a smaller file may fit
        parts.append(text)
        count += n
        if count > 0.98 * tokens:
            break
    return "".join(parts)


def worker(prompt_file: str, cache: str | None, threads: int, max_context: int) -> None:
    """One process: load, generate 16 tokens, report time to first token and what it read from disk."""
    import torch

    from engine import EngineOptions, LLMEngine, SamplingParams
    from engine.model_files import default_model_path

    torch.set_num_threads(threads)
    options = EngineOptions(attention="sparse-fp8", max_context=max_context, kv_cache_mib=1536, num_threads=threads,
                            kv_disk_dir=Path(cache) if cache else None, kv_disk_mib=8192)
    engine = LLMEngine.load(default_model_path(), options)
    prompt = Path(prompt_file).read_text()
    chunks = list(engine.generate(prompt, SamplingParams(max_tokens=16, ignore_eos=True)))
    stats = chunks[-1].stats
    disk = engine.persistence.store.stats if engine.persistence else None
    if engine.persistence:
        engine.persistence.flush()
    print(json.dumps({"ttft_s": stats.time_to_first_token_s, "prompt_tokens": stats.num_prompt_tokens,
                      "disk_tokens": stats.num_disk_tokens, "text": "".join(c.text for c in chunks),
                      "disk_bytes_read": disk.bytes_read if disk else 0,
                      "disk_bytes_written": engine.persistence.store.disk_bytes() if engine.persistence else 0,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))


def run_worker(prompt: Path, cache: Path | None, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", str(prompt), "--threads", str(args.threads),
               "--max-context", str(args.tokens + 1024)]
    if cache is not None:
        command += ["--cache", str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32768, help="repository prefix length")
    parser.add_argument("--repeats", type=int, default=1, help="warm / recompute pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--max-context", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.cache, args.threads, args.max_context)
        return
    prefix = repository_prefix(args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        cold_prompt, warm_prompt = Path(tmp) / "cold.txt", Path(tmp) / "warm.txt"
        cold_prompt.write_text(prefix + QUESTIONS[0])
        warm_prompt.write_text(prefix + QUESTIONS[1])
        cache = Path(tmp) / "kv"
        cold = run_worker(cold_prompt, cache, args)
        warm = [run_worker(warm_prompt, cache, args) for _ in range(args.repeats)]
        recompute = [run_worker(warm_prompt, None, args) for _ in range(args.repeats)]
    warm_ttft = statistics.median(r["ttft_s"] for r in warm)
    recompute_ttft = statistics.median(r["ttft_s"] for r in recompute)
    figures = {
        "prompt_tokens": warm[0]["prompt_tokens"], "cold_ttft_s": cold["ttft_s"],
        "warm_ttft_s": warm_ttft, "recompute_ttft_s": recompute_ttft,
        "reuse_ttft_speedup": recompute_ttft / warm_ttft,
        "warm_disk_tokens": warm[0]["disk_tokens"], "warm_disk_bytes_read": warm[0]["disk_bytes_read"],
        "disk_bytes_stored": cold["disk_bytes_written"],
        "warm_and_recompute_same_16_tokens": warm[0]["text"] == recompute[0]["text"],
        "warm_text": warm[0]["text"], "recompute_text": recompute[0]["text"],
        "peak_rss_mib": {"cold": cold["peak_rss_mib"], "warm": warm[0]["peak_rss_mib"],
                         "recompute": recompute[0]["peak_rss_mib"]},
    }
    print(json.dumps({
        "bench": "kv", "machine": machine(),
        "config": {"model": "SmolLM2-135M-Instruct Q4_1 (bf16)", "attention": "sparse-fp8", "tokens": args.tokens,
                   "threads": args.threads, "repeats": args.repeats},
        "figures": figures, "baselines": {"recompute_ttft_s": recompute_ttft},
        "targets": TARGETS, "met": {"reuse_ttft_speedup": figures["reuse_ttft_speedup"] >= 10.0},
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
