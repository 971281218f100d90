"""Paged attention over the KV cache, driven by a block table chosen outside the model.

The reference path in plain PyTorch. Prefill splits each chunk into its cached past (no mask)
and the chunk itself (causal) and merges the two by log-sum-exp; decode is two grouped matmuls.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


@dataclass
class AttentionMetadata:
    """Which cache slots this step reads and writes; built once per forward, shared by all layers."""

    block_table: torch.Tensor  # [num_blocks] int64: the sequence's blocks, in order
    slot_mapping: torch.Tensor  # [T] int64: where each new token's K/V goes
    context_len: int  # tokens visible after this step, new ones included
    block_size: int
    first_block: int | None  # set when block_table is one consecutive run: the KV is a view

    @property
    def num_new(self) -> int:
        return self.slot_mapping.numel()

    @classmethod
    def for_step(cls, block_ids: list[int], start: int, num_new: int, block_size: int) -> "AttentionMetadata":
        positions = torch.arange(start, start + num_new)
        table = torch.tensor(block_ids, dtype=torch.long)
        slots = table[positions // block_size] * block_size + positions % block_size
        contiguous = block_ids[-1] - block_ids[0] == len(block_ids) - 1 and all(
            b - a == 1 for a, b in zip(block_ids, block_ids[1:])
        )
        return cls(table, slots, start + num_new, block_size, block_ids[0] if contiguous else None)


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> None:
    """k, v: [T, Hkv, D] into caches [Hkv, S, D]."""
    k_cache.index_copy_(1, meta.slot_mapping, k.transpose(0, 1).to(k_cache.dtype))
    v_cache.index_copy_(1, meta.slot_mapping, v.transpose(0, 1).to(v_cache.dtype))


def gather_kv(cache: torch.Tensor, meta: AttentionMetadata, end: int) -> torch.Tensor:
    """The first `end` tokens of the sequence: [Hkv, end, D]."""
    if meta.first_block is not None:
        start = meta.first_block * meta.block_size
        return cache[:, start : start + end]
    slots = (meta.block_table[:, None] * meta.block_size + torch.arange(meta.block_size)).flatten()
    return cache.index_select(1, slots[:end])


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """q: [T, H, D] for the new tokens (already in the cache). Returns [T, H, D]."""
    num_new, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[0]
    group = num_heads // num_kv_heads
    k = gather_kv(k_cache, meta, meta.context_len)  # [Hkv, ctx, D]
    v = gather_kv(v_cache, meta, meta.context_len)
    if num_new == 1:
        return _decode(q, k, v, scale, group)
    q = q.to(k.dtype).transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
    past = meta.context_len - num_new
    k_new = k[:, past:].repeat_interleave(group, 0).unsqueeze(0)  # [1, H, T, D]
    v_new = v[:, past:].repeat_interleave(group, 0).unsqueeze(0)
    out, lse = _flash(q, k_new, v_new, is_causal=True, scale=scale)
    if past:
        # One query row per (head in group, token): the whole group shares one K/V head.
        q_past = q.reshape(1, num_kv_heads, group * num_new, head_dim)
        out_past, lse_past = _flash(q_past, k[None, :, :past], v[None, :, :past], scale=scale)
        out_past = out_past.reshape(1, num_heads, num_new, head_dim)
        lse_past = lse_past.reshape(1, num_heads, num_new)
        out, lse = merge_partials(out, lse, out_past, lse_past)
    return out[0].transpose(0, 1)


def merge_partials(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the union of two key sets, from each set's output and log-sum-exp."""
    lse = torch.logaddexp(lse_a, lse_b)
    weight_a = torch.exp(lse_a - lse).unsqueeze(-1)
    weight_b = torch.exp(lse_b - lse).unsqueeze(-1)
    out = out_a.float() * weight_a + out_b.float() * weight_b
    return out.to(out_a.dtype), lse


def _decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, group: int) -> torch.Tensor:
    num_kv_heads, _, head_dim = k.shape
    q = (q.reshape(num_kv_heads, group, head_dim) * scale).to(k.dtype).transpose(1, 2)  # [Hkv, D, G]
    # K stays the left operand: a transposed view of the pool would make bmm copy the whole context.
    scores = torch.bmm(k, q)  # [Hkv, ctx, G]
    probs = torch.softmax(scores.transpose(1, 2).contiguous(), -1, dtype=torch.float32).to(v.dtype)  # [Hkv, G, ctx]
    return torch.bmm(probs, v).view(1, num_kv_heads * group, head_dim)  # [1, H, D]


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int, scale: float) -> torch.Tensor:
    """Dense causal attention for tests: q [T, H, D]; k, v [ctx, Hkv, D]."""
    group = q.shape[1] // k.shape[1]
    num_new, ctx = q.shape[0], k.shape[0]
    mask = torch.arange(ctx)[None, :] <= (past + torch.arange(num_new))[:, None]
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1).float(), k.transpose(0, 1).repeat_interleave(group, 0).float(),
        v.transpose(0, 1).repeat_interleave(group, 0).float(), attn_mask=mask, scale=scale,
    )
    return out.transpose(0, 1)
