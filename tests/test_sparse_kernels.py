"""The Triton kernels of sparse FP8 decode, run by Triton's interpreter on the CPU against the torch
reference (engine/sparse_attention.py). Small shapes: the interpreter runs each op in Python."""

import math
import os

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined: they become interpreted

import pytest
import torch

from engine.sparse_attention import (
    block_bounds,
    dequantize_fp8,
    quantize_fp8,
    quest_bound,
)
from engine.sparse_kernels import (
    Remap,
    block_bounds_scores,
    quantize_fp8_rows,
    sparse_paged_decode,
)

KV_HEADS, GROUP, DIM, BS = 2, 3, 32, 16


def paged_cache(num_pool_blocks: int, dtype=torch.bfloat16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(KV_HEADS, num_pool_blocks, DIM, BS, generator=g).to(dtype)
    v = torch.randn(KV_HEADS, num_pool_blocks * BS, DIM, generator=g).to(dtype)
    return k, v


def test_block_bounds_scores_match_the_reference() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(KV_HEADS, GROUP, DIM, generator=g)
    keys = torch.randn(KV_HEADS, 100 * BS + 5, DIM, generator=g)
    kmin, kmax = block_bounds(keys, BS)
    scale = 1 / math.sqrt(DIM)
    torch.testing.assert_close(block_bounds_scores(q, kmin, kmax, scale), quest_bound(q, kmin, kmax, scale),
                               rtol=1e-5, atol=1e-4)


def reference(q, k_cache, v_cache, k8, v8, k_scale, v_scale, table, is_fp8, context_len, scale):
    """Attention over the selected blocks, each from the pool the table says, in fp32."""
    outs, lses = [], []
    for h in range(KV_HEADS):
        keys, values = [], []
        for block, fp8 in zip(table[h].tolist(), is_fp8[h].tolist(), strict=True):
            slots = torch.arange(block * BS, (block + 1) * BS)
            if fp8:
                keys.append(k8[h, block].float().T * k_scale[h, slots, None])
                values.append(v8[h, slots].float() * v_scale[h, slots, None])
            else:
                keys.append(k_cache[h, block].float().T)
                values.append(v_cache[h, slots].float())
        keys, values = torch.cat(keys), torch.cat(values)
        slots = torch.cat([torch.arange(b * BS, (b + 1) * BS) for b in table[h].tolist()])
        logits = (q[h * GROUP : (h + 1) * GROUP].float() @ keys.T) * scale
        logits = logits.masked_fill(slots[None, :] >= context_len, -torch.inf)
        lse = torch.logsumexp(logits, -1)
        outs.append(torch.softmax(logits, -1) @ values)
        lses.append(lse)
    return torch.cat(outs), torch.cat(lses)


@pytest.mark.parametrize("splits", [1, 3])
def test_mixed_precision_paged_decode_matches_the_reference(splits: int) -> None:
    num_pool_blocks = 12
    k_cache, v_cache = paged_cache(num_pool_blocks)
    k8, k_scale = quantize_fp8(k_cache.float().transpose(2, 3))  # per token: [Hkv, blocks, BS, D]
    k8, k_scale = k8.transpose(2, 3).contiguous(), k_scale.reshape(KV_HEADS, num_pool_blocks * BS)
    v8, v_scale = quantize_fp8(v_cache.float())
    v_scale = v_scale.squeeze(-1)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(KV_HEADS * GROUP, DIM, generator=g)
    # a paged, out-of-order selection per head; the last pool block is the sequence's partial one
    table = torch.tensor([[11, 3, 7, 0, 5, 9], [2, 11, 4, 8, 1, 6]])
    is_fp8 = torch.tensor([[0, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 0]])
    context_len = 11 * BS + 9
    scale = 1 / math.sqrt(DIM)
    out, lse = sparse_paged_decode(q, k_cache, v_cache, k8, v8, k_scale, v_scale, table, is_fp8, context_len,
                                   scale, splits=splits)
    ref_out, ref_lse = reference(q, k_cache, v_cache, k8, v8, k_scale, v_scale, table, is_fp8, context_len, scale)
    torch.testing.assert_close(out, ref_out, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-4, atol=1e-4)
    # against exact values: the bf16 blocks alone match to 1e-3, the FP8 ones within 2e-2
    exact_out, _ = reference(q, k_cache, v_cache, k_cache.float(), v_cache.float(),
                             torch.ones(KV_HEADS, num_pool_blocks * BS), torch.ones(KV_HEADS, num_pool_blocks * BS),
                             table, torch.zeros_like(is_fp8), context_len, scale)
    torch.testing.assert_close(out, exact_out, rtol=2e-2, atol=2e-2)
    bf16_only = torch.zeros_like(is_fp8)
    out_bf16, _ = sparse_paged_decode(q, k_cache, v_cache, k8, v8, k_scale, v_scale, table, bf16_only,
                                      context_len, scale, splits=splits)
    torch.testing.assert_close(out_bf16, exact_out, rtol=1e-3, atol=1e-4)


def test_remapped_blocks_are_moved_by_their_shifts() -> None:
    """Past the trained window, each selected block's keys (from the cache-dtype or the FP8 pool) are
    moved its shift of positions on (back, where negative) in the kernel: the same logits as keys
    rotated at the new positions."""
    from engine.config import ModelConfig
    from engine.rope import RotaryEmbedding, apply_rotary

    num_pool_blocks = 10
    rope = RotaryEmbedding(ModelConfig(arch="llama", vocab_size=8, hidden_size=DIM * GROUP, num_layers=1,
                                       num_heads=GROUP, num_kv_heads=1, intermediate_size=8, max_position=64,
                                       head_dim=DIM), 2 * num_pool_blocks * BS)
    g = torch.Generator().manual_seed(3)
    k_pre = torch.randn(KV_HEADS, num_pool_blocks, BS, DIM, generator=g)
    logical_of_pool = torch.randperm(num_pool_blocks, generator=g)  # pool block b holds logical block logical_of_pool[b]
    positions = (logical_of_pool[:, None] * BS + torch.arange(BS)).flatten()

    def rotated_at(positions: torch.Tensor) -> torch.Tensor:  # [Hkv, slots, D]
        cos, sin = rope(positions)
        return apply_rotary(k_pre.reshape(KV_HEADS, -1, DIM).transpose(0, 1), cos, sin).transpose(0, 1)

    k_cache = rotated_at(positions).reshape(KV_HEADS, num_pool_blocks, BS, DIM).transpose(2, 3).contiguous()  # fp32
    v_cache = torch.randn(KV_HEADS, num_pool_blocks * BS, DIM, generator=g)
    k8, k_scale = quantize_fp8(k_cache.transpose(2, 3))
    k8, k_scale = k8.transpose(2, 3).contiguous(), k_scale.reshape(KV_HEADS, -1)
    v8, v_scale = quantize_fp8(v_cache)
    v_scale = v_scale.squeeze(-1)
    q = torch.randn(KV_HEADS * GROUP, DIM, generator=g)
    table = torch.tensor([[4, 1, 8, 0, 6], [9, 2, 5, 7, 3]])
    is_fp8 = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 0, 1, 0]])
    shifts = torch.tensor([[3 * BS, 40, -2 * BS - 5, 7, 0], [BS, -9, 5 * BS + 2, 1, 0]])
    scale = 1 / math.sqrt(DIM)
    out, lse = sparse_paged_decode(q, k_cache, v_cache, k8, v8, k_scale, v_scale, table, is_fp8,
                                   num_pool_blocks * BS, scale, splits=2, remap=Remap(shifts, rope.cos, rope.sin))

    def turned(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # any sign: cos even, sin odd
        cos, sin = rope(positions.abs())
        return cos, torch.where(positions[:, None, None] < 0, -sin, sin)

    expected_out, expected_lse = [], []
    for h in range(KV_HEADS):
        logits, values = [], []
        for block, fp8, shift in zip(table[h].tolist(), is_fp8[h].tolist(), shifts[h].tolist(), strict=True):
            slots = torch.arange(block * BS, (block + 1) * BS)
            cos, sin = turned(positions[slots] + shift)
            if fp8:  # the FP8 copy of the rotated key, moved: as the engine's pools hold it
                keys = apply_rotary(dequantize_fp8(k8[h, block].T, k_scale[h, slots, None])[:, None], *turned(
                    torch.full((BS,), shift)))[:, 0]
            else:
                keys = apply_rotary(k_pre[h, block][:, None], cos, sin)[:, 0]  # rotated at the new positions
            logits.append(q[h * GROUP : (h + 1) * GROUP] @ keys.T * scale)
            values.append(dequantize_fp8(v8[h, slots], v_scale[h, slots, None]) if fp8 else v_cache[h, slots])
        logits = torch.cat(logits, -1)
        expected_lse.append(torch.logsumexp(logits, -1))
        expected_out.append(torch.softmax(logits, -1) @ torch.cat(values))
    torch.testing.assert_close(out, torch.cat(expected_out), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(lse, torch.cat(expected_lse), rtol=1e-4, atol=1e-4)


def test_quantisation_kernel_matches_the_reference_scales_and_values() -> None:
    x = torch.randn(6, 40, 32) * torch.logspace(-2, 2, 40)[None, :, None]
    values, scales = quantize_fp8_rows(x)
    ref_values, ref_scales = quantize_fp8(x)
    assert torch.equal(scales, ref_scales)
    back, ref_back = dequantize_fp8(values, scales), dequantize_fp8(ref_values, ref_scales)
    assert (back - ref_back).abs().max() <= (x.abs().amax(-1, keepdim=True) / 8).max()  # within an e4m3 step
    torch.testing.assert_close(back, x, rtol=1 / 8, atol=float(scales.max()))
