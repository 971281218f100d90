"""Sparse FP8 decode over the paged KV cache, on the CPU: what the scorer needs is kept as tokens are
written, so a decode step reads only what it selects.

Per layer (`SparsePools`): each block's channel-wise key min/max (Quest's bounds, [Hkv, blocks, D]
fp32) and an FP8 e4m3 copy of every key and value with per-token, per-head power-of-two scales.
A decode step (`sparse_paged_decode`) then reads: the bounds of the sequence's middle blocks (a
sixteenth of their keys' bytes at head_dim 64), FP8 keys of the candidate blocks, and the selected
blocks — the best in the cache dtype, the next band in FP8 — beside the sinks and the window.
Same semantics as `sparse_attention.sparse_decode`, which the tests hold it to.
"""

from __future__ import annotations

import torch

from engine.attention import AttentionMetadata
from engine.sparse_attention import (
    FP8,
    SparseConfig,
    SparseStats,
    _attend,
    _merge,
    captured_lower_bound,
    quantize_fp8,
    scored_bounds,
)


class SparsePools:
    def __init__(self, num_kv_heads: int, num_blocks: int, head_dim: int, block_size: int) -> None:
        self.block_size = block_size
        self.k_min = torch.full((num_kv_heads, num_blocks, head_dim), torch.inf)
        self.k_max = torch.full((num_kv_heads, num_blocks, head_dim), -torch.inf)
        self.k8 = torch.empty(num_kv_heads, num_blocks * block_size, head_dim, dtype=FP8)
        self.k_scale = torch.ones(num_kv_heads, num_blocks * block_size)
        self.v8 = torch.empty(num_kv_heads, num_blocks * block_size, head_dim, dtype=FP8)
        self.v_scale = torch.ones(num_kv_heads, num_blocks * block_size)

    def write(self, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> None:
        """k, v [T, Hkv, D] written at meta.slot_mapping. A block's bounds restart at its first slot."""
        slots = meta.slot_mapping
        blocks, offsets = meta.slot_blocks, meta.slot_offsets
        restart = blocks[offsets == 0]
        self.k_min[:, restart] = torch.inf
        self.k_max[:, restart] = -torch.inf
        keys = k.float().transpose(0, 1)  # [Hkv, T, D]
        finite = torch.isfinite(keys).all(-1, keepdim=True)
        index = blocks[None, :, None].expand_as(keys)
        self.k_min.scatter_reduce_(1, index, torch.where(finite, keys, torch.inf), "amin")
        self.k_max.scatter_reduce_(1, index, torch.where(finite, keys, -torch.inf), "amax")
        k8, k_scale = quantize_fp8(torch.where(finite, keys, 0.0))
        v8, v_scale = quantize_fp8(v.float().transpose(0, 1).nan_to_num(0.0, 0.0, 0.0))
        self.k8[:, slots], self.k_scale[:, slots] = k8, k_scale.squeeze(-1)
        self.v8[:, slots], self.v_scale[:, slots] = v8, v_scale.squeeze(-1)


def sparse_paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pools: SparsePools,
                        meta: AttentionMetadata, scale: float, config: SparseConfig,
                        ) -> tuple[torch.Tensor, SparseStats] | None:
    """q [H, D] of one sequence's new token (already written, with its pools). None when the context
    is short enough for dense attention (the caller's path)."""
    length, bs = meta.context_len, meta.block_size
    if length <= config.sink_tokens + config.window_tokens + config.budget_tokens:
        return None
    num_heads, dim = q.shape
    num_kv_heads = k_cache.shape[0]
    group = num_heads // num_kv_heads
    qg = q.float().view(num_kv_heads, group, dim)
    num_blocks = -(-length // bs)
    table = meta.block_table[:num_blocks]  # logical block j lives in pool block table[j]
    sink_blocks = config.sink_tokens // bs
    window_first = max(sink_blocks, (length - config.window_tokens) // bs)
    middle = torch.arange(sink_blocks, window_first)  # the logical blocks the scorer chooses among
    budget = min(config.budget_tokens // bs, middle.numel())

    bound = scored_bounds(qg, pools.k_min[:, table[middle]], pools.k_max[:, table[middle]], scale)  # [Hkv, M]
    num_candidates = min(middle.numel(), budget * config.candidates)
    candidates = bound.topk(num_candidates, dim=-1).indices  # [Hkv, C] into middle
    exact = _candidate_lse(qg, pools, table[middle[candidates]], bs, scale)
    chosen = candidates.gather(-1, exact.argsort(dim=-1, descending=True)[:, :budget])
    high = max(0, round(budget * config.high_precision_share))

    fixed_slots = _slots(torch.cat([torch.arange(sink_blocks), torch.arange(window_first, num_blocks)]), table, bs,
                         length)
    outs, lses, attended, fp8_tokens = [], [], 0, 0
    for h in range(num_kv_heads):
        hi_slots = torch.cat([fixed_slots, _slots(middle[chosen[h, :high]], table, bs, length)])
        lo_slots = _slots(middle[chosen[h, high:]], table, bs, length)
        keys = k_cache[h, hi_slots // bs, :, hi_slots % bs]  # block-transposed layout -> [N, D]
        everything = torch.ones(1, hi_slots.numel(), dtype=torch.bool)
        out, lse = _attend(qg[h : h + 1], keys[None], v_cache[h, hi_slots][None], everything, scale)
        if lo_slots.numel():
            k_lo = pools.k8[h, lo_slots].float() * pools.k_scale[h, lo_slots, None]
            v_lo = pools.v8[h, lo_slots].float() * pools.v_scale[h, lo_slots, None]
            out_lo, lse_lo = _attend(qg[h : h + 1], k_lo[None], v_lo[None],
                                     torch.ones(1, lo_slots.numel(), dtype=torch.bool), scale)
            out, lse = _merge(out, lse, out_lo, lse_lo)
        outs.append(out)
        lses.append(lse)
        attended += hi_slots.numel() + lo_slots.numel()
        fp8_tokens += lo_slots.numel()
    stats = SparseStats(False, attended // num_kv_heads, fp8_tokens // num_kv_heads, num_candidates,
                        captured_lower_bound(bound, chosen, torch.cat(lses), group, bs))
    return torch.cat(outs).reshape(num_heads, dim).to(q.dtype), stats


def _slots(logical: torch.Tensor, table: torch.Tensor, bs: int, length: int) -> torch.Tensor:
    """The cache slots of the logical blocks `logical` that hold the sequence's tokens (< length)."""
    offsets = torch.arange(bs)
    keep = ((logical[:, None] * bs + offsets) < length).flatten()
    return (table[logical][:, None] * bs + offsets).flatten()[keep]


def _candidate_lse(qg: torch.Tensor, pools: SparsePools, blocks: torch.Tensor, bs: int,
                   scale: float) -> torch.Tensor:
    """Log-sum-exp over each candidate block's tokens of the group-summed logits on FP8 keys;
    blocks [Hkv, C] pool ids (all full: candidates are middle blocks)."""
    heads = torch.arange(blocks.shape[0])[:, None, None]
    slots = blocks[..., None] * bs + torch.arange(bs)  # [Hkv, C, bs]
    keys = pools.k8[heads, slots].float() * pools.k_scale[heads, slots][..., None]
    logits = torch.einsum("hgd,hcbd->hcb", qg, keys) * scale
    return torch.logsumexp(logits, -1)
