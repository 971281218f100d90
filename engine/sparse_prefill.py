"""Chunked prefill past the positions a model was trained on (InfLLM): linear in the context.

Dense prefill there fails twice: RoPE distances the model never saw, and cost quadratic in the
context. So each chunk's queries attend, like a sparse decode step (`SparseConfig.remaps`):
- themselves, causally, and the window before them, at their true positions;
- the sinks and the budget of middle blocks that matter to the chunk, at distance `window_tokens`:
  blocks are scored by Quest's bound on the unrotated keys for a sample of the chunk's queries
  (attention shares summed over queries and the GQA group), then read from the cache, unrotated.
The three parts are merged by log-sum-exp.
"""

from __future__ import annotations

import torch

from engine.attention import (
    AttentionMetadata,
    gather_keys,
    gather_values,
    merge_partials,
)
from engine.rope import apply_rotary
from engine.sparse_attention import SparseConfig, quest_bounds
from engine.sparse_paged import SparsePools, cache_keys

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
SAMPLED_QUERIES = 32  # of a chunk's queries, scored against every middle block


def sparse_prefill(q: torch.Tensor, q_unrotated: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, pools: SparsePools, meta: AttentionMetadata,
                   scale: float, config: SparseConfig, rope) -> torch.Tensor:
    """q [T, H, D] rotated at the chunk's positions, q_unrotated the same before RoPE; k, v [T, Hkv, D]
    of the chunk (already written, with the pools). Returns [T, H, D] in q's dtype."""
    num_heads, num_kv_heads = q.shape[1], k.shape[1]
    group = num_heads // num_kv_heads
    bs = meta.block_size
    start = meta.context_len - q.shape[0]
    sink_blocks = config.sink_tokens // bs
    window_first = max(sink_blocks, (start - config.window_tokens) // bs)  # the chunk's window: whole blocks

    queries = q.transpose(0, 1)[None]  # [1, H, T, D]
    out, lse = _flash(queries, *(x.transpose(0, 1).repeat_interleave(group, 0)[None] for x in (k, v)),
                      is_causal=True, scale=scale)
    past = window_first * bs
    if start > past:  # the window before the chunk: no mask, one query row per (head in group, token)
        keys = gather_keys(k_cache, meta, start)[:, past:]
        values = gather_values(v_cache, meta, start)[:, past:]
        out, lse = _merge(out, lse, _grouped(queries, keys, values, scale))
    if past:
        cos, sin = rope(torch.tensor([config.window_tokens]))
        q_far = apply_rotary(q_unrotated.float(), cos, sin).to(q.dtype)  # every query sits window_tokens away
        far = _far_blocks(q_far, pools, meta.block_table, sink_blocks, window_first, scale, config)
        keys = cache_keys(k_cache, meta.block_table, far, bs, rope).flatten(1, 2).to(q.dtype)  # [Hkv, N, D]
        slots = (meta.block_table[far][..., None] * bs + torch.arange(bs)).flatten(1)
        values = v_cache[torch.arange(num_kv_heads)[:, None], slots]
        out, lse = _merge(out, lse, _grouped(q_far.transpose(0, 1)[None], keys, values, scale))
    return out[0].transpose(0, 1)


def _far_blocks(q_far: torch.Tensor, pools: SparsePools, table: torch.Tensor, sink_blocks: int, window_first: int,
                scale: float, config: SparseConfig) -> torch.Tensor:
    """The sinks and the middle blocks that matter most to a sample of the chunk's queries: [Hkv, N] logical."""
    num_new, _num_heads, dim = q_far.shape
    num_kv_heads = pools.unrotated.k_min.shape[0]
    sinks = torch.arange(sink_blocks).expand(num_kv_heads, -1)
    middle = torch.arange(sink_blocks, window_first)
    budget = min(config.budget_tokens // config.block_size, middle.numel())
    if not budget:
        return sinks
    rows = torch.unique(torch.linspace(0, num_new - 1, min(SAMPLED_QUERIES, num_new)).round().long())
    sample = q_far[rows].float().view(rows.numel(), num_kv_heads, -1, dim).transpose(0, 1).flatten(1, 2)
    pool_middle = table[middle]
    kmin, kmax = pools.unrotated.k_min[:, pool_middle], pools.unrotated.k_max[:, pool_middle]
    bounds = quest_bounds(sample, kmin, kmax, scale)  # [Hkv, S * G, M]; middle blocks are full, their bounds finite
    shares = torch.softmax(bounds.nan_to_num(-torch.inf), -1).nan_to_num(0.0).sum(1)  # [Hkv, M]
    return torch.cat([sinks, middle[shares.topk(budget, -1).indices]], 1)


def _grouped(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float):
    """queries [1, H, T, D] against per-KV-head keys, values [Hkv, N, D]: (out [1, H, T, D], lse [1, H, T])."""
    _, num_heads, num_new, dim = queries.shape
    num_kv_heads = keys.shape[0]
    rows = queries.reshape(1, num_kv_heads, num_heads // num_kv_heads * num_new, dim)
    out, lse = _flash(rows, keys[None].to(queries.dtype), values[None].to(queries.dtype), scale=scale)
    return out.reshape(1, num_heads, num_new, dim), lse.reshape(1, num_heads, num_new)


def _merge(out, lse, part):
    return merge_partials(out, lse, *part)
