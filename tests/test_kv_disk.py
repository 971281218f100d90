"""The disk tier: persisted prompt prefixes restored by a new process, and every way a chunk can go bad."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine import EngineOptions, LLMEngine, SamplingParams
from engine.kv_disk import DiskKVStore
from engine.kv_persist import block_hashes
from engine.sparse_attention import SparseConfig

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "".join(f"def handler_{i}(request, retries={i % 5}):\n    return dispatch(request, {i})\n\n"
                 for i in range(70))
PARAMS = SamplingParams(max_tokens=12, ignore_eos=True)


def engine_with_disk(default_model, folder: Path, **options) -> LLMEngine:
    return LLMEngine.load(default_model, EngineOptions(kv_disk_dir=folder, kv_cache_mib=64, **options))


def run(engine: LLMEngine, prompt: str = PROMPT) -> tuple[str, object]:
    chunks = list(engine.generate(prompt, PARAMS))
    engine.persistence.flush()
    return "".join(c.text for c in chunks), chunks[-1].stats


def chunk_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.kv"))


def in_new_process(folder: Path, body: str) -> subprocess.CompletedProcess:
    """Runs `body` in a new Python process where `e` is the default model's engine with its disk tier in
    `folder`, PROMPT is this module's, and json, sys and SamplingParams are imported."""
    code = ("import json, sys; from pathlib import Path; from engine import EngineOptions, LLMEngine, SamplingParams;"
            "from engine.model_files import default_model_path; PROMPT = sys.argv[2];"
            "e = LLMEngine.load(default_model_path(), EngineOptions(kv_disk_dir=Path(sys.argv[1]), kv_cache_mib=64));"
            + body)
    return subprocess.run([sys.executable, "-c", code, str(folder), PROMPT], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)


@pytest.mark.slow
def test_a_new_process_restores_the_prefix_from_disk(default_model, tmp_path):
    first = engine_with_disk(default_model, tmp_path)
    text, stats = run(first)
    prompt_len = len(first.encode(PROMPT))
    whole_chunks = prompt_len // 256
    assert stats.num_disk_tokens == 0 and len(chunk_files(tmp_path)) == whole_chunks >= 4
    done = in_new_process(tmp_path, "c = list(e.generate(PROMPT, SamplingParams(max_tokens=12, ignore_eos=True)));"
                          "print(json.dumps({'text': ''.join(x.text for x in c),"
                          "                  'disk': c[-1].stats.num_disk_tokens}))")
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    restorable = min(whole_chunks * 256, (prompt_len - 1) // 256 * 256)  # the last token is always computed
    assert second == {"text": text, "disk": restorable}


@pytest.mark.slow
def test_a_process_that_exits_mid_generation_exits_cleanly_and_leaves_its_chunks(default_model, tmp_path):
    """The engine loop is still decoding when the interpreter exits: it is stopped and joined (a daemon
    thread inside torch at finalization aborts the process, status 134), then the queued chunks are written."""
    done = in_new_process(tmp_path, "g = e.generate(PROMPT, SamplingParams(max_tokens=500, ignore_eos=True));"
                          "next(g); next(g); print(len(e.encode(PROMPT)), flush=True); sys.exit(0)")
    assert done.returncode == 0, done.stderr
    assert len(chunk_files(tmp_path)) == int(done.stdout) // 256 >= 4


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["deleted", "truncated", "flipped"])
def test_a_damaged_chunk_is_recomputed_and_the_output_unchanged(default_model, tmp_path, damage):
    first = engine_with_disk(default_model, tmp_path)
    text, _ = run(first)
    victim = first.persistence.store.path(block_hashes(first.encode(PROMPT), 64)[2 * 4 - 1])  # chunk 1
    data = victim.read_bytes()
    if damage == "deleted":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(data[: len(data) // 3])
    else:
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        victim.write_bytes(bytes(flipped))
    engine = engine_with_disk(default_model, tmp_path)
    again, stats = run(engine)
    assert again == text
    assert stats.num_disk_tokens == 256  # chunk 0 only: the chain stops at the bad chunk
    assert engine.persistence.store.stats.corrupt == (damage != "deleted")
    assert victim.is_file() and victim.stat().st_size == len(data)  # written again, whole


@pytest.mark.slow
def test_the_disk_budget_evicts_and_never_fails(default_model, tmp_path):
    engine = engine_with_disk(default_model, tmp_path, kv_disk_mib=12)  # two chunks of ~5.9 MB
    for variant in range(3):
        run(engine, PROMPT.replace("handler", f"handler{variant}"))
    store = engine.persistence.store
    assert store.disk_bytes() <= 12 << 20 and store.stats.evicted > 0 and len(chunk_files(tmp_path)) == 2


def remapping_engine(default_model, folder: Path) -> LLMEngine:
    """A sparse engine with a disk tier that remaps (so prefills sparsely) past 700 tokens."""
    config = SparseConfig(sink_tokens=64, window_tokens=256, recent_tokens=128, budget_tokens=256, target_mass=None)
    e = LLMEngine.load(default_model, EngineOptions(dtype="bf16", attention="sparse-fp8", sparse=config,
                                                    max_context=8192 + 64, kv_cache_mib=128, kv_disk_dir=folder))
    e.model.sparse = replace(e.model.sparse, remap_beyond=700)
    return e


@pytest.mark.slow
def test_sparse_pools_of_restored_blocks_match_the_computed_ones(default_model, tmp_path):
    """Past the trained window, decode reads block bounds and FP8 keys (rotated and not): rebuilt from
    restored keys, they are those the prefill wrote, bit for bit (bf16: the pre-RoPE keys are the
    cached ones rotated back in both), and the continuation is the same."""
    def engine():
        return remapping_engine(default_model, tmp_path)

    first = engine()
    text, _ = run(first)
    second = engine()
    again, stats = run(second)
    assert again == text and stats.num_disk_tokens >= 1024
    blocks = stats.num_disk_tokens // 64
    for layer in (0, 7, 29):
        ours, theirs = second.kv.sparse_pools[layer], first.kv.sparse_pools[layer]
        for pool in ("keys", "unrotated"):
            a, b = getattr(ours, pool), getattr(theirs, pool)
            assert torch.equal(a.k_min[:, :blocks], b.k_min[:, :blocks])
            assert torch.equal(a.k_max[:, :blocks], b.k_max[:, :blocks])
            assert torch.equal(a.k8[:, : blocks * 64].view(torch.uint8), b.k8[:, : blocks * 64].view(torch.uint8))


@pytest.mark.slow
def test_a_prompt_that_prefills_sparsely_is_restored_up_to_a_grid_line(default_model, tmp_path):
    """Where each prefill chunk selects what it attends, a prompt's chunks keep one grid: restored
    from disk only up to a grid line, the rest prefills in the cold run's chunks, to its tokens."""
    def engine():
        return remapping_engine(default_model, tmp_path)

    first = engine()
    grid = first.options.prefill_chunk
    prompt = first.encode(PROMPT)[: 2 * grid + 376]  # five whole 256-token chunks end past the grid line
    cold = list(first.generate(prompt, PARAMS))
    first.persistence.flush()
    assert len(chunk_files(tmp_path)) == len(prompt) // 256 == 5
    resumed = list(engine().generate(prompt, PARAMS))
    assert resumed[-1].stats.num_disk_tokens == 2 * grid
    assert "".join(c.text for c in resumed) == "".join(c.text for c in cold)


def random_chunk(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 4, 8, 16, generator=g).to(torch.bfloat16),
            torch.randn(2, 3, 64, 8, generator=g).to(torch.bfloat16))


def test_chunks_are_keyed_by_model_and_prefix(tmp_path):
    keys, values = random_chunk(0)
    store = DiskKVStore(tmp_path, "model-a", torch.bfloat16, 1 << 30)
    store.save(b"\x01" * 16, keys, values)
    loaded = store.load(b"\x01" * 16, keys.shape, values.shape)
    assert loaded is not None and torch.equal(loaded[0], keys) and torch.equal(loaded[1], values)
    assert store.load(b"\x02" * 16, keys.shape, values.shape) is None  # another prefix
    other_model = DiskKVStore(tmp_path, "model-b", torch.bfloat16, 1 << 30)
    assert other_model.load(b"\x01" * 16, keys.shape, values.shape) is None
    other_dtype = DiskKVStore(tmp_path, "model-a", torch.float32, 1 << 30)
    assert other_dtype.load(b"\x01" * 16, keys.shape, values.shape) is None


WRITER = """
import sys, torch
from pathlib import Path
from engine.kv_disk import DiskKVStore
from engine.kv_persist import block_hashes
store = DiskKVStore(Path(sys.argv[1]), "model", torch.bfloat16, int(sys.argv[3]))
first = int(sys.argv[2])
print("ready", flush=True)
for i in range(first, first + 400):
    g = torch.Generator().manual_seed(i)
    keys = torch.randn(4, 3, 4, 64, 64, generator=g).to(torch.bfloat16)
    values = torch.randn(4, 3, 256, 64, generator=g).to(torch.bfloat16)
    store.save(i.to_bytes(16, "big"), keys, values)
"""


def check_every_chunk(folder: Path) -> int:
    """Every chunk under its final name loads whole and holds what its writer wrote."""
    store = DiskKVStore(folder, "model", torch.bfloat16, 1 << 40)
    files = sorted(store.folder.glob("*.kv"))
    for path in files:
        i = int.from_bytes(bytes.fromhex(path.stem), "big")
        g = torch.Generator().manual_seed(i)
        loaded = store.load(bytes.fromhex(path.stem), (4, 3, 4, 64, 64), (4, 3, 256, 64))
        assert loaded is not None, path
        assert torch.equal(loaded[0], torch.randn(4, 3, 4, 64, 64, generator=g).to(torch.bfloat16))
    return len(files)


def test_a_writer_killed_mid_write_leaves_no_chunk_that_reads_as_valid(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "0", str(1 << 40)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    store_folder = next(tmp_path.iterdir())
    while len(list(store_folder.glob("*.kv"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    while not list(store_folder.glob(".*.tmp")) and time.monotonic() < deadline:  # caught while writing
        time.sleep(0.001)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert check_every_chunk(tmp_path) >= 3
    assert not list(store_folder.glob(".*.tmp"))  # the next store removed the dead writer's file, if any


def test_a_dead_writers_temporary_file_is_removed_a_live_ones_kept(tmp_path):
    store = DiskKVStore(tmp_path, "model", torch.bfloat16, 1 << 30)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (store.folder / f".abc.kv.{dead}.1.tmp").write_bytes(b"half a chunk")
    (store.folder / f".def.kv.{os.getpid()}.1.tmp").write_bytes(b"being written")
    DiskKVStore(tmp_path, "model", torch.bfloat16, 1 << 30)
    assert [p.name for p in store.folder.glob(".*.tmp")] == [f".def.kv.{os.getpid()}.1.tmp"]


def test_two_processes_share_a_folder_without_corrupting_it(tmp_path):
    budget = 8 << 20  # ~10 chunks of 0.8 MB: both processes evict while the other writes
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(first), str(budget)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for first in (0, 200)]  # chunks 200-399 are written by both
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    assert 0 < check_every_chunk(tmp_path)
    assert sum(p.stat().st_size for p in next(tmp_path.iterdir()).glob("*.kv")) <= budget
    assert not list(next(tmp_path.iterdir()).glob(".*.tmp"))


@pytest.mark.slow
def test_generate_leaves_its_prompt_on_disk_and_engine_stats_shows_it(tmp_path):
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path), "ZHIYIN_LANG": "en", "OMP_NUM_THREADS": "1"}

    def zhiyin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "zhiyin", *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=300, check=False)

    assert "Nothing stored yet" in zhiyin("engine", "stats").stdout
    first = zhiyin("generate", PROMPT, "--max-tokens", "4")
    assert first.returncode == 0 and "(0 cached)" in first.stderr
    listing = zhiyin("engine", "stats").stdout
    assert str(tmp_path / "zhiyin" / "kv") in listing and "SmolLM2-135M-Instruct" in listing
    again = zhiyin("generate", PROMPT, "--max-tokens", "4")
    assert again.stdout == first.stdout and "(1536 cached)" in again.stderr
