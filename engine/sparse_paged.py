"""Sparse FP8 decode over the paged KV cache, on the CPU: what the scorer needs is kept as tokens are
written, so a decode step reads only what it selects.

Per layer (`SparsePools`): each block's channel-wise key min/max (Quest's bounds, [Hkv, blocks, D]
fp32) and an FP8 e4m3 copy of every key and value with per-token, per-head power-of-two scales;
where positions may be remapped, bounds and an int8 copy of the keys before RoPE (only ever scored).
A decode step (`sparse_paged_decode`) then reads: the bounds of the sequence's middle blocks (a
sixteenth of their keys' bytes at head_dim 64), 8-bit keys of the candidate blocks, and what it
attends — sinks, the window's newest part and the best selected blocks in the cache dtype, the
window's older part and the next band in FP8. Same semantics as `sparse_attention.sparse_decode`,
which the tests hold it to.
"""

from __future__ import annotations

from typing import Callable

import torch

from engine.attention import AttentionMetadata, gather_keys
from engine.memory import PageArena
from engine.rope import apply_rotary
from engine.sparse_attention import (
    FP8,
    Layout,
    SparseConfig,
    SparseStats,
    candidate_blocks,
    candidate_shares,
    captured_estimate,
    captured_lower_bound,
    dequantize_fp8,
    exact_masses,
    int8_logits,
    packed_shifts,
    packing_scores,
    quantize_fp8,
    quantize_int8,
    remap_keys,
    scored_bounds,
    shift_keys,
)

# Told before 8-bit codes are read or written: (kind, pool blocks [Hkv, N] or [N], write). The host tier
# (engine/kv_host.py) bounds what of them is resident.
UseHook = Callable[..., None]


class KeyPool:
    """Per block, the keys' channel-wise bounds [Hkv, blocks, D] fp32; per slot, 8-bit keys (`k8`: FP8,
    or int8 for keys that are only scored) and their scales. The codes sit on a page arena of their
    own (`code_arena`), the unit the host tier may hand back."""

    def __init__(self, num_kv_heads: int, num_blocks: int, head_dim: int, block_size: int, kind: str = "keys",
                 codes: torch.dtype = FP8) -> None:
        self.kind = kind
        self.k_min = torch.full((num_kv_heads, num_blocks, head_dim), torch.inf)
        self.k_max = torch.full((num_kv_heads, num_blocks, head_dim), -torch.inf)
        self.code_arena = PageArena((num_kv_heads, num_blocks * block_size, head_dim), codes)
        self.quantize = quantize_int8 if codes == torch.int8 else quantize_fp8
        self.k8 = self.code_arena.tensor
        self.k_scale = torch.ones(num_kv_heads, num_blocks * block_size)
        self.on_use: UseHook | None = None

    def bounds(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) of pool blocks [N]: [Hkv, N, D] each; a view where they are one ascending run (a
        long sequence's middle usually is: at a million tokens a copy is 25 MB per layer and step)."""
        if _one_run(blocks[None]):
            first, end = int(blocks[0]), int(blocks[-1]) + 1
            return self.k_min[:, first:end], self.k_max[:, first:end]
        return self.k_min[:, blocks], self.k_max[:, blocks]

    @property
    def resident_bytes(self) -> int:
        """What stays in memory whatever the host tier's budget: bounds and scales."""
        return self.k_min.nbytes + self.k_max.nbytes + self.k_scale.nbytes

    def write(self, k: torch.Tensor, meta: AttentionMetadata) -> None:
        """k [T, Hkv, D] at meta.slot_mapping. A block's bounds restart at its first slot."""
        blocks = meta.slot_blocks
        if self.on_use is not None:
            self.on_use(self.kind, blocks.unique(), write=True)
        restart = blocks[meta.slot_offsets == 0]
        self.k_min[:, restart] = torch.inf
        self.k_max[:, restart] = -torch.inf
        keys = k.float().transpose(0, 1)  # [Hkv, T, D]
        finite = torch.isfinite(keys).all(-1, keepdim=True)
        index = blocks[None, :, None].expand_as(keys)
        self.k_min.scatter_reduce_(1, index, torch.where(finite, keys, torch.inf), "amin")
        self.k_max.scatter_reduce_(1, index, torch.where(finite, keys, -torch.inf), "amax")
        k8, k_scale = self.quantize(torch.where(finite, keys, 0.0))
        self.k8[:, meta.slot_mapping], self.k_scale[:, meta.slot_mapping] = k8, k_scale.squeeze(-1)

    def logits(self, qg: torch.Tensor, blocks: torch.Tensor, bs: int, scale: float, shifts: torch.Tensor | None = None,
               rope=None) -> torch.Tensor:
        """Each query head's logits on the 8-bit keys of whole pool blocks [Hkv, N]: [Hkv, G, N, bs]; with
        `shifts` [Hkv, N] (FP8 keys), each block's keys moved that many positions on first (`shift_keys`)."""
        if self.on_use is not None:
            self.on_use(self.kind, blocks)
        if self.k8.dtype == torch.int8:
            assert shifts is None, "int8 keys are scored where they are, never moved"
            logits = int8_logits(qg, by_block(self.k8, blocks, bs), by_block(self.k_scale, blocks, bs)) * scale
            return logits.view(*logits.shape[:2], blocks.shape[1], bs)
        keys = fp8_by_block(self.k8, self.k_scale, blocks, bs)  # [Hkv, N * bs, D]
        if shifts is not None:
            keys = shift_keys(keys, shifts.repeat_interleave(bs, -1), rope)
        logits = torch.einsum("hgd,htd->hgt", qg, keys) * scale
        return logits.view(*logits.shape[:2], blocks.shape[1], bs)


class SparsePools:
    """A layer's keys as the model wrote them (rotated at their positions) and, when positions may be
    remapped, before the rotation too (`unrotated`: the same bounds hold at any remapped position),
    and FP8 values."""

    def __init__(self, num_kv_heads: int, num_blocks: int, head_dim: int, block_size: int,
                 unrotated: bool = False) -> None:
        self.block_size = block_size
        self.keys = KeyPool(num_kv_heads, num_blocks, head_dim, block_size)
        self.unrotated = (KeyPool(num_kv_heads, num_blocks, head_dim, block_size, "unrotated", torch.int8)
                          if unrotated else None)
        self.value_arena = PageArena((num_kv_heads, num_blocks * block_size, head_dim), FP8)
        self.v8 = self.value_arena.tensor
        self.v_scale = torch.ones(num_kv_heads, num_blocks * block_size)
        self._on_use: UseHook | None = None

    @property
    def on_use(self) -> UseHook | None:
        return self._on_use

    @on_use.setter
    def on_use(self, hook: UseHook | None) -> None:
        self._on_use = hook
        for keys in (self.keys, self.unrotated):
            if keys is not None:
                keys.on_use = hook

    def code_arenas(self) -> dict[str, tuple[PageArena, int]]:
        """kind -> (the arena of its 8-bit codes, the bytes of its bounds and scales, always resident)."""
        arenas = {keys.kind: (keys.code_arena, keys.resident_bytes) for keys in (self.keys, self.unrotated)
                  if keys is not None}
        return {**arenas, "values": (self.value_arena, self.v_scale.nbytes)}

    def values(self, blocks: torch.Tensor) -> torch.Tensor:
        """The FP8 values of whole pool blocks [Hkv, N], dequantised: [Hkv, N * bs, D] fp32."""
        if self._on_use is not None:
            self._on_use("values", blocks)
        return fp8_by_block(self.v8, self.v_scale, blocks, self.block_size)

    def write(self, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata, cos: torch.Tensor,
              sin: torch.Tensor) -> None:
        """k, v [T, Hkv, D] as cached (k rotated by `cos`, `sin`), written at meta.slot_mapping. The keys
        before RoPE are the cached ones rotated back, so that blocks restored from disk get the same."""
        self.keys.write(k, meta)
        if self.unrotated is not None:
            self.unrotated.write(apply_rotary(k.float(), cos, -sin), meta)
        if self._on_use is not None:
            self._on_use("values", meta.slot_blocks.unique(), write=True)
        v8, v_scale = quantize_fp8(v.float().transpose(0, 1).nan_to_num(0.0, 0.0, 0.0))
        self.v8[:, meta.slot_mapping], self.v_scale[:, meta.slot_mapping] = v8, v_scale.squeeze(-1)


def sparse_paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pools: SparsePools,
                        meta: AttentionMetadata, scale: float, config: SparseConfig,
                        budget_tokens: int | None = None, probe: bool = False,
                        q_unrotated: torch.Tensor | None = None, rope=None, fetch=None, prefetch=None,
                        recall=None) -> tuple[torch.Tensor, SparseStats] | None:
    """q [H, D] of one sequence's new token (already written, with its pools). None when the context
    is short enough for dense attention (the caller's path). All KV heads at once: every head reads
    the same number of whole blocks (only the last may be partial: it is masked). `probe` also reads
    every key to measure the exact masses (`SparseStats.probe`).

    Where `config.remaps` the context, the middle is scored at distance `window_tokens`: against the
    unrotated keys, with `q_unrotated` rotated to that position (`rope`); the sinks and the selected
    blocks are then attended packed just before the window (`packed_shifts`), which keeps its true
    positions; there `recall(blocks, shares)` (the sequence's `SelectionMemory` of this layer) turns
    the candidates' shares into the scores selected by. Where the cache is tiered (engine/kv_tiers.py),
    `fetch(pool_blocks, selected=False)` is told every block read in the cache dtype before it is read,
    and `prefetch` the selected blocks ranked just below those: the likeliest to be read so by the next
    steps."""
    length, bs = meta.context_len, meta.block_size
    if config.runs_dense(length):
        return None
    num_heads, dim = q.shape
    num_kv_heads = k_cache.shape[0]
    group = num_heads // num_kv_heads
    qg = q.float().view(num_kv_heads, group, dim)
    remap = config.remaps(length)
    if remap:
        q_far = far_query(q_unrotated[None], config, rope)[0].view(num_kv_heads, group, dim)
        far_pool = pools.unrotated
    else:
        q_far, far_pool = qg, pools.keys
    table = meta.block_table  # logical block j lives in pool block table[j]
    layout = Layout.of(length, config)
    middle = layout.middle
    budget = min((budget_tokens or config.budget_tokens) // bs, middle.numel())

    pool_middle = table[middle]
    bound = scored_bounds(q_far, *far_pool.bounds(pool_middle), scale)  # [Hkv, M]
    candidates = candidate_blocks(bound, budget, config, remap)  # [Hkv, C]
    candidate_logits = far_pool.logits(q_far, pool_middle[candidates], bs, scale)  # [Hkv, G, C, bs]
    lse_candidates = candidate_logits.logsumexp(-1)
    shares = candidate_shares(lse_candidates)
    if remap and recall is not None:
        shares = recall(middle[candidates], shares)
    order = shares.argsort(dim=-1, descending=True)
    chosen = candidates.gather(-1, order[:, :budget])
    high = round(budget * config.high_precision_share)
    window_hi, window_lo = layout.window(config.uses_fp8)
    expand = (num_kv_heads, -1)

    # In the cache dtype: sinks and the best selected (far), then the window's newest part (near).
    far = torch.cat([layout.sinks.expand(expand), middle[chosen]], 1)  # [Hkv, Nf + band] logical, best first
    shifts = None
    if remap:
        scores = packing_scores(shares, order, budget, config)
        shifts = packed_shifts(far, layout.window_first, layout.sink_blocks, scores) * bs
    far_hi = far[:, : layout.sink_blocks + high]
    near_hi = window_hi.expand(expand)
    if fetch is not None:
        fetch(table[far_hi[:, layout.sink_blocks :]], selected=True)
        fetch(table[torch.cat([layout.sinks.expand(expand), near_hi], 1)])
    if prefetch is not None and high:
        prefetch(table[middle[chosen[:, high : 2 * high]]])
    far_keys = cache_keys(k_cache, table, far_hi, bs, rope, shifts[:, : far_hi.shape[1]] if remap else None)
    parts = [torch.einsum("hgd,hnbd->hgnb", qg, far_keys) * scale]
    near_keys = k_cache[torch.arange(num_kv_heads)[:, None], table[near_hi]].float()  # [Hkv, Nn, D, bs]
    near_logits = torch.einsum("hgd,hndb->hgnb", qg, near_keys) * scale
    tail = length - (layout.num_blocks - 1) * bs  # tokens in the last block, which the window ends with
    near_logits[:, :, -1, tail:] = -torch.inf
    parts.append(near_logits)
    # In FP8: the window's older part (near), then the next band of selected blocks (stage two's logits).
    near_lo = window_lo.expand(expand)
    parts.append(pools.keys.logits(qg, table[near_lo], bs, scale))
    if remap:  # stage two scored the band at distance window_tokens: read it again where it is attended
        band = far_hi.shape[1]
        parts.append(pools.keys.logits(qg, table[far[:, band:]], bs, scale, shifts[:, band:], rope))
    else:
        band = order[:, high:budget, None, None].expand(-1, -1, group, bs).transpose(1, 2)  # [Hkv, G, B - high, bs]
        parts.append(candidate_logits.gather(2, band))
    logits = torch.cat([p.flatten(2) for p in parts], -1)  # [Hkv, G, tokens]

    hi_blocks = table[torch.cat([far_hi, near_hi], 1)]
    lo_blocks = table[torch.cat([near_lo, middle[chosen[:, high:]]], 1)]
    values = torch.cat([by_block(v_cache, hi_blocks, bs).float(),
                        pools.values(lo_blocks)], 1)
    lse = torch.logsumexp(logits, -1)
    out = torch.einsum("hgt,htd->hgd", torch.exp(logits - lse[..., None]), values)

    fp8_tokens = lo_blocks.shape[1] * bs
    attended = hi_blocks.shape[1] * bs + fp8_tokens - (bs - tail)
    stats = SparseStats(False, attended, fp8_tokens, int(candidates.shape[1]),
                        captured_lower_bound(bound, chosen, lse, group, bs), budget * bs,
                        captured_estimate(lse, lse_candidates, order[:, :budget]))
    if probe:
        if fetch is not None:
            fetch(table[: layout.num_blocks])
        keys = gather_keys(k_cache, meta, length)
        if remap:
            keys = remap_keys(keys, layout.window_first * bs, config.window_tokens, rope)
        stats.probe = exact_masses(qg, keys, torch.isfinite(keys).all(-1), scale, bs, layout, chosen)
    return out.reshape(num_heads, dim).to(q.dtype), stats


def far_query(q_unrotated: torch.Tensor, config: SparseConfig, rope) -> torch.Tensor:
    """Queries [T, H, D] before RoPE, rotated to distance `window_tokens` from unrotated keys: fp32."""
    cos, sin = rope(torch.tensor([config.window_tokens]))
    return apply_rotary(q_unrotated.float(), cos, sin)


def cache_keys(k_cache: torch.Tensor, table: torch.Tensor, logical: torch.Tensor, bs: int, rope=None,
               shifts: torch.Tensor | None = None) -> torch.Tensor:
    """The cache's keys of logical blocks [Hkv, N]: [Hkv, N, bs, D] fp32; with `shifts` [Hkv, N], each
    block's keys moved that many positions on (`shift_keys`)."""
    heads = torch.arange(logical.shape[0])[:, None]
    keys = k_cache[heads, table[logical]].float().transpose(-1, -2)  # [Hkv, N, bs, D]
    if shifts is None:
        return keys
    return shift_keys(keys, shifts[..., None].expand(-1, -1, bs), rope)


def by_block(pool: torch.Tensor, blocks: torch.Tensor, bs: int) -> torch.Tensor:
    """A per-slot pool [Hkv, slots, ...] read at whole pool blocks [Hkv, N]: [Hkv, N * bs, ...]. One
    row of bs slots per block: on the CPU several times faster than indexing slot by slot; a view
    where every head reads the same ascending run (a long middle scored whole)."""
    if _one_run(blocks) and blocks.shape[0] == pool.shape[0]:
        return pool[:, int(blocks[0, 0]) * bs : (int(blocks[0, -1]) + 1) * bs]
    rows = pool.view(pool.shape[0], -1, bs, *pool.shape[2:])[torch.arange(blocks.shape[0])[:, None], blocks]
    return rows.flatten(1, 2)


def fp8_by_block(codes: torch.Tensor, scales: torch.Tensor, blocks: torch.Tensor, bs: int) -> torch.Tensor:
    """An FP8 pool [Hkv, slots, D] and its per-slot scales [Hkv, slots] read at whole pool blocks
    [Hkv, N], dequantised: [Hkv, N * bs, D] fp32."""
    return dequantize_fp8(by_block(codes, blocks, bs), by_block(scales, blocks, bs)[..., None])


def _one_run(blocks: torch.Tensor) -> bool:
    """Whether every row of blocks [Hkv, N] is the same ascending run."""
    return bool(blocks.numel()) and bool((blocks == blocks[:1]).all()) and bool((blocks[0].diff() == 1).all())
