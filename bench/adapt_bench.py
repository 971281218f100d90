"""Repository adaptation (`zhiyin adapt`) on real repositories no test wrote, plain vs mHC residuals.

Repositories (bench/corpora.py): wechatpy 1.8.18 (Python, PyPI, Chinese docstrings) and rxjs 7.8.2
`src/` (TypeScript, npm). Files are split into training and held-out validation by path hash, as
`zhiyin adapt` does.

Figures, per repository:
- held-out bits per byte of the base model, and after adaptation with plain and mHC residuals at
  equal wall time: the first run trains for `--minutes` (evaluation not counted), the others take
  as many steps (equal work, whatever else loads the machine); per seed and median;
- steps and seconds for mHC to reach the plain run's final validation loss (same seed, curve of
  validation points every `--eval-every` steps), and the ratio to plain's steps;
- the learned residual scales α per layer (mean over seeds);
- next-line exact match at cursor positions mined from the held-out files: base vs the adapted model
  (seed 0, mHC) served by the engine (bf16), greedy, same prompts.

    python bench/adapt_bench.py                        # 2 repositories x 1 seed x 5 min x 2 modes
    python bench/adapt_bench.py --minutes 4 --seeds 3  # what README reports (~65 minutes)
    python bench/adapt_bench.py --full                 # 20 minutes per run, 3 seeds

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import corpora
import torch

from bench.machine import machine
from engine import EngineOptions, LLMEngine
from engine.model_files import default_model_path
from engine.sampling import SamplingParams
from zhiyin.adaptation import AdaptSettings, adapt, build_corpus, open_training_engine

REPOSITORIES = {"wechatpy": corpora.chinese_documented_package, "rxjs": corpora.npm_package}
TARGETS = {
    "bits_per_byte_reduction_min": [">=", 0.10],  # per repository, mHC seed median, ≤ 20 min on 2 cores
    "mhc_steps_saved_share": [">=", 0.30],  # the claim: ~30% faster training with mHC
}
PROMPT_CHARS = 3000  # context before a cursor position: ~1k tokens


def steps_to_reach(curve: list[dict], target: float) -> tuple[int | None, float | None]:
    """The first validation point at or below `target`: (step, seconds)."""
    for point in curve:
        if point["bits_per_byte"] <= target:
            return point["step"], point["seconds"]
    return None, None


def cursor_positions(root: Path, files: list[str], count: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, next line) pairs in held-out files: lines with ≥ 8 non-blank characters that are not
    comments, after ≥ 200 characters of the file. The prompt ends where the line before ends, before
    its newline: a prompt cut after the newline splits the newline-and-indent token the model would
    have written, and with it most predictions."""
    candidates = []
    for path in files:
        text = (root / path).read_text(encoding="utf-8", errors="replace")
        offset = 0
        for line in text.splitlines(keepends=True):
            stripped = line.strip()
            if offset >= 200 and len(stripped) >= 8 and not stripped.startswith(("#", "//", "*", "/*")):
                candidates.append((text[max(0, offset - PROMPT_CHARS) : offset - 1], stripped))
            offset += len(line)
    random.Random(seed).shuffle(candidates)
    return candidates[:count]


def exact_match(engine: LLMEngine, positions: list[tuple[str, str]]) -> float:
    """Share of positions whose first generated line (after the newline that ends the prompt's last
    line) equals the file's next line, leading and trailing blanks aside."""
    params = SamplingParams(max_tokens=48)
    hits = 0
    for prompt, line in positions:
        text = "".join(chunk.text for chunk in engine.generate(prompt, params))
        lines = text.split("\n")
        hits += len(lines) > 1 and lines[0].strip() == "" and lines[1].strip() == line
    return hits / max(1, len(positions))


def run_repository(name: str, args: argparse.Namespace, model: Path, out_dir: Path) -> dict:
    corpus_info = REPOSITORIES[name]()
    root = corpus_info.root
    engine = open_training_engine(model, args.threads)
    base = AdaptSettings(minutes=args.minutes, seq_len=args.seq_len, batch=args.batch, eval_every=args.eval_every,
                         eval_tokens=args.eval_tokens, checkpoint_every=10**9)
    corpus = build_corpus(root, engine, base)
    runs: dict[str, list[dict]] = {"plain": [], "mhc": []}
    for seed in range(args.seeds):
        for mode in ("plain", "mhc"):
            settings = replace(base, residual=mode, seed=seed)
            if runs["plain"]:  # the first run's steps for all: equal work whatever else loads the machine
                settings.minutes, settings.steps = None, runs["plain"][0]["steps"]
            started = time.perf_counter()
            result = adapt(root, engine, out_dir / f"{name}-{mode}-{seed}.safetensors", settings, restart=True,
                           corpus=corpus)
            row = result.as_dict() | {"wall_s": round(time.perf_counter() - started, 1)}
            runs[mode].append(row)
            print(f"# {name} seed {seed} {mode}: {result.steps} steps, bits/byte {result.bits_per_byte_before:.4f}"
                  f" -> {result.bits_per_byte_after:.4f}", file=sys.stderr, flush=True)
    del engine
    comparisons = []
    for plain, mhc in zip(runs["plain"], runs["mhc"]):
        target = plain["curve"][-1]["bits_per_byte"]
        step, seconds = steps_to_reach(mhc["curve"], target)
        comparisons.append({"plain_steps": plain["steps"], "plain_seconds": round(plain["train_seconds"], 1),
                            "mhc_steps_to_plain_final": step, "mhc_seconds_to_plain_final": seconds,
                            "steps_saved_share": None if step is None else 1 - step / plain["steps"]})
    before = runs["mhc"][0]["bits_per_byte_before"]
    after = {mode: statistics.median(r["bits_per_byte_after"] for r in rows) for mode, rows in runs.items()}
    layers = len(runs["mhc"][0]["residual_scales"])
    alpha = [[round(statistics.mean(r["residual_scales"][i][j] for r in runs["mhc"]), 4) for j in range(2)]
             for i in range(layers)]
    figures = {
        "repository": corpus_info.source, "language": corpus_info.language,
        "train_files": runs["mhc"][0]["train_files"], "validation_files": runs["mhc"][0]["validation_files"],
        "validation_bytes": corpus.validation_bytes,
        "bits_per_byte_base": before,
        "bits_per_byte_plain_median": after["plain"], "bits_per_byte_mhc_median": after["mhc"],
        "reduction_plain": 1 - after["plain"] / before, "reduction_mhc": 1 - after["mhc"] / before,
        "mhc_vs_plain": comparisons,
        "residual_scales_mean": alpha,
        "runs": {mode: [{k: v for k, v in r.items() if k != "residual_scales"} for r in rows]
                 for mode, rows in runs.items()},
    }
    if args.positions:
        positions = cursor_positions(root, corpus.validation_files, args.positions, seed=0)
        options = EngineOptions(num_threads=args.threads)
        base_engine = LLMEngine.load(model, options)
        figures["next_line_exact_match_base"] = exact_match(base_engine, positions)
        del base_engine
        adapted = LLMEngine.load(model, EngineOptions(num_threads=args.threads,
                                                      adapter=out_dir / f"{name}-mhc-0.safetensors"))
        figures["next_line_exact_match_adapted"] = exact_match(adapted, positions)
        figures["next_line_positions"] = len(positions)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", default=",".join(REPOSITORIES), help="comma-separated: wechatpy, rxjs")
    parser.add_argument("--minutes", type=float, default=5.0, help="training time per run")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="20 minutes per run, 3 seeds")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-tokens", type=int, default=8192, help="validation tokens at each curve point")
    parser.add_argument("--positions", type=int, default=100, help="next-line positions per repository")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.full:
        args.minutes, args.seeds = 20.0, 3
    torch.set_num_threads(args.threads)
    model = default_model_path()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.repos.split(","):
            results[name] = run_repository(name, args, model, Path(tmp))
    shares = [c["steps_saved_share"] for r in results.values() for c in r["mhc_vs_plain"]]
    figures = {
        "repositories": results,
        "bits_per_byte_reduction_min": min(r["reduction_mhc"] for r in results.values()),
        "mhc_steps_saved_share": statistics.median(s if s is not None else -1.0 for s in shares),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }
    met = {"bits_per_byte_reduction_min": figures["bits_per_byte_reduction_min"] >= 0.10 and args.minutes <= 20,
           "mhc_steps_saved_share": figures["mhc_steps_saved_share"] >= 0.30}
    print(json.dumps({
        "bench": "adapt", "machine": machine(),
        "config": {"model": "SmolLM2-135M-Instruct Q4_1 (fp32 weights, bf16 autocast)", "minutes_per_run": args.minutes,
                   "seeds": args.seeds, "seq_len": args.seq_len, "batch": args.batch, "threads": args.threads,
                   "rank": AdaptSettings.rank, "eval_every": args.eval_every},
        "figures": figures,
        "baselines": {name: {"bits_per_byte_base": r["bits_per_byte_base"],
                             "bits_per_byte_plain_median": r["bits_per_byte_plain_median"],
                             "next_line_exact_match_base": r.get("next_line_exact_match_base")}
                      for name, r in results.items()},
        "targets": TARGETS, "met": met,
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
