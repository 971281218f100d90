"""The host tier on its own: FP8 codes past the budget leave memory for the tier's file and come back
byte for byte; a full disk is a clear error. (With the model: tests/test_kv_tiers.py.)"""

import errno

import pytest
import torch

from engine import kv_host
from engine.attention import AttentionMetadata
from engine.config import ModelConfig
from engine.kv_cache import KVCache
from engine.kv_host import HostTier, HostTierWriteError

CONFIG = ModelConfig(arch="llama", vocab_size=16, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                     intermediate_size=256, max_position=4096)
BLOCKS = 12


def cache() -> KVCache:
    kv = KVCache(CONFIG, BLOCKS, torch.bfloat16)
    kv.enable_sparse({0, 1}, unrotated=True)
    return kv


def write(kv: KVCache, tokens: int, host: HostTier | None = None, seed: int = 0) -> None:
    """`tokens` random keys and values into both layers' pools, 16 at a time, as prefill steps do."""
    generator = torch.Generator().manual_seed(seed)
    cos, sin = torch.ones(tokens, 1, CONFIG.head_dim), torch.zeros(tokens, 1, CONFIG.head_dim)  # no rotation
    for start in range(0, tokens, 16):
        meta = AttentionMetadata.for_step(list(range(BLOCKS)), start, 16, kv.block_size)
        if host is not None:
            host.begin_step()
        for pools in kv.sparse_pools:
            k, v = (torch.randn(16, 2, CONFIG.head_dim, generator=generator) for _ in range(2))
            pools.write(k, v, meta, cos[start : start + 16], sin[start : start + 16])


def codes(kv: KVCache) -> list[torch.Tensor]:
    return [t.view(torch.uint8).clone() for p in kv.sparse_pools for t in (p.keys.k8, p.unrotated.k8, p.v8)]


def test_codes_beyond_the_budget_leave_memory_and_come_back_unchanged(tmp_path):
    expected = cache()
    write(expected, BLOCKS * 64)
    kv = cache()
    fixed = sum(small for pools in kv.sparse_pools for _arena, small in pools.code_arenas().values())
    host = HostTier(kv, fixed + 20 * kv.fp8_unit_bytes, tmp_path)  # 20 of 144 units
    write(kv, BLOCKS * 64, host)
    assert host.count <= 20 and host.stats.host_peak <= host.stats.host_budget and host.stats.over_budget == 0
    assert host.stats.host_demotions > 0 and host.saved.sum() > 0
    assert list(tmp_path.iterdir()) == []  # the file is open but unlinked
    assert not kv.sparse_pools[0].v8[0, :64].view(torch.uint8).any()  # the first block left: its pages are zeros

    everything = torch.arange(BLOCKS)
    for layer, pools in enumerate(kv.sparse_pools):  # reading block by block brings each back
        for block in everything.split(1):
            host.begin_step()
            pools.keys.logits(torch.zeros(2, 1, CONFIG.head_dim), block.expand(2, -1), 64, 1.0)
            pools.unrotated.logits(torch.zeros(2, 1, CONFIG.head_dim), block.expand(2, -1), 64, 1.0)
            pools.values(block.expand(2, -1))
            for kind, tensor in ((0, pools.keys.k8), (1, pools.unrotated.k8), (2, pools.v8)):
                index = layer * 3 + kind
                assert torch.equal(tensor[:, block * 64 : (block + 1) * 64].view(torch.uint8),
                                   codes(expected)[index][:, block * 64 : (block + 1) * 64])
    assert host.stats.host_promotions > 0 and host.stats.host_peak <= host.stats.host_budget


def test_a_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    kv = cache()
    fixed = sum(small for pools in kv.sparse_pools for _arena, small in pools.code_arenas().values())
    host = HostTier(kv, fixed + 20 * kv.fp8_unit_bytes, tmp_path)

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kv_host.os, "pwrite", full)
    with pytest.raises(HostTierWriteError) as raised:
        write(kv, BLOCKS * 64, host)
    assert "No space left on device" in str(raised.value) and str(tmp_path) in str(raised.value)
