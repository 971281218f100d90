"""Signature copying past the trained window, trial by trial, under variants of the sparse configuration.

The context and trials are sparse_bench's (`long_context`: renamed signatures, then real stdlib code,
ending in the same `recent_code` at every length); one engine prefills the context once and every
variant reuses that prefix (a variant that changes the prefill's choices sees the first variant's
prefix, so compare decode-time settings this way, or run one variant per process). `--dense N` runs
dense attention at N tokens instead, as the baseline. Prints one JSON line per variant: how many and
which trials copied every parameter name, in order.

    OMP_NUM_THREADS=2 .venv/bin/python bench/sparse_copying.py --context 20480 --variants default,quest
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from sparse_bench import copy_trials, copying_context, long_context, recent_code

from engine import EngineOptions, LLMEngine
from engine.model_files import default_model_path

VARIANTS = {
    "default": {},  # packed by score, the selection remembered, 512 tokens per decode step, prefill by largest share
    "quest": {"scan_tokens": 0},  # Quest's bound preselects 4x the budget at every length
    "no-fp8": {"high_precision_share": 1.0},
    "budget-1024": {"remap_budget_tokens": 1024},
    "budget-384": {"remap_budget_tokens": 384},
    "budget-256": {"remap_budget_tokens": 256},
    "text-order": {"pack_by_score": False},  # the selected blocks packed in text order
    "no-memory": {"memory_decay": 0.0},  # each decode step selects afresh
    "memory-0.97": {"memory_decay": 0.97},  # a longer memory
    "prefill-sum": {"prefill_by_largest": False},  # prefill ranks by the shares' sum: one variant per process
}


def report(variant: str, context: int, results: list[dict], seconds: float) -> None:
    print(json.dumps({"variant": variant, "context": context, "copied": sum(r["copied"] for r in results),
                      "trials": len(results), "which": [i for i, r in enumerate(results) if r["copied"]],
                      "seconds": round(seconds), "results": results}, ensure_ascii=False), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, default=20480, help="tokens before each `def name(` prompt")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--variants", default="default", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--dense", type=int, default=0, help="run dense attention at this many tokens instead")
    args = parser.parse_args()
    model = default_model_path()
    longest = max(args.context, args.dense)
    engine = LLMEngine.load(model, EngineOptions(dtype="bf16", attention="sparse-fp8", max_context=longest + 64,
                                                 kv_cache_mib=int(longest * 40 / 1024) + 512))
    ids, found = long_context(engine, longest, args.trials)
    recent = recent_code(engine)
    if args.dense:
        engine = LLMEngine.load(model, EngineOptions(dtype="bf16", kv_cache_mib=1536))
        started = time.perf_counter()
        report("dense", args.dense, copy_trials(engine, copying_context(ids, args.dense, recent), found),
               time.perf_counter() - started)
        return
    base = engine.model.sparse
    for variant in args.variants.split(","):
        engine.model.set_sparse(replace(base, **VARIANTS[variant]))
        started = time.perf_counter()
        results = copy_trials(engine, copying_context(ids, args.context, recent), found)
        report(variant, args.context, results, time.perf_counter() - started)


if __name__ == "__main__":
    main()
