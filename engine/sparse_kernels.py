"""Triton kernels of sparse FP8 decode attention, written for the GPU; `engine/sparse_attention.py`
is their torch reference and the tests run each kernel under TRITON_INTERPRET=1 against it.

- `block_bounds_scores`: Quest's upper bound of each block's logit, summed over a GQA group.
- `sparse_paged_decode`: one query per KV head group against the selected blocks of a paged cache,
  each block read either from the cache-dtype pool or from the FP8 pool (with per-token scales):
  both kinds in one launch, online softmax, split over the selection (flash-decoding) and merged by
  log-sum-exp.
  Past the trained window, far blocks are moved to the positions they are attended at (`Remap`).
- `quantize_fp8_rows`: per-row power-of-two scales and e4m3 values.

Everything is computed in fp32 after loading (bf16 / FP8 arithmetic is unreliable in the
interpreter, and fp32 accumulation is what the GPU path wants anyway). Layouts are the engine's:
keys [Hkv, blocks, D, block_size], values [Hkv, slots, D], slot = block * block_size + offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

FP8_MAX = 448.0
GROUP_PAD = 16  # tl.dot wants at least 16 rows: a GQA group's queries are padded to it


@triton.jit
def _bounds_kernel(q_ptr, kmin_ptr, kmax_ptr, out_ptr, num_blocks, group,
                   D: tl.constexpr, BLOCKS: tl.constexpr, G: tl.constexpr):
    head = tl.program_id(0)
    tile = tl.program_id(1)
    blocks = tile * BLOCKS + tl.arange(0, BLOCKS)
    dims = tl.arange(0, D)
    in_range = blocks < num_blocks
    offsets = (head * num_blocks + blocks)[:, None] * D + dims[None, :]
    kmin = tl.load(kmin_ptr + offsets, mask=in_range[:, None], other=0.0).to(tl.float32)
    kmax = tl.load(kmax_ptr + offsets, mask=in_range[:, None], other=0.0).to(tl.float32)
    total = tl.zeros((BLOCKS,), dtype=tl.float32)
    for g in range(G):
        q = tl.load(q_ptr + (head * group + g) * D + dims, mask=g < group, other=0.0).to(tl.float32)
        total += tl.sum(tl.maximum(q[None, :] * kmin, q[None, :] * kmax), axis=1)
    tl.store(out_ptr + head * num_blocks + blocks, total, mask=in_range)


def block_bounds_scores(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float) -> torch.Tensor:
    """q [Hkv, G, D]; kmin, kmax [Hkv, blocks, D] -> [Hkv, blocks] fp32 (as `quest_bound`)."""
    num_kv_heads, group, dim = q.shape
    num_blocks = kmin.shape[1]
    out = torch.empty(num_kv_heads, num_blocks, dtype=torch.float32, device=q.device)
    tile = 64
    _bounds_kernel[(num_kv_heads, triton.cdiv(num_blocks, tile))](
        (q.float() * scale).contiguous(), kmin.float().contiguous(), kmax.float().contiguous(), out,
        num_blocks, group, D=dim, BLOCKS=tile, G=triton.next_power_of_2(group))
    return out


@triton.jit
def _sparse_decode_kernel(
    q_ptr, k_ptr, v_ptr, k8_ptr, v8_ptr, k_scale_ptr, v_scale_ptr,
    table_ptr, fp8_ptr, out_ptr, lse_ptr, shift_ptr, cos_ptr, sin_ptr,
    num_pool_blocks, num_slots, num_selected, per_split, context_len, group, scale,
    D: tl.constexpr, BS: tl.constexpr, G: tl.constexpr, REMAP: tl.constexpr,
):
    head = tl.program_id(0)
    split = tl.program_id(1)
    rows = tl.arange(0, G)
    dims = tl.arange(0, D)
    offs = tl.arange(0, BS)
    row_ok = rows < group
    q_offsets = (head * group + rows)[:, None] * D + dims[None, :]
    q = tl.load(q_ptr + q_offsets, mask=row_ok[:, None], other=0.0).to(tl.float32) * scale
    m = tl.full((G,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((G,), dtype=tl.float32)
    acc = tl.zeros((G, D), dtype=tl.float32)
    first = split * per_split
    for i in range(first, tl.minimum(first + per_split, num_selected)):
        block = tl.load(table_ptr + head * num_selected + i)
        is_fp8 = tl.load(fp8_ptr + head * num_selected + i)
        slots = block * BS + offs
        valid = slots < context_len
        k_offsets = ((head * num_pool_blocks + block) * D + dims)[:, None] * BS + offs[None, :]  # [D, BS]
        v_offsets = (head * num_slots + slots)[:, None] * D + dims[None, :]  # [BS, D]
        rolled = ((head * num_pool_blocks + block) * D + (dims + D // 2) % D)[:, None] * BS + offs[None, :]
        if is_fp8:
            k_scales = tl.load(k_scale_ptr + head * num_slots + slots)[None, :]
            k = tl.load(k8_ptr + k_offsets).to(tl.float32) * k_scales
            if REMAP:
                k_rolled = tl.load(k8_ptr + rolled).to(tl.float32) * k_scales
            v = tl.load(v8_ptr + v_offsets).to(tl.float32)
            v = v * tl.load(v_scale_ptr + head * num_slots + slots)[:, None]
        else:
            k = tl.load(k_ptr + k_offsets).to(tl.float32)
            if REMAP:
                k_rolled = tl.load(k_ptr + rolled).to(tl.float32)
            v = tl.load(v_ptr + v_offsets).to(tl.float32)
        if REMAP:  # move the block's keys by its shift: k cos + roll(k, D/2) sin (the sign is in sin; -θ back)
            shift = tl.load(shift_ptr + head * num_selected + i)
            turn = tl.abs(shift)
            sin = tl.load(sin_ptr + turn * D + dims) * tl.where(shift < 0, -1.0, 1.0)
            k = k * tl.load(cos_ptr + turn * D + dims)[:, None] + k_rolled * sin[:, None]
        logits = tl.dot(q, k)  # [G, BS]
        logits = tl.where(valid[None, :], logits, float("-inf"))
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(logits - m_safe[:, None])
        correction = tl.exp(m - m_safe)
        l = l * correction + tl.sum(p, axis=1)
        acc = acc * correction[:, None] + tl.dot(p, v)
        m = m_new
    out = acc / tl.where(l == 0.0, 1.0, l)[:, None]
    lse = tl.where(l == 0.0, float("-inf"), m + tl.log(l))
    base = (head * tl.num_programs(1) + split) * group
    tl.store(out_ptr + (base + rows)[:, None] * D + dims[None, :], out, mask=row_ok[:, None])
    tl.store(lse_ptr + base + rows, lse, mask=row_ok)


@dataclass
class Remap:
    """Positions past the trained window: each selected block's keys [Hkv, N] are moved `shifts`
    positions on (back where negative) in the kernel (far blocks packed before the window, `packed_shifts`; 0 for the
    window), from either pool; `cos`, `sin` [positions, D] as engine/rope.py builds them (sin
    carries the rotate-half sign)."""

    shifts: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


def sparse_paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k8: torch.Tensor,
                        v8: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor, table: torch.Tensor,
                        is_fp8: torch.Tensor, context_len: int, scale: float, splits: int = 4,
                        remap: Remap | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q [H, D]; k_cache [Hkv, blocks, D, BS] and v_cache [Hkv, slots, D] in the cache dtype, k8/v8
    the same in FP8 with k_scale/v_scale [Hkv, slots]; table [Hkv, N] the selected pool blocks per KV
    head, is_fp8 [Hkv, N] which pool each is read from. Returns out [H, D] fp32 and lse [H]."""
    num_heads, dim = q.shape
    num_kv_heads, num_pool_blocks, _, block_size = k_cache.shape
    group = num_heads // num_kv_heads
    num_selected = table.shape[1]
    splits = max(1, min(splits, num_selected))
    per_split = triton.cdiv(num_selected, splits)
    out = torch.empty(num_kv_heads, splits, group, dim, dtype=torch.float32, device=q.device)
    lse = torch.empty(num_kv_heads, splits, group, dtype=torch.float32, device=q.device)
    if remap is None:  # unused pointers: any tensor
        far_args = (table, k_scale, k_scale)
    else:
        far_args = (remap.shifts.to(torch.int32).contiguous(), remap.cos.float().contiguous(),
                    remap.sin.float().contiguous())
    _sparse_decode_kernel[(num_kv_heads, splits)](
        q.contiguous(), k_cache, v_cache, k8, v8, k_scale.float().contiguous(), v_scale.float().contiguous(),
        table.to(torch.int32).contiguous(), is_fp8.to(torch.int32).contiguous(), out, lse, *far_args,
        num_pool_blocks, v_cache.shape[1], num_selected, per_split, context_len, group, scale,
        D=dim, BS=block_size, G=max(GROUP_PAD, triton.next_power_of_2(group)), REMAP=remap is not None)
    total = torch.logsumexp(lse, dim=1)  # [Hkv, G]: the splits merged
    weights = torch.exp(lse - total[:, None]).nan_to_num(0.0)
    merged = (out * weights[..., None]).sum(1)
    return merged.reshape(num_heads, dim), total.reshape(num_heads)


@triton.jit
def _quantize_kernel(x_ptr, out_ptr, scale_ptr, D: tl.constexpr):
    row = tl.program_id(0)
    dims = tl.arange(0, D)
    x = tl.load(x_ptr + row * D + dims).to(tl.float32)
    amax = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-12)
    scale = tl.exp2(tl.ceil(tl.log2(amax / 448.0)))
    tl.store(out_ptr + row * D + dims, tl.minimum(tl.maximum(x / scale, -448.0), 448.0))
    tl.store(scale_ptr + row, scale)


def quantize_fp8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (e4m3 values, power-of-two scales [..., 1]), as `quantize_fp8`. The kernel scales
    and clamps; the cast to e4m3 is torch's (the interpreter's in-kernel cast rounds differently)."""
    dim = x.shape[-1]
    rows = x.reshape(-1, dim).contiguous()
    scaled = torch.empty(rows.shape, dtype=torch.float32, device=x.device)
    scales = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
    _quantize_kernel[(rows.shape[0],)](rows, scaled, scales, D=dim)
    return scaled.to(torch.float8_e4m3fn).reshape(x.shape), scales.reshape(*x.shape[:-1], 1)
