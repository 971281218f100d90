"""Sparse FP8 decode attention: the torch reference (issue 12). Triton kernels must match it.

One decode query attends, per KV head, only the key blocks that matter:
- always: the attention sinks (the first tokens) and the local window (the last tokens);
- of the blocks between, a scorer picks the budget in two stages: Quest's upper bound per block
  (sum over channels of max(q·min, q·max), from each block's channel-wise key bounds), then, for a
  candidate set a few times the budget, the block's exact log-sum-exp of q·k on FP8 keys;
- the best-scoring selected blocks (and sinks and window) are attended in the cache dtype, the next
  band on FP8 keys and values (per-token, per-head power-of-two scales), the rest skipped; the two
  partial results are merged by log-sum-exp.
Scores are summed over the query heads of a GQA group: one selection per KV head.

Non-finite keys never reach the output: their tokens are masked out. The returned `SparseStats`
say what was attended: the Quest bound gives a lower bound of the attention mass captured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


@dataclass(frozen=True)
class SparseConfig:
    block_size: int = 64
    sink_tokens: int = 64
    window_tokens: int = 2048
    budget_tokens: int = 2048  # selected between the sinks and the window
    high_precision_share: float = 0.25  # of the budget attended in the cache dtype; the rest in FP8
    candidates: int = 4  # stage two scores this many times the budget, on FP8 keys
    dense_layers: tuple[int, ...] = (0,)  # layers whose attention is diffuse (the default model's layer 0)
    probe: bool = False  # also compute the exact attention mass captured, and an oracle's (benchmarks)

    def __post_init__(self) -> None:
        assert self.sink_tokens % self.block_size == 0 and self.window_tokens % self.block_size == 0
        assert 0 <= self.high_precision_share <= 1 and self.candidates >= 1


@dataclass
class SparseStats:
    dense: bool  # the context was short enough to attend whole
    attended_tokens: int  # per KV head, on average
    fp8_tokens: int  # of them, read in FP8
    blocks_scored: int  # by the exact stage
    captured_mass_lower_bound: float  # from the Quest bounds of the skipped blocks, min over heads
    probe: dict[str, float] | None = None  # with SparseConfig.probe: exact masses, mean over query heads

    @property
    def fp8_coverage(self) -> float:
        return self.fp8_tokens / self.attended_tokens if self.attended_tokens else 0.0


@dataclass
class SparseCounter:
    """Totals over the sparse decode steps of a model (all layers), for metrics and benchmarks."""

    steps: int = 0  # layer-steps that ran sparse
    dense_steps: int = 0  # layer-steps whose context was short enough to run dense
    attended_tokens: int = 0
    fp8_tokens: int = 0
    blocks_scored: int = 0
    captured_mass_lower_bound: float = 1.0  # the lowest seen
    probes: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # layer -> per step

    def add(self, stats: SparseStats, layer: int = -1) -> None:
        if stats.dense:
            self.dense_steps += 1
            return
        if stats.probe is not None:
            self.probes.setdefault(layer, []).append(stats.probe)
        self.steps += 1
        self.attended_tokens += stats.attended_tokens
        self.fp8_tokens += stats.fp8_tokens
        self.blocks_scored += stats.blocks_scored
        self.captured_mass_lower_bound = min(self.captured_mass_lower_bound, stats.captured_mass_lower_bound)

    @property
    def fp8_coverage(self) -> float:
        return self.fp8_tokens / self.attended_tokens if self.attended_tokens else 0.0


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (FP8 e4m3 values, a power-of-two scale per row [..., 1]); x ≈ values * scale."""
    amax = x.float().abs().amax(-1, keepdim=True).clamp_min(1e-12)
    scale = torch.exp2(torch.ceil(torch.log2(amax / FP8_MAX)))
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def dequantize_fp8(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return values.float() * scale


def block_bounds(keys: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """keys [Hkv, T, D] -> channel-wise (min, max) per block [Hkv, blocks, D]; a partial last block
    is bounded by its tokens only."""
    num_kv_heads, length, dim = keys.shape
    blocks = -(-length // block_size)
    padded = torch.full((num_kv_heads, blocks * block_size, dim), float("nan"), dtype=torch.float32)
    padded[:, :length] = keys.float()
    padded = padded.view(num_kv_heads, blocks, block_size, dim)
    kmin = torch.where(padded.isnan(), torch.inf, padded).amin(2)
    kmax = torch.where(padded.isnan(), -torch.inf, padded).amax(2)
    return kmin, kmax


def quest_bound(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float) -> torch.Tensor:
    """q [Hkv, G, D] -> the upper bound of each block's logit summed over the group's heads [Hkv, blocks]."""
    qs = q.float()[:, :, None, :] * scale  # [Hkv, G, 1, D]
    bound = torch.maximum(qs * kmin[:, None], qs * kmax[:, None]).sum(-1)  # [Hkv, G, blocks]
    return bound.sum(1)


def scored_bounds(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float) -> torch.Tensor:
    """`quest_bound`, with blocks that hold no finite key scored -inf (never selected)."""
    bound = torch.where(torch.isfinite(kmin).all(-1), quest_bound(q, kmin, kmax, scale), -torch.inf)
    return torch.nan_to_num(bound, nan=-torch.inf)


def captured_lower_bound(bound: torch.Tensor, chosen: torch.Tensor, lse: torch.Tensor, group: int,
                         block_size: int) -> float:
    """A lower bound of the attention mass captured, min over heads: each skipped block holds at
    most block_size * exp(bound - lse) (bounds are group sums: divided by the group for a head)."""
    skipped = torch.ones_like(bound, dtype=torch.bool).scatter_(-1, chosen, False)
    skipped_bound = torch.where(skipped, bound / group, -torch.inf)
    skipped_mass = (block_size * torch.exp(skipped_bound[:, None, :] - lse[..., None])).sum(-1)  # [Hkv, G]
    return float((1 / (1 + skipped_mass)).min())


def sparse_decode(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
                  config: SparseConfig = SparseConfig()) -> tuple[torch.Tensor, SparseStats]:
    """q [H, D]; keys, values [Hkv, T, D] (the sequence's cache, in order). Returns [H, D] and stats."""
    num_heads, dim = q.shape
    num_kv_heads, length, _ = keys.shape
    group = num_heads // num_kv_heads
    qg = q.view(num_kv_heads, group, dim)
    finite = torch.isfinite(keys).all(-1) & torch.isfinite(values).all(-1)  # [Hkv, T]
    keys = torch.where(finite[..., None], keys, torch.zeros((), dtype=keys.dtype))
    values = torch.where(finite[..., None], values, torch.zeros((), dtype=values.dtype))
    bs = config.block_size
    fixed = config.sink_tokens + config.window_tokens
    if length <= fixed + config.budget_tokens:
        out, _lse = _attend(qg, keys, values, finite, scale)
        return out.reshape(num_heads, dim).to(q.dtype), SparseStats(True, length, 0, 0, 1.0)

    blocks = -(-length // bs)
    sink_blocks = config.sink_tokens // bs
    window_start = max(sink_blocks, (length - config.window_tokens) // bs)  # the window's first block (whole)
    middle = torch.arange(sink_blocks, window_start)  # blocks the scorer chooses among
    budget_blocks = min(config.budget_tokens // bs, middle.numel())

    kmin, kmax = block_bounds(torch.where(finite[..., None], keys.float(), torch.nan), bs)
    bound = scored_bounds(qg, kmin, kmax, scale)[:, middle]  # [Hkv, M]
    num_candidates = min(middle.numel(), budget_blocks * config.candidates)
    candidates = bound.topk(num_candidates, dim=-1).indices  # [Hkv, C] into middle

    k8, k_scale = quantize_fp8(keys)
    v8, v_scale = quantize_fp8(values)
    exact = _block_lse(qg, k8, k_scale, finite, middle[candidates], bs, scale)  # [Hkv, C]
    order = exact.argsort(dim=-1, descending=True)
    chosen = candidates.gather(-1, order[:, :budget_blocks])  # [Hkv, budget] best first
    high = max(0, round(budget_blocks * config.high_precision_share))

    outputs, lses = [], []
    attended = fp8_tokens = 0
    for h in range(num_kv_heads):
        fixed_blocks = torch.cat([torch.arange(sink_blocks), torch.arange(window_start, blocks)])
        hi_blocks = torch.cat([fixed_blocks, middle[chosen[h, :high]]])
        lo_blocks = middle[chosen[h, high:]]
        hi_tokens = _tokens_of(hi_blocks, bs, length)
        lo_tokens = _tokens_of(lo_blocks, bs, length)
        out_hi, lse_hi = _attend(qg[h : h + 1], keys[h : h + 1, hi_tokens], values[h : h + 1, hi_tokens],
                                 finite[h : h + 1, hi_tokens], scale)
        if lo_tokens.numel():
            k_lo = dequantize_fp8(k8[h : h + 1, lo_tokens], k_scale[h : h + 1, lo_tokens])
            v_lo = dequantize_fp8(v8[h : h + 1, lo_tokens], v_scale[h : h + 1, lo_tokens])
            out_lo, lse_lo = _attend(qg[h : h + 1], k_lo, v_lo, finite[h : h + 1, lo_tokens], scale)
            out_hi, lse_hi = _merge(out_hi, lse_hi, out_lo, lse_lo)
        outputs.append(out_hi)
        lses.append(lse_hi)
        attended += hi_tokens.numel() + lo_tokens.numel()
        fp8_tokens += lo_tokens.numel()
    out = torch.cat(outputs).reshape(num_heads, dim)

    captured = captured_lower_bound(bound, chosen, torch.stack(lses).squeeze(1), group, bs)
    stats = SparseStats(False, attended // num_kv_heads, fp8_tokens // num_kv_heads,
                        int(candidates.numel() // num_kv_heads), captured)
    if config.probe:
        stats.probe = _probe(qg, keys, finite, scale, bs, sink_blocks, window_start, middle, chosen)
    return out.to(q.dtype), stats


def _probe(qg, keys, finite, scale, bs, sink_blocks, window_start, middle, chosen) -> dict[str, float]:
    """Exact attention masses (mean over query heads): of the sinks and window, of what was
    selected with them, and of an oracle that selects the same number of blocks by their true mass."""
    logits = torch.einsum("hgd,htd->hgt", qg.float(), keys.float()) * scale
    probs = torch.softmax(logits.masked_fill(~finite[:, None, :], -torch.inf), -1).nan_to_num(0.0)
    length = keys.shape[1]
    blocks = -(-length // bs)
    block_mass = torch.zeros(*probs.shape[:2], blocks * bs)
    block_mass[..., :length] = probs
    block_mass = block_mass.view(*probs.shape[:2], blocks, bs).sum(-1)  # [Hkv, G, blocks]
    fixed = block_mass[..., :sink_blocks].sum(-1) + block_mass[..., window_start:].sum(-1)
    middle_mass = block_mass[:, :, middle]  # [Hkv, G, M]
    picked = chosen[:, None, :].expand(-1, middle_mass.shape[1], -1)
    selected = middle_mass.gather(-1, picked).sum(-1)
    oracle = middle_mass.topk(chosen.shape[1], dim=-1).values.sum(-1)
    return {"fixed": float(fixed.mean()), "captured": float((fixed + selected).mean()),
            "oracle": float((fixed + oracle).mean())}


def _tokens_of(blocks: torch.Tensor, block_size: int, length: int) -> torch.Tensor:
    tokens = (blocks[:, None] * block_size + torch.arange(block_size)).flatten()
    return tokens[tokens < length]


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor,
            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q [Hkv, G, D]; keys, values [Hkv, T, D]; valid [Hkv, T] -> out [Hkv, G, D], lse [Hkv, G] (fp32)."""
    logits = torch.einsum("hgd,htd->hgt", q.float(), keys.float()) * scale
    logits = logits.masked_fill(~valid[:, None, :], -torch.inf)
    lse = torch.logsumexp(logits, -1)
    probs = torch.exp(logits - lse[..., None]).nan_to_num(0.0)  # a head with nothing valid: zeros
    return torch.einsum("hgt,htd->hgd", probs, values.float()), lse


def _merge(out_a, lse_a, out_b, lse_b):
    lse = torch.logaddexp(lse_a, lse_b)
    out = out_a * torch.exp(lse_a - lse)[..., None] + out_b * torch.exp(lse_b - lse)[..., None]
    return out.nan_to_num(0.0), lse


def _block_lse(q: torch.Tensor, k8: torch.Tensor, k_scale: torch.Tensor, valid: torch.Tensor,
               blocks: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """Per KV head, the log-sum-exp over each candidate block's tokens of the group-summed logits
    on FP8 keys: blocks [Hkv, C] -> [Hkv, C]."""
    num_kv_heads, _num_candidates = blocks.shape
    tokens = blocks[..., None] * block_size + torch.arange(block_size)  # [Hkv, C, bs]
    length = k8.shape[1]
    in_range = tokens < length
    tokens = tokens.clamp_max(length - 1)
    heads = torch.arange(num_kv_heads)[:, None, None]
    keys = dequantize_fp8(k8[heads, tokens], k_scale[heads, tokens])  # [Hkv, C, bs, D]
    logits = torch.einsum("hgd,hcbd->hcb", q.float(), keys) * scale  # summed over the group
    logits = logits.masked_fill(~(in_range & valid[heads, tokens]), -torch.inf)
    return torch.logsumexp(logits, -1).nan_to_num(nan=-torch.inf)
