"""The device tier (a bounded set of KV blocks in the cache dtype, the rest read back from disk) and
the host tier (a bounded set of the FP8 copies sparse attention reads, the rest in a file).

The default model with a small window and budget (so that a ~2.8k-token prompt is long: remapped
positions from 512 on, chunks leaving the window after 256 tokens) and budgets below the prompt's
KV and FP8 copies, so that blocks are evicted, read back, and output must still match unbounded tiers.
"""

import argparse
import gc
import inspect
import shutil
import textwrap
import threading
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine import EngineOptions, LLMEngine, SamplingParams
from engine.kv_disk import DiskKVStore
from engine.kv_host import KINDS, HostTierNeedsSparseError, HostTierTooSmallError
from engine.kv_tiers import DeviceTierTooSmallError, KVChunkLostError, TieringNeedsSparseError
from engine.sparse_attention import SparseConfig

SPARSE = SparseConfig(sink_tokens=64, window_tokens=256, recent_tokens=128, budget_tokens=512, min_budget_tokens=512)
PROMPT = Path(inspect.getfile(argparse)).read_text(encoding="utf-8")[:12000]  # real code, ~2.8k tokens
PARAMS = SamplingParams(max_tokens=24, ignore_eos=True)
BUDGET_MIB = 40  # the prompt's KV is ~63 MiB; one step may need ~32
HOST_MIB = 44  # bounds and scales take ~21 MiB, one step ~20 MiB of FP8 codes; the prompt's are ~47 MiB
# Engines live as long as the test process (their scheduler threads hold them): few of them, small pools.


def engine(default_model, folder: Path, device_mib: int | None, **options) -> LLMEngine:
    loaded = LLMEngine.load(default_model, EngineOptions(
        attention="sparse-fp8", sparse=SPARSE, max_context=8192 + 64, kv_cache_mib=64, prefill_chunk=256,
        kv_disk_dir=folder, kv_device_mib=device_mib, **options))
    loaded.model.sparse = replace(loaded.model.sparse, remap_beyond=512)  # read by the first forward
    return loaded


def generate(e: LLMEngine, prompt: str = PROMPT) -> str:
    return "".join(c.text for c in e.generate(prompt, PARAMS))


@pytest.fixture(scope="module")
def unbounded_run(default_model, tmp_path_factory) -> tuple[str, Path]:
    """The prompt's tokens from an unbounded cache, and the folder its chunks were written to."""
    folder = tmp_path_factory.mktemp("unbounded")
    reference = engine(default_model, folder, None)
    text = generate(reference)
    reference.persistence.flush()
    return text, folder


@pytest.fixture
def unbounded(unbounded_run) -> str:
    return unbounded_run[0]


@pytest.mark.slow
def test_bounded_device_and_host_tiers_give_the_tokens_of_an_unbounded_cache(default_model, tmp_path, unbounded):
    bounded = engine(default_model, tmp_path, BUDGET_MIB, kv_host_mib=HOST_MIB)
    assert generate(bounded) == unbounded
    host = bounded.host.stats
    assert host.host_peak <= HOST_MIB << 20 and host.host_demotions > 0 and host.host_promotions > 0
    assert host.host_bytes_written > 0 and host.host_bytes_read > 0 and host.over_budget == 0
    assert not list(tmp_path.glob(".zhiyin-host-*"))  # its file was unlinked once open: nothing to leave behind
    # FP8 codes handed back read as zeros until read back.
    layer, kind, head, block = (int(i) for i in (~bounded.host.resident[..., :bounded.blocks.high_water]
                                                 & bounded.host.saved[..., :bounded.blocks.high_water]).nonzero()[0])
    pools = bounded.kv.sparse_pools[layer]
    codes = {"keys": pools.keys.k8, "unrotated": pools.unrotated.k8, "values": pools.v8}[KINDS[kind]]
    assert not codes[head, block * 64 : (block + 1) * 64].view(torch.uint8).any()
    stats = bounded.tier.stats
    assert stats.device_peak <= BUDGET_MIB << 20 < bounded.blocks.high_water * 90 * bounded.kv.unit_bytes * 2
    assert stats.demotions > 0 and stats.promotions > 0 and stats.over_budget == 0
    assert stats.hits + stats.misses > 0  # decode steps read selected blocks in the cache dtype
    assert stats.prefetched > 0 and stats.prefetch_hits <= stats.hits  # the reader brought the next-best in
    assert stats.disk_bytes_read > 0 and bounded.persistence.store.stats.corrupt == 0

    # Evicted blocks were handed back to the OS: their pages read as zeros until promoted again.
    layer, head, block = (int(i) for i in (~bounded.tier.resident[:, :, :bounded.blocks.high_water]).nonzero()[0])
    assert not bounded.kv.k[layer, head, block].any()
    assert not bounded.kv.v[layer, head, block * 64 : (block + 1) * 64].any()

    # The same prompt again: its blocks are cached, most of them on disk only.
    assert generate(bounded) == unbounded
    assert bounded.tier.stats.device_peak <= BUDGET_MIB << 20 and bounded.host.stats.host_peak <= HOST_MIB << 20

    # Dropped, the engine is freed and its prefetching reader stops (it holds the tier weakly). The
    # scheduler's loop ends once idle; until then its last iteration holds the engine: wait for it.
    reader, dropped, loop = bounded.tier._reader, weakref.ref(bounded), bounded.scheduler._thread
    if loop is not None:
        loop.join(10)
    del bounded
    gc.collect()
    reader.join(10)
    assert dropped() is None and not reader.is_alive()


@pytest.mark.slow
def test_a_new_process_restores_its_context_within_the_budget(default_model, tmp_path, unbounded_run):
    unbounded, written = unbounded_run
    shutil.copytree(written, tmp_path, dirs_exist_ok=True)
    chunks_before = {path.name: path.read_bytes() for path in tmp_path.glob("*/*.kv")}
    restoring = engine(default_model, tmp_path, BUDGET_MIB)
    chunks = list(restoring.generate(PROMPT, PARAMS))
    assert "".join(c.text for c in chunks) == unbounded
    assert chunks[-1].stats.num_disk_tokens >= 2048
    assert restoring.tier.stats.device_peak <= BUDGET_MIB << 20 and restoring.tier.stats.demotions > 0
    # Served again from the blocks it restored (most now on disk only): the chunks stay as they were.
    assert generate(restoring) == unbounded
    restoring.persistence.flush()
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*/*.kv") if path.name in chunks_before} \
        == chunks_before


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["deleted", "flipped"])
def test_a_lost_chunk_fails_the_request_clearly_and_the_retry_recomputes(default_model, tmp_path, unbounded, damage):
    bounded = engine(default_model, tmp_path, 34)
    generate(bounded, PROMPT[:9000])  # ~2.1k tokens: more KV than the budget, the oldest blocks on disk only
    assert bounded.tier.stats.demotions > 0
    for path in tmp_path.glob("*/*.kv"):
        if damage == "deleted":
            path.unlink()
        else:
            data = bytearray(path.read_bytes())
            data[len(data) // 2 :] = bytes(b ^ 0xFF for b in data[len(data) // 2 :])  # every layer past the middle
            path.write_bytes(bytes(data))
    with pytest.raises(KVChunkLostError):
        generate(bounded)  # its prefill selects blocks that were evicted
    assert generate(bounded) == unbounded  # the lost blocks were unnamed: recomputed, not read
    assert bounded.tier.stats.device_peak <= 34 << 20


def test_a_device_budget_below_one_step_is_refused(default_model, tmp_path):
    with pytest.raises(DeviceTierTooSmallError) as raised:
        engine(default_model, tmp_path, 8)
    assert raised.value.params["needed"] > 8


def test_a_host_budget_below_one_step_or_without_sparse_attention_is_refused(default_model, tmp_path):
    with pytest.raises(HostTierTooSmallError) as raised:
        engine(default_model, tmp_path, None, kv_host_mib=24)
    assert raised.value.params["total"] > 24 and raised.value.params["fixed"] > 0
    with pytest.raises(HostTierNeedsSparseError):
        LLMEngine.load(default_model, EngineOptions(kv_host_mib=64))


def test_the_device_tier_needs_sparse_attention_and_the_disk_tier(default_model, tmp_path):
    with pytest.raises(TieringNeedsSparseError):
        LLMEngine.load(default_model, EngineOptions(kv_disk_dir=tmp_path, kv_device_mib=64))
    with pytest.raises(TieringNeedsSparseError):
        LLMEngine.load(default_model, EngineOptions(attention="sparse-fp8", kv_device_mib=64))


def test_one_layer_of_a_chunk_is_read_and_checked_alone(tmp_path):
    store = DiskKVStore(tmp_path, "model", torch.bfloat16, 1 << 30)
    k_shape, v_shape = (3, 2, 4, 8, 16), (3, 2, 64, 8)
    keys, values = torch.randn(k_shape).bfloat16(), torch.randn(v_shape).bfloat16()
    chunk = b"\x01" * 16
    store.save(chunk, keys, values, sync=False)
    for layer in range(3):
        k, v = store.load_layer(chunk, layer, k_shape, v_shape)
        assert torch.equal(k, keys[layer]) and torch.equal(v, values[layer])
    path = store.path(chunk)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last value of layer 2
    path.write_bytes(bytes(data))
    assert store.load_layer(chunk, 0, k_shape, v_shape) is not None  # its own digest still holds
    assert store.load_layer(chunk, 2, k_shape, v_shape) is None and not path.exists()
    assert store.stats.corrupt == 1


@pytest.mark.slow
def test_requests_decoded_together_under_a_bound_get_the_tokens_they_get_alone(default_model, tmp_path):
    """fp32, as the batching test: a batch's matmuls are then exact per row."""
    prompts = [PROMPT, Path(inspect.getfile(textwrap)).read_text(encoding="utf-8")[:11000]]
    bounded = engine(default_model, tmp_path, 140, dtype="fp32")  # ~245 MiB of KV for both
    expected = [generate(bounded, p) for p in prompts]  # one at a time (bounded = unbounded: tested above)
    texts: list[str] = [""] * len(prompts)

    def one(i: int) -> None:
        texts[i] = generate(bounded, prompts[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert texts == expected
    assert bounded.scheduler.peak_batch == 2 and bounded.tier.stats.demotions > 0
    assert bounded.tier.stats.device_peak <= 140 << 20 and bounded.tier.stats.over_budget == 0
