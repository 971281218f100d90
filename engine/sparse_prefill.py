"""Chunked prefill past the positions a model was trained on (InfLLM): linear in the context.

Dense prefill there fails twice: RoPE distances the model never saw, and cost quadratic in the
context. So each chunk's queries attend, like a sparse decode step (`SparseConfig.remaps`):
- themselves, causally, and the window before them, at their true positions;
- the sinks and the budget of middle blocks that matter to the chunk, packed just before the window
  (`packed_shifts`): scored for a sample of the chunk's queries at distance
  `window_tokens` from the unrotated keys, in two stages as in decode (Quest's bound, then exact
  logits on the int8 keys of a few times the budget, or of every middle block up to `scan_tokens`;
  each block's attention share, summed over the GQA group, at its largest over the queries), then
  read from the cache and moved to their packed positions.
The three parts are merged by log-sum-exp. Middle blocks are ranked by their largest share of one
sampled query (summed over the GQA group; `SparseConfig.prefill_by_largest`), which also starts the
sequence's selection memory (`sparse_memory.py`) that the decode steps after it keep: the name just
typed finds its block in a query or two, not on average (copying a signature from 100k tokens back:
10/20 ranked so, 9/20 by the shares' sum; dense at 3k 10/20).
"""

from __future__ import annotations

import torch

from engine.attention import AttentionMetadata, causal_attention, grouped_attention, merge_partials
from engine.sparse_attention import SparseConfig, candidate_blocks, candidate_shares, packed_shifts, quest_bounds
from engine.sparse_paged import SparsePools, by_block, cache_keys, far_query

SAMPLED_QUERIES = 32  # of a chunk's queries, scored against every middle block


def sparse_prefill(q: torch.Tensor, q_unrotated: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, pools: SparsePools, meta: AttentionMetadata,
                   scale: float, config: SparseConfig, rope, fetch=None, remember=None) -> torch.Tensor:
    """q [T, H, D] rotated at the chunk's positions, q_unrotated the same before RoPE; k, v [T, Hkv, D]
    of the chunk (already written, with the pools). Returns [T, H, D] in q's dtype. `fetch(pool_blocks)`,
    where the cache is tiered, is told the blocks read from the cache before they are read;
    `remember(blocks, shares)` (`SelectionMemory.start` of this layer) the middle blocks' scores."""
    bs = meta.block_size
    start = meta.context_len - q.shape[0]
    sink_blocks = config.sink_tokens // bs
    window_first = max(sink_blocks, (start - config.window_tokens) // bs)  # the chunk's window: whole blocks

    queries = q.transpose(0, 1)[None]  # [1, H, T, D]
    out, lse = causal_attention(queries, k, v, scale)
    past = window_first * bs
    if start > past:  # the window before the chunk: its blocks only (the context before it may be on disk)
        window = meta.block_table[window_first : -(-start // bs)]
        if fetch is not None:
            fetch(window)
        keys = k_cache[:, window].transpose(2, 3).flatten(1, 2)[:, : start - past]  # [Hkv, N, D]
        values = by_block(v_cache, window.expand(k.shape[1], -1), bs)[:, : start - past]
        out, lse = merge_partials(out, lse, *grouped_attention(queries, keys, values, scale))
    if past:
        q_far = far_query(q_unrotated, config, rope).to(q.dtype)  # scored as if window_tokens away
        far, shares = _far_blocks(q_far, pools, meta.block_table, sink_blocks, window_first, scale, config, remember)
        shifts = packed_shifts(far, window_first, sink_blocks, shares if config.pack_by_score else None) * bs
        if fetch is not None:
            fetch(meta.block_table[far])
        keys = cache_keys(k_cache, meta.block_table, far, bs, rope, shifts).flatten(1, 2)  # [Hkv, N, D]
        values = by_block(v_cache, meta.block_table[far], bs)
        out, lse = merge_partials(out, lse, *grouped_attention(queries, keys, values, scale))
    return out[0].transpose(0, 1)


def _far_blocks(q_far: torch.Tensor, pools: SparsePools, table: torch.Tensor, sink_blocks: int, window_first: int,
                scale: float, config: SparseConfig, remember=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The sinks, then the middle blocks that matter most to a sample of the chunk's queries, best first:
    [Hkv, N] logical, and those blocks' scores [Hkv, N - sinks]; `remember` is told every candidate's
    largest share of one sampled query."""
    num_new, _num_heads, dim = q_far.shape
    num_kv_heads = pools.unrotated.k_min.shape[0]
    sinks = torch.arange(sink_blocks).expand(num_kv_heads, -1)
    middle = torch.arange(sink_blocks, window_first)
    budget = min(config.budget_tokens // config.block_size, middle.numel())
    if not budget:
        return sinks, torch.empty(num_kv_heads, 0)
    rows = torch.unique(torch.linspace(0, num_new - 1, min(SAMPLED_QUERIES, num_new)).round().long())
    sample = q_far[rows].float().view(rows.numel(), num_kv_heads, -1, dim).transpose(0, 1).flatten(1, 2)
    pool_middle = table[middle]
    kmin, kmax = pools.unrotated.bounds(pool_middle)
    bounds = quest_bounds(sample, kmin, kmax, scale)  # [Hkv, S * G, M]; middle blocks are full, their bounds finite
    shares = torch.softmax(bounds.nan_to_num(-torch.inf), -1).nan_to_num(0.0).sum(1)  # [Hkv, M]
    candidates = candidate_blocks(shares, budget, config, remap=True)  # [Hkv, C]
    lse = pools.unrotated.logits(sample, pool_middle[candidates], config.block_size, scale).logsumexp(-1)
    per_query = candidate_shares(lse.view(num_kv_heads, rows.numel(), -1, lse.shape[-1]).flatten(0, 1))
    per_query = per_query.view(num_kv_heads, rows.numel(), -1)  # [Hkv, S, C]: each query's group share
    largest = per_query.amax(1)  # each block's largest share of one query: the one that found it
    shares = largest if config.prefill_by_largest else per_query.sum(1)  # [Hkv, C]
    if remember is not None:
        remember(middle[candidates], largest)
    best = shares.topk(budget, -1)
    return torch.cat([sinks, middle[candidates.gather(-1, best.indices)]], 1), best.values
