"""Engine speed: prefill and decode at 512 / 2k / 8k context, cached-prefix TTFT, peak RSS.

Each system runs in its own process (so peak RSS is its own), on the same GGUF file and the same
prompts (real code: this repository's Python sources): Zhiyin's engine, transformers' `generate`
on the same weights in the same dtype, and llama.cpp (llama-cpp-python) where installed.

    python bench/engine_bench.py            # defaults: a few minutes on 2 cores
    python bench/engine_bench.py --full     # more repeats, 64 decode tokens

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402

CONTEXTS = {"512": 512, "2k": 2048, "8k": 8000}  # 8k leaves room for the decoded tokens in 8,192
CACHED_PREFIX, NEW_TOKENS = 2048, 16
# llama.cpp on these machines (DESIGN.md), used for targets when it is not installed here.
LLAMA_CPP_RECORDED = {"prefill_tps": {"512": 185, "2k": 135, "8k": 80}, "decode_tps": {"512": 63, "2k": 47, "8k": 19}}


_corpus: list[int] = []


def corpus_ids(tokenizer, n: int, offset: int) -> list[int]:
    """n token ids of real code, starting `offset` tokens in (a different prompt per repeat)."""
    if not _corpus:
        text = "".join(p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("[ebt]*/**/*.py")))
        _corpus.extend(tokenizer.encode(text))
    ids = _corpus
    while len(ids) < n + offset:
        ids = ids + ids
    return ids[offset : offset + n]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_zhiyin(model: Path, repeats: int, decode_tokens: int, threads: int) -> dict:
    from engine import EngineOptions, LLMEngine, SamplingParams

    engine = LLMEngine.load(model, EngineOptions(num_threads=threads))
    figures: dict = {"prefill_tps": {}, "decode_tps": {}}
    engine.generate(corpus_ids(engine.tokenizer, 64, 0), SamplingParams(max_tokens=4)).__next__()  # warm-up
    for name, ctx in CONTEXTS.items():
        prefill, decode = [], []
        for r in range(repeats):
            ids = corpus_ids(engine.tokenizer, ctx, 1000 * (r + 1) + ctx)  # unseen: no prefix reuse
            last = list(engine.generate(ids, SamplingParams(max_tokens=decode_tokens + 1, ignore_eos=True)))[-1]
            assert last.stats.num_cached_tokens == 0
            prefill.append(ctx / last.stats.time_to_first_token_s)
            decode.append(last.stats.decode_tokens_per_s)
        figures["prefill_tps"][name] = statistics.median(prefill)
        figures["decode_tps"][name] = statistics.median(decode)
    cold, warm = [], []
    for r in range(repeats):
        prefix = corpus_ids(engine.tokenizer, CACHED_PREFIX, 50_000 + 3000 * r)
        suffix = corpus_ids(engine.tokenizer, NEW_TOKENS, 500 + 40 * r)
        first = list(engine.generate(prefix + suffix, SamplingParams(max_tokens=1)))[-1].stats
        suffix2 = corpus_ids(engine.tokenizer, NEW_TOKENS, 900 + 40 * r)
        second = list(engine.generate(prefix + suffix2, SamplingParams(max_tokens=1)))[-1].stats
        assert first.num_cached_tokens == 0 and second.num_cached_tokens == CACHED_PREFIX
        cold.append(first.time_to_first_token_s)
        warm.append(second.time_to_first_token_s)
    figures["ttft_cold_ms"] = statistics.median(cold) * 1000
    figures["ttft_cached_ms"] = statistics.median(warm) * 1000
    figures["peak_rss_mib"] = peak_rss_mib()
    return figures


def run_transformers(model: Path, repeats: int, decode_tokens: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from engine.checkpoints import load_checkpoint

    torch.set_num_threads(threads)
    tokenizer = load_checkpoint(model).tokenizer
    hf = AutoModelForCausalLM.from_pretrained(model.parent, gguf_file=model.name, dtype=torch.bfloat16).eval()
    figures: dict = {"prefill_tps": {}, "decode_tps": {}}

    def timed(ids, n):
        start = time.perf_counter()
        with torch.no_grad():
            hf.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start

    timed(corpus_ids(tokenizer, 64, 0), 2)
    for name, ctx in CONTEXTS.items():
        prefill, decode = [], []
        for r in range(repeats):
            ids = corpus_ids(tokenizer, ctx, 1000 * (r + 1) + ctx)
            first = timed(ids, 1)
            total = timed(ids, decode_tokens + 1)
            prefill.append(ctx / first)
            decode.append(decode_tokens / max(total - first, 1e-9))
        figures["prefill_tps"][name] = statistics.median(prefill)
        figures["decode_tps"][name] = statistics.median(decode)
    figures["peak_rss_mib"] = peak_rss_mib()
    return figures


def run_llama_cpp(model: Path, repeats: int, decode_tokens: int, threads: int) -> dict:
    from llama_cpp import Llama

    from engine.checkpoints import load_checkpoint

    tokenizer = load_checkpoint(model).tokenizer
    llm = Llama(model_path=str(model), n_ctx=8192, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
    figures: dict = {"prefill_tps": {}, "decode_tps": {}}
    for name, ctx in CONTEXTS.items():
        prefill, decode = [], []
        for r in range(repeats):
            ids = corpus_ids(tokenizer, ctx, 1000 * (r + 1) + ctx)
            llm.reset()
            start = time.perf_counter()
            llm.eval(ids)
            prefill.append(ctx / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(decode_tokens):
                llm.eval([ids[-1]])
            decode.append(decode_tokens / (time.perf_counter() - start))
        figures["prefill_tps"][name] = statistics.median(prefill)
        figures["decode_tps"][name] = statistics.median(decode)
    figures["peak_rss_mib"] = peak_rss_mib()
    return figures


SYSTEMS = {"zhiyin": run_zhiyin, "transformers": run_transformers, "llama.cpp": run_llama_cpp}


def targets(ours: dict, baselines: dict) -> tuple[dict, dict]:
    llama = baselines.get("llama.cpp") or LLAMA_CPP_RECORDED
    hf = baselines.get("transformers")
    wanted = {
        **{f"prefill_tps_{k}": [">=", 5 * llama["prefill_tps"][k]] for k in CONTEXTS},
        "decode_tps_2k_vs_llama.cpp": [">=", llama["decode_tps"]["2k"]],
        "ttft_cached_ms": ["<=", ours["ttft_cold_ms"] / 10],
    }
    got = {**{f"prefill_tps_{k}": ours["prefill_tps"][k] for k in CONTEXTS},
           "decode_tps_2k_vs_llama.cpp": ours["decode_tps"]["2k"], "ttft_cached_ms": ours["ttft_cached_ms"]}
    if hf:
        for k in CONTEXTS:
            wanted[f"decode_tps_{k}_vs_transformers"] = [">=", hf["decode_tps"][k]]
            got[f"decode_tps_{k}_vs_transformers"] = ours["decode_tps"][k]
    met = {name: (got[name] >= v if op == ">=" else got[name] <= v) for name, (op, v) in wanted.items()}
    return wanted, met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the embedded default model)")
    parser.add_argument("--full", action="store_true", help="5 repeats and 64 decode tokens")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--systems", default="zhiyin,transformers,llama.cpp")
    parser.add_argument("--only", choices=sorted(SYSTEMS), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    from engine.model_files import default_model_path

    model = args.model or default_model_path()
    repeats = args.repeats or (5 if args.full else 3)
    decode_tokens = 64 if args.full else 32
    if args.only:
        print(json.dumps(SYSTEMS[args.only](model, repeats, decode_tokens, args.threads)))
        return

    results = {}
    for system in args.systems.split(","):
        print(f"running {system} …", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--only", system, "--model", str(model), "--threads", str(args.threads),
               "--repeats", str(repeats)] + (["--full"] if args.full else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if proc.returncode != 0:
            reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            print(f"  {system} skipped: {reason}", file=sys.stderr)
            continue
        results[system] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {json.dumps(results[system])}", file=sys.stderr)
    ours = results.pop("zhiyin")
    wanted, met = targets(ours, results)
    print(json.dumps({
        "bench": "engine",
        "machine": machine(),
        "config": {"model": model.name, "dtype": "bf16 (+int8 decode weights)", "threads": args.threads,
                   "repeats": repeats, "decode_tokens": decode_tokens, "contexts": CONTEXTS,
                   "cached_prefix": CACHED_PREFIX, "new_tokens": NEW_TOKENS,
                   "llama_cpp_source": "measured" if "llama.cpp" in results else "recorded in DESIGN.md"},
        "figures": ours,
        "baselines": results,
        "targets": wanted,
        "met": met,
    }))


if __name__ == "__main__":
    main()
