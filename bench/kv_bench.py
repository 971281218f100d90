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

`--tiers`: a bounded device tier over a long context instead (default 256k tokens of the standard
library's source). Two fresh processes:
- bounded: device budget 1/32 of the context's KV in bf16; prefills the context (its chunks go to
  disk as they leave the window) and decodes 64 tokens greedily, while a thread samples the tiers'
  bytes and the process's RSS every 20 ms (the tier also records its exact peak);
- unbounded (the baseline): no device budget; restores the context from the bounded run's chunks and
  decodes the same 64 tokens. Same tokens: the bounded tier changed nothing.
Figures: peaks against budgets, promotions, demotions, locality (selected blocks already resident when a
decode step reads them), fetch latency, disk bytes read per decoded token, decode time per token, RSS.

    python bench/kv_bench.py                 # ~6 minutes on 2 cores
    python bench/kv_bench.py --tokens 8192   # a shorter prefix
    python bench/kv_bench.py --tiers         # ~40 minutes on 2 cores (a 256k prefill)

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import os
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
TIER_TARGETS = {"device_peak_within_budget": True, "host_peak_within_budget": True, "same_tokens": True,
                "locality": [">=", 0.6], "peak_rss_le_12_gib (1M)": True, "decode_le_3x_short (1M, vs 8k)": True}
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


def long_source(tokens: int) -> str:
    """Whole files of the standard library (tests left out) under path headers, about `tokens` tokens."""
    from engine.checkpoints import load_tokenizer
    from engine.model_files import default_model_path

    tokenizer = load_tokenizer(default_model_path())
    corpus = corpora.python_stdlib_full(include_tests=False)
    parts, count = [], 0
    for path in corpus.files():
        text = f"# File: {path}\n" + (corpus.root / path).read_text(encoding="utf-8", errors="replace") + "\n"
        parts.append(text)
        count += len(tokenizer.encode(text))
        if count >= tokens:
            break
    return "".join(parts)


def tier_worker(prompt_file: str, cache: str, threads: int, max_context: int, device_mib: int | None,
                host_mib: int | None, max_tokens: int) -> None:
    """One process: prompt ids from `prompt_file` (JSON), greedy decode, tier figures sampled meanwhile."""
    import threading
    import time

    import torch

    from engine import EngineOptions, LLMEngine, SamplingParams
    from engine.model_files import default_model_path

    torch.set_num_threads(threads)
    options = EngineOptions(attention="sparse-fp8", max_context=max_context, kv_cache_mib=256, num_threads=threads,
                            kv_disk_dir=Path(cache), kv_disk_mib=1 << 20, kv_device_mib=device_mib,
                            kv_host_mib=host_mib)
    engine = LLMEngine.load(default_model_path(), options)
    ids = json.loads(Path(prompt_file).read_text())
    peaks = {"device_bytes": 0, "host_bytes": 0, "rss_bytes": 0, "samples": 0}
    done = threading.Event()

    def sample() -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not done.wait(0.02):
            if engine.tier is not None:
                peaks["device_bytes"] = max(peaks["device_bytes"], engine.tier.stats.device_bytes)
            if engine.host is not None:
                peaks["host_bytes"] = max(peaks["host_bytes"], engine.host.stats.host_bytes)
            with open("/proc/self/statm") as f:
                peaks["rss_bytes"] = max(peaks["rss_bytes"], int(f.read().split()[1]) * page)
            peaks["samples"] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    stamps = []
    text = []
    for chunk in engine.generate(ids, SamplingParams(max_tokens=max_tokens, ignore_eos=True)):
        stamps.append(time.perf_counter())
        text.append(chunk.text)
    done.set()
    sampler.join()
    stats = chunk.stats
    decode_steps = [b - a for a, b in zip(stamps, stamps[1:])]
    tiers = engine.kv_tiers()
    print(json.dumps({
        "text": "".join(text), "token_ids": stats.num_prompt_tokens, "wall_s": time.perf_counter() - started,
        "ttft_s": stats.time_to_first_token_s, "disk_tokens": stats.num_disk_tokens,
        "decode_s_per_token_median": statistics.median(decode_steps) if decode_steps else None,
        "sampled": peaks, "tier": engine.tier.stats.as_dict() if engine.tier is not None else None,
        "host": engine.host.stats.as_dict() if engine.host is not None else None, "host_bytes": tiers["host_bytes"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))


def run_tiers(args: argparse.Namespace) -> None:
    import torch

    from engine.checkpoints import load_checkpoint
    from engine.kv_cache import KVCache
    from engine.model_files import default_model_path

    checkpoint = load_checkpoint(default_model_path())
    ids = checkpoint.tokenizer.encode(long_source(args.tokens))[: args.tokens]
    kv_bytes = KVCache.bytes_per_token(checkpoint.config, torch.bfloat16) * len(ids)
    device_mib = max(1, kv_bytes // args.device_fraction >> 20)
    host = ["--host-mib", str(args.host_mib)] if args.host_mib else []
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        prompts = {}
        for name, count in (("long", len(ids)), ("short", args.short_tokens)):
            prompts[name] = Path(tmp) / f"{name}.json"
            prompts[name].write_text(json.dumps(ids[:count]))
        common = ["--threads", str(args.threads), "--max-context", str(len(ids) + 1024), "--max-tokens",
                  str(args.max_tokens)]
        plan = [("bounded", "long", "kv", ["--device-mib", str(device_mib), *host]),
                ("short", "short", "kv-short", ["--device-mib", str(device_mib), *host])]
        if args.unbounded:  # restores the bounded run's chunks
            plan.append(("unbounded", "long", "kv", []))
        runs = {}
        for name, prompt, cache, extra in plan:
            command = [sys.executable, __file__, "--tier-worker", str(prompts[prompt]), "--cache", str(Path(tmp) / cache)]
            done = subprocess.run(command + common + extra, capture_output=True, text=True, cwd=ROOT, check=False)
            if done.returncode != 0:
                sys.exit(f"{name} run failed:\n{done.stderr[-4000:]}")
            runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(name, json.dumps(runs[name])[:2000], file=sys.stderr, flush=True)
    bounded, short, unbounded = runs["bounded"], runs["short"], runs.get("unbounded")
    tier, host_tier = bounded["tier"], bounded["host"]
    decode_ms = {name: 1000 * run["decode_s_per_token_median"] for name, run in runs.items()}
    figures = {
        "context_tokens": len(ids), "kv_bytes_bf16": kv_bytes,
        "device_budget_bytes": tier["device_budget"], "device_peak_bytes": tier["device_peak"],
        "device_sampled_max_bytes": bounded["sampled"]["device_bytes"], "samples": bounded["sampled"]["samples"],
        "host_bytes": bounded["host_bytes"],
        "host_budget_bytes": host_tier["host_budget"] if host_tier else None,
        "host_peak_bytes": host_tier["host_peak"] if host_tier else None,
        "host_sampled_max_bytes": bounded["sampled"]["host_bytes"] if host_tier else None,
        "host_promotions": host_tier["host_promotions"] if host_tier else None,
        "host_bytes_written": host_tier["host_bytes_written"] if host_tier else None,
        "same_tokens": bounded["text"] == unbounded["text"] if unbounded else None,
        "locality": tier["locality"], "promotions": tier["promotions"], "demotions": tier["demotions"],
        "fetch_ms_per_promotion": 1000 * tier["fetch_seconds"] / max(1, tier["promotions"]),
        "disk_bytes_read": tier["disk_bytes_read"], "spilled_chunks": tier["spilled_chunks"],
        "over_budget": tier["over_budget"],
        "decode_ms_per_token": decode_ms,
        "decode_ratio_to_short": decode_ms["bounded"] / decode_ms["short"],
        "short_tokens": short["token_ids"],
        "ttft_s": {name: run["ttft_s"] for name, run in runs.items()},
        "wall_s": {name: run["wall_s"] for name, run in runs.items()},
        "peak_rss_mib": {name: run["peak_rss_mib"] for name, run in runs.items()},
        "unbounded_restored_tokens": unbounded["disk_tokens"] if unbounded else None,
        "text": {name: run["text"] for name, run in runs.items()},
    }
    met = {"device_peak_within_budget": tier["device_peak"] <= tier["device_budget"],
           "locality": tier["locality"] >= 0.6}
    if host_tier:
        met["host_peak_within_budget"] = host_tier["host_peak"] <= host_tier["host_budget"]
    if unbounded:
        met["same_tokens"] = figures["same_tokens"]
    if len(ids) >= 1 << 20:
        met["peak_rss_le_12_gib"] = bounded["peak_rss_mib"] <= 12 * 1024
        met["decode_le_3x_short"] = figures["decode_ratio_to_short"] <= 3.0
    print(json.dumps({
        "bench": "kv-tiers", "machine": machine(),
        "config": {"model": "SmolLM2-135M-Instruct Q4_1 (bf16)", "attention": "sparse-fp8", "tokens": len(ids),
                   "threads": args.threads, "max_tokens": args.max_tokens,
                   "device_budget": f"1/{args.device_fraction} of the KV", "host_budget_mib": args.host_mib},
        "figures": figures, "baselines": {"decode_ms_per_token": decode_ms},
        "targets": TIER_TARGETS, "met": met,
    }, ensure_ascii=False))


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
    parser.add_argument("--tiers", action="store_true", help="a bounded device tier over a long context instead")
    parser.add_argument("--max-tokens", type=int, default=64, help="with --tiers: tokens decoded")
    parser.add_argument("--device-fraction", type=int, default=32,
                        help="with --tiers: the device budget is the context's KV over this (default: %(default)s)")
    parser.add_argument("--host-mib", type=int, default=None,
                        help="with --tiers: the host tier's budget (bounds and scales, and FP8 codes); default: unbounded")
    parser.add_argument("--short-tokens", type=int, default=8192,
                        help="with --tiers: decode is also timed on this long a prefix (default: %(default)s)")
    parser.add_argument("--unbounded", action=argparse.BooleanOptionalAction, default=True,
                        help="with --tiers: also run without budgets and compare tokens (too big at 1M on 24 GiB)")
    parser.add_argument("--scratch", default=None, help="with --tiers: folder for the chunks (default: $TMPDIR)")
    parser.add_argument("--tier-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device-mib", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.cache, args.threads, args.max_context)
        return
    if args.tier_worker:
        tier_worker(args.tier_worker, args.cache, args.threads, args.max_context, args.device_mib, args.host_mib,
                    args.max_tokens)
        return
    if args.tiers:
        if args.tokens == parser.get_default("tokens"):
            args.tokens = 262144
        run_tiers(args)
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
