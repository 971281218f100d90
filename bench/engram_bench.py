"""Engram: recall quality on a labelled set from real projects, recall latency in a large store,
write throughput (issue 5).

- quality: the memories of bench/engram_sets (rule files and changelog fixes of 9 projects from
  PyPI and npm, 44 of them in Chinese) go into a fresh store, one repository partition per
  project; each of the set's queries (English and Chinese, half of them cross-language) is ranked
  by the hybrid recall and, in the same run, by its FTS5 leg alone and its vector leg alone.
  recall@5 = share of a query's relevant memories in the first five; MRR of the first relevant.
- latency: a store of --memories synthetic memories over 20 repositories (--repo-memories in the
  one queried), written through the real path (redaction, embedding, dedup); then --queries
  recalls for that repository, timed end to end (query embedding included), with the FTS-only
  and vector-only recalls as the baselines.
- writes: memories/s through `add_many` (batched embedding) while filling, and the latency of
  single `add` calls (one embedding and one transaction each).

    python bench/engram_bench.py            # 100k memories: ~12 min on 2 cores (embedding dominates)
    python bench/engram_bench.py --quick    # 10k memories, 50 queries

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from bench.machine import machine
from engine.embedder import DEFAULT_EMBEDDER, load_embedder
from engram.recall import rank, recall
from engram.records import MemoryDraft
from engram.store import MemoryStore

SETS = ROOT / "bench" / "engram_sets"
MODES = {"hybrid": ("vector", "fts", "glob"), "fts_only": ("fts",), "vector_only": ("vector",)}
TARGETS = {"recall_at_5": [">=", 0.85], "recall_at_5_cross_language": [">=", 0.75], "recall_p95_ms": ["<=", 50]}
OTHER_REPOS = 19


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def quality(embedder, workdir: Path) -> dict:
    memories = [json.loads(line) for line in (SETS / "memories.jsonl").read_text(encoding="utf-8").splitlines() if line]
    queries = [json.loads(line) for line in (SETS / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line]
    store = MemoryStore.open(workdir / "quality.db", embedder=lambda: embedder)
    stored: dict[str, int] = {}  # set id -> store id (a near duplicate maps onto the memory it joined)
    for project in sorted({m["project"] for m in memories}):
        group = [m for m in memories if m["project"] == project]
        drafts = [MemoryDraft(kind=m["kind"], statement=m["statement"], rationale=m.get("rationale", ""),
                              how_to_apply=m.get("how_to_apply", ""), globs=tuple(m.get("globs", ())))
                  for m in group]
        for m, result in zip(group, store.add_many(drafts, f"bench-{project}"), strict=True):
            stored[m["id"]] = result.id
    merged = len(stored) - len(set(stored.values()))

    rows = []
    for q in queries:
        relevant = {stored[i] for i in q["relevant"]}
        row = {"language": q["language"], "cross": q["cross_language"]}
        for mode, legs in MODES.items():
            ranked = [r.memory.id for r in rank(store, q["query"], f"bench-{q['project']}", legs=legs)]
            top = ranked[:5]
            row[mode] = (len(relevant & set(top)) / len(relevant),
                         next((1 / (i + 1) for i, m in enumerate(ranked) if m in relevant), 0.0))
        rows.append(row)
    store.close()

    def summary(selected: list[dict]) -> dict:
        return {mode: {"recall_at_5": round(statistics.fmean(r[mode][0] for r in selected), 3),
                       "mrr": round(statistics.fmean(r[mode][1] for r in selected), 3)} for mode in MODES} | {
            "queries": len(selected)}

    return {
        "memories": len(memories), "merged_as_near_duplicates": merged, "queries": len(queries),
        "all": summary(rows),
        "cross_language": summary([r for r in rows if r["cross"]]),
        "same_language": summary([r for r in rows if not r["cross"]]),
        "english_queries": summary([r for r in rows if r["language"] == "en"]),
        "chinese_queries": summary([r for r in rows if r["language"] == "zh"]),
    }


# Synthetic memories for the large store: varied enough that few are near duplicates.
_SUBJECTS = ["the HTTP client", "the billing service", "database migrations", "the CLI", "API handlers", "the cache layer",
             "background jobs", "the websocket gateway", "unit tests", "the build script", "logging", "config files",
             "支付模块", "数据库迁移", "日志", "前端组件", "定时任务", "缓存层"]
_RULES = ["must retry {x} times with backoff before failing", "never call {y}() directly; go through {z}",
          "use {y} instead of {z} for new code", "keep {y} under {x} lines", "log {y} at debug level only",
          "validate {y} before writing it to {z}", "close {y} in a finally block", "pin {y} to version {x}.{x}",
          "必须在调用 {y} 之前检查 {z}", "不要在 {y} 里直接访问 {z}", "{y} 的超时时间设为 {x} 秒"]
_WORDS = ["session", "token", "payload", "cursor", "batch", "ledger", "invoice", "tenant", "schema", "queue", "shard",
          "webhook", "manifest", "snapshot", "bucket", "span", "lease", "quota"]


def synthetic_drafts(rng: random.Random, n: int) -> list[MemoryDraft]:
    drafts = []
    for i in range(n):
        y = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}{i % 997}"
        z = f"{rng.choice(_WORDS)}{rng.randrange(1000)}"
        rule = rng.choice(_RULES).format(x=rng.randrange(2, 60), y=y, z=z)
        drafts.append(MemoryDraft(kind=rng.choice(["convention", "decision", "fix", "gotcha"]),
                                  statement=f"{rng.choice(_SUBJECTS)}: {rule}.",
                                  globs=(f"src/{rng.choice(_WORDS)}/**",) if rng.random() < 0.2 else ()))
    return drafts


def latency(embedder, workdir: Path, total: int, in_repo: int, num_queries: int, rng: random.Random) -> dict:
    store = MemoryStore.open(workdir / "large.db", embedder=lambda: embedder)
    target = "bench-target"
    per_other = (total - in_repo) // OTHER_REPOS
    plan = [(target, in_repo)] + [(f"bench-other-{i}", per_other) for i in range(OTHER_REPOS)]
    written, stored, started = 0, 0, time.perf_counter()
    for repo, count in plan:
        new = 0
        while new < count:  # near duplicates fold into earlier memories: write until `count` are distinct
            results = store.add_many(synthetic_drafts(rng, count - new), repo)
            written += len(results)
            new += sum(r.action in ("added", "superseded") for r in results)
        stored += new
        log(f"  {stored:,}/{total:,} stored ({written / (time.perf_counter() - started):.0f} writes/s)")
    fill_s = time.perf_counter() - started
    counts = store.counts()

    singles = []
    for draft in synthetic_drafts(rng, 50):
        start = time.perf_counter()
        store.add(draft, target)
        singles.append((time.perf_counter() - start) * 1000)

    queries = [f"{rng.choice(_SUBJECTS)} {rng.choice(_WORDS)} {rng.choice(['retry', 'timeout', 'log', '超时', '重试'])}"
               for _ in range(num_queries)]
    timings: dict[str, list[float]] = {}
    for mode, legs in MODES.items():
        for q in queries:  # the first query of a mode also warms its caches
            start = time.perf_counter()
            recall(store, q, target, path="src/ledger/api.py", purpose="chat", legs=legs)
            timings.setdefault(mode, []).append((time.perf_counter() - start) * 1000)
    size_mib = sum(p.stat().st_size for p in workdir.glob("large.db*")) / 2**20
    store.close()
    return {
        "memories_stored": counts["memories"], "in_queried_repo": in_repo, "repositories": OTHER_REPOS + 1,
        "writes": written, "fill_s": round(fill_s, 1), "add_many_per_s": round(written / fill_s, 1),
        "single_add_ms": {"p50": percentile(singles, 0.5), "p95": percentile(singles, 0.95)},
        "recall_ms": {mode: {"p50": percentile(t, 0.5), "p95": percentile(t, 0.95)} for mode, t in timings.items()},
        "database_mib": round(size_mib, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--repo-memories", type=int, default=5_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="10k memories, 1k in the queried repository, 50 queries")
    parser.add_argument("--skip-latency", action="store_true", help="the quality part only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.memories, args.repo_memories, args.queries = 10_000, 1_000, 50
    embedder = load_embedder(DEFAULT_EMBEDDER)
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="engram-bench-") as tmp:
        log("quality on bench/engram_sets …")
        figures["quality"] = quality(embedder, Path(tmp))
        log(json.dumps(figures["quality"]["all"]))
        if not args.skip_latency:
            log(f"latency: {args.memories:,} memories, {args.repo_memories:,} in the queried repository …")
            figures["latency"] = latency(embedder, Path(tmp), args.memories, args.repo_memories, args.queries,
                                         random.Random(args.seed))
    hybrid = figures["quality"]["all"]["hybrid"]
    measured = {"recall_at_5": hybrid["recall_at_5"],
                "recall_at_5_cross_language": figures["quality"]["cross_language"]["hybrid"]["recall_at_5"]}
    if "latency" in figures:
        measured["recall_p95_ms"] = figures["latency"]["recall_ms"]["hybrid"]["p95"]
    met = {name: (value >= TARGETS[name][1] if TARGETS[name][0] == ">=" else value <= TARGETS[name][1])
           for name, value in measured.items()}
    result = {"bench": "engram", "machine": machine(),
              "config": {"embedder": DEFAULT_EMBEDDER, "memories": args.memories, "repo_memories": args.repo_memories,
                         "queries": args.queries, "seed": args.seed},
              "figures": figures,
              "baselines": {"fts_only": figures["quality"]["all"]["fts_only"],
                            "vector_only": figures["quality"]["all"]["vector_only"]},
              "targets": TARGETS, "measured": measured, "met": met}
    line = json.dumps(result, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(line + "\n", encoding="utf-8")
    print(line)


if __name__ == "__main__":
    main()
