"""Sparse FP8 decode attention: the torch reference (issue 12). Triton kernels must match it.

One decode query attends, per KV head, only the key blocks that matter:
- always: the attention sinks (the first tokens) and the local window (the last tokens);
- of the blocks between, a scorer picks the budget in two stages: Quest's upper bound per block
  (sum over channels of max(q·min, q·max), from each block's channel-wise key bounds), then, for a
  candidate set a few times the budget, each block's exact attention share on FP8 keys (per query
  head, normalised over the candidates, summed over the GQA group: one selection per KV head).
  Past the trained window (`SparseConfig.remaps`) the second stage reads int8 keys before RoPE,
  and where the middle is at most `scan_tokens` long it scores every block: no bound to miss by;
  there a step selects by the larger of a block's share and its remembered score (`sparse_memory.py`);
- precision by importance: the sinks, the window's newest tokens and the best-scoring selected
  blocks are read in the cache dtype; the rest of the window and the next band of selected blocks
  in FP8 e4m3 (per-token, per-head power-of-two scales); everything else is skipped. The two parts
  are merged by log-sum-exp.

Non-finite keys never reach the output: their tokens are masked out. The returned `SparseStats`
say what was attended and estimate the attention mass captured (attended against the candidates
left out), which the feedback loop (`sparse_budget.py`) holds at a target by moving the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.rope import apply_rotary

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
_FP8_TABLE = torch.arange(256, dtype=torch.uint8).view(FP8).float().nan_to_num(0.0)
# Two codes at once: the 65,536 byte pairs -> their two fp32 values as one int64 (half the lookups).
_FP8_PAIRS = torch.stack([_FP8_TABLE.repeat(256), _FP8_TABLE.repeat_interleave(256)], -1).view(torch.int64).squeeze(-1)


@dataclass(frozen=True)
class SparseConfig:
    block_size: int = 64
    sink_tokens: int = 64
    window_tokens: int = 2048
    recent_tokens: int = 512  # the window's newest tokens, in the cache dtype; older window tokens in FP8
    budget_tokens: int = 2048  # selected between the sinks and the window (where the feedback loop starts)
    high_precision_share: float = 0.25  # of the budget attended in the cache dtype; 1.0: no FP8 anywhere
    candidates: int = 4  # stage two scores this many times the budget, on FP8 keys
    dense_layers: tuple[int, ...] = (0,)  # layers whose attention is diffuse (the default model's layer 0)
    target_mass: float | None = 0.95  # the feedback loop holds the captured mass here; None: a fixed budget
    min_budget_tokens: int = 1024  # below it top-1 agreement with dense fell to 0.961 at 8k (0.981 with it)
    max_budget_tokens: int = 8192
    probe_every: int = 32  # the feedback loop's exact probe (a dense read), every this many steps of a layer
    remap_beyond: int | None = None  # longer contexts attend sinks and selected blocks packed before the window
    scan_tokens: int = 131072  # past the window, a middle up to this long is scored whole (`candidate_blocks`)
    remap_budget_tokens: int = 512  # past the window, selected per decode step (`remapped_budget_tokens`)
    pack_by_score: bool = True  # past the window, the best selected blocks nearest it (`packed_shifts`)
    memory_decay: float = 0.9  # past the window, a block's decode score keeps this share of its last (sparse_memory.py)
    prefill_by_largest: bool = True  # prefill ranks middle blocks by one sampled query's largest share, not the sum
    probe: bool = False  # probe every step: exact masses and an oracle's (benchmarks, tests)

    def __post_init__(self) -> None:
        bs = self.block_size
        assert self.sink_tokens % bs == 0 and self.window_tokens % bs == 0 and self.recent_tokens % bs == 0
        assert self.recent_tokens > 0  # more than the window: the whole window in the cache dtype
        assert 0 <= self.high_precision_share <= 1 and self.candidates >= 1 and 0 <= self.memory_decay < 1
        assert bs <= self.min_budget_tokens <= self.max_budget_tokens and bs <= self.remap_budget_tokens

    @property
    def uses_fp8(self) -> bool:
        return self.high_precision_share < 1

    def remaps(self, length: int) -> bool:
        """Past the positions a model was trained on, dense attention breaks down (RoPE rotations it
        never saw): the middle is then scored as if it sat at distance `window_tokens` (InfLLM), and
        the sinks and selected blocks are attended packed just before the window, in text order or
        the best nearest it (`packed_shifts`); the window keeps its true positions."""
        return self.remap_beyond is not None and length > self.remap_beyond

    @property
    def remapped_budget_tokens(self) -> int:
        """The budget past the trained window, where the feedback loop cannot steer (it sees scored
        masses, not attended ones): `remap_budget_tokens`, below the loop's floor at 8k, because every
        block selected there that does not matter draws attention away from the ones that do (copying
        a signature from 100k back, teacher-forced, its block forced into every selection: 14/20 among
        2 blocks, 10/20 among 8, 6/20 among 16; loss on the last 256 tokens of 32k: 1.115 at 512
        tokens, 1.133 at 1,024); a fixed budget stays fixed."""
        return self.budget_tokens if self.target_mass is None else min(self.budget_tokens, self.remap_budget_tokens)

    def runs_dense(self, length: int) -> bool:
        """Short contexts are attended whole: there is nothing worth skipping."""
        return length <= self.sink_tokens + self.window_tokens + self.budget_tokens


@dataclass(frozen=True)
class Layout:
    """The roles of a context's logical blocks: sinks, the middle the scorer chooses among, the window
    (its older part read in FP8 when FP8 is on, its newest part in the cache dtype)."""

    num_blocks: int
    sink_blocks: int
    window_first: int
    recent_first: int

    @classmethod
    def of(cls, length: int, config: SparseConfig) -> Layout:
        bs = config.block_size
        sink_blocks = config.sink_tokens // bs
        window_first = max(sink_blocks, (length - config.window_tokens) // bs)  # whole blocks
        recent_first = max(window_first, (length - min(config.recent_tokens, config.window_tokens)) // bs)
        return cls(-(-length // bs), sink_blocks, window_first, recent_first)

    @property
    def middle(self) -> torch.Tensor:
        return torch.arange(self.sink_blocks, self.window_first)

    @property
    def sinks(self) -> torch.Tensor:
        return torch.arange(self.sink_blocks)

    def window(self, fp8: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's blocks (read in the cache dtype, read in FP8): with FP8, the older part in FP8."""
        recent, older = torch.arange(self.recent_first, self.num_blocks), torch.arange(self.window_first, self.recent_first)
        return (torch.cat([older, recent]), older[:0]) if not fp8 else (recent, older)

    def fixed(self, fp8: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(blocks always read in the cache dtype, blocks always read in FP8)."""
        window_hi, window_lo = self.window(fp8)
        return torch.cat([self.sinks, window_hi]), window_lo


@dataclass
class SparseStats:
    dense: bool  # the context was short enough to attend whole
    attended_tokens: int  # per KV head, on average
    fp8_tokens: int  # of them, read in FP8
    blocks_scored: int  # by the exact stage, per KV head
    captured_mass_lower_bound: float  # from the Quest bounds of the skipped blocks, min over heads
    budget_tokens: int = 0  # selected between sinks and window
    captured_mass: float = 1.0  # estimated: attended against the candidates left out, mean over query heads
    probe: dict[str, float] | None = None  # exact masses, mean over query heads (probe steps)

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
    budget_tokens: int = 0
    captured_mass_lower_bound: float = 1.0  # the lowest seen
    probes: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # layer -> per probed step

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
        self.budget_tokens += stats.budget_tokens
        self.captured_mass_lower_bound = min(self.captured_mass_lower_bound, stats.captured_mass_lower_bound)

    @property
    def fp8_coverage(self) -> float:
        return self.fp8_tokens / self.attended_tokens if self.attended_tokens else 0.0


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (FP8 e4m3 values, a power-of-two scale per row [..., 1]); x ≈ values * scale."""
    amax = x.float().abs().amax(-1, keepdim=True).clamp_min(1e-12)
    scale = torch.exp2(torch.ceil(torch.log2(amax / FP8_MAX)))
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (int8 values, a scale per row [..., 1]); x ≈ values * scale. For keys that are
    only scored: the CPU multiplies int8 by bf16 without dequantising (`int8_logits`), FP8 it cannot."""
    scale = x.float().abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
    return (x.float() / scale).round().clamp(-127, 127).to(torch.int8), scale


def int8_logits(q: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """q [Hkv, G, D]; codes [Hkv, T, D] int8 with scales [Hkv, T] -> q·k [Hkv, G, T] fp32. One call per
    head of the int8 GEMV that decodes the model's weights (quantize.py), in bf16: ~2 ms for 128k
    tokens of three heads on two cores, where the FP8 table lookup takes ~170."""
    q, scales = q.to(torch.bfloat16), scales.to(torch.bfloat16)
    return torch.stack([torch._weight_int8pack_mm(q[h], codes[h], scales[h]) for h in range(q.shape[0])]).float()


def fp8_to_float(values: torch.Tensor) -> torch.Tensor:
    """e4m3 -> fp32, exactly: a table lookup, on the CPU three times as fast as the cast (one lookup
    per pair of codes when the last dimension is even). NaN codes read as 0 (quantisation never
    writes them)."""
    codes = values.contiguous().view(torch.uint8)
    if codes.shape[-1] % 2:
        return _FP8_TABLE.take(codes.long())
    pairs = codes.view(torch.int16).flatten().int() & 0xFFFF
    return _FP8_PAIRS.index_select(0, pairs).view(torch.float32).view(codes.shape)


def dequantize_fp8(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return fp8_to_float(values) * scale


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


def quest_bounds(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float) -> torch.Tensor:
    """q [Hkv, N, D] (any rows) -> the upper bound of each row's logit on each block [Hkv, N, blocks]:
    per channel max(q·min, q·max), which is q⁺·max + q⁻·min, so two matmuls."""
    qs = q.float() * scale
    return qs.clamp(min=0) @ kmax.transpose(1, 2) + qs.clamp(max=0) @ kmin.transpose(1, 2)


def quest_bound(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float) -> torch.Tensor:
    """q [Hkv, G, D] -> the upper bound of each block's logit summed over the group's heads [Hkv, blocks]."""
    return quest_bounds(q, kmin, kmax, scale).sum(1)


def scored_bounds(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float) -> torch.Tensor:
    """`quest_bound`, with blocks that hold no finite key scored -inf (never selected): their bounds
    are min +inf, max -inf, so each product holds an infinity or 0·inf (NaN), and NaN reads -inf."""
    return torch.nan_to_num(quest_bound(q, kmin, kmax, scale), nan=-torch.inf)


def captured_lower_bound(bound: torch.Tensor, chosen: torch.Tensor, lse: torch.Tensor, group: int,
                         block_size: int) -> float:
    """A lower bound of the attention mass captured, min over heads: each skipped block holds at
    most block_size * exp(bound - lse) (bounds are group sums: divided by the group for a head)."""
    skipped = torch.ones_like(bound, dtype=torch.bool).scatter_(-1, chosen, False)
    skipped_bound = torch.where(skipped, bound / group, -torch.inf)
    skipped_mass = (block_size * torch.exp(skipped_bound[:, None, :] - lse[..., None])).sum(-1)  # [Hkv, G]
    return float((1 / (1 + skipped_mass)).min())


def candidate_blocks(bound: torch.Tensor, budget: int, config: SparseConfig, remap: bool) -> torch.Tensor:
    """Stage two's candidates [Hkv, C], indices into the middle, from Quest's bound [Hkv, M]: the
    `candidates` × budget best; past the trained window, when the middle is at most `scan_tokens`
    long, all of them, in order (a bound over 64 tokens misses the one that matters: copying a
    signature from 20k tokens back went from 3/20 to 8/20 with every block scored exactly)."""
    num_kv_heads, middle = bound.shape
    if remap and middle * config.block_size <= config.scan_tokens:
        return torch.arange(middle).expand(num_kv_heads, -1)
    return bound.topk(min(middle, budget * config.candidates), dim=-1).indices


def candidate_shares(lse: torch.Tensor) -> torch.Tensor:
    """Stage two's score: lse [Hkv, G, C] (each query head's log-sum-exp over each candidate block)
    -> each block's share of the candidates' attention, summed over the group's heads [Hkv, C].
    Summing shares, not logits, ranks a block that one head needs above one all heads mildly like."""
    return torch.softmax(lse, -1).nan_to_num(0.0).sum(1)


def captured_estimate(lse_attended: torch.Tensor, lse_candidates: torch.Tensor, chosen: torch.Tensor) -> float:
    """The attention mass captured, mean over query heads, estimated as what was attended against
    what the candidates left out would add (blocks outside the candidates are taken as empty):
    lse_attended [Hkv, G]; lse_candidates [Hkv, G, C]; chosen [Hkv, B] indices into C."""
    left_out = lse_candidates.scatter(-1, chosen[:, None, :].expand(-1, lse_candidates.shape[1], -1), -torch.inf)
    left_out = torch.logsumexp(left_out, -1)  # [Hkv, G]
    captured = torch.sigmoid(lse_attended - left_out)  # e^a / (e^a + e^b)
    return float(captured.nan_to_num(1.0).mean())


def packed_shifts(far: torch.Tensor, window_first: int, sink_blocks: int,
                  shares: torch.Tensor | None = None) -> torch.Tensor:
    """Far logical blocks [Hkv, N] (the sinks, then the selected) -> how many blocks each moves (on if
    > 0, back if < 0) to sit packed just before the window (block `window_first`): the sinks first,
    then the selected in text order, or, given their scores [Hkv, N - sink_blocks], by score in
    half-octaves (text order within one), the best nearest the window (`SparseConfig.pack_by_score`)."""
    selected = far[:, sink_blocks:]
    if shares is not None:
        level = torch.floor(2 * torch.log2(shares.float().clamp(min=2.0**-64))).long()
        selected = level * (int(far.max()) + 1) + selected
    slot = torch.cat([_ranks(far[:, :sink_blocks]), sink_blocks + _ranks(selected)], 1)
    return window_first - far.shape[1] + slot - far


def packing_scores(shares: torch.Tensor, order: torch.Tensor, budget: int,
                   config: SparseConfig) -> torch.Tensor | None:
    """The selected blocks' scores [Hkv, budget] (`order` best first) where packing goes by them."""
    return shares.gather(-1, order[:, :budget]) if config.pack_by_score else None


def _ranks(keys: torch.Tensor) -> torch.Tensor:
    return keys.argsort(-1).argsort(-1)


def shift_keys(keys: torch.Tensor, shifts: torch.Tensor, rope) -> torch.Tensor:
    """keys [..., T, D] rotated at their positions, moved `shifts` [..., T] positions on, or back
    where negative (RoPE is relative: one more rotation, by -θ backwards): fp32."""
    shifts = shifts.flatten()
    cos, sin = rope(shifts.abs())
    sin = torch.where(shifts[:, None, None] < 0, -sin, sin)
    return apply_rotary(keys.reshape(-1, 1, keys.shape[-1]).float(), cos, sin).view(keys.shape)


def remap_keys(keys: torch.Tensor, before: int, distance: int, rope) -> torch.Tensor:
    """keys [Hkv, T, D], rotated at their positions 0..T-1, for a query at P = T-1: the first `before`
    moved to sit `distance` from the query (RoPE is relative: rotating t by P-distance-t moves it)."""
    shift = keys.shape[1] - 1 - distance - torch.arange(before)  # >= 0: those tokens are farther
    cos, sin = rope(shift)
    keys = keys.clone()
    keys[:, :before] = apply_rotary(keys[:, :before].transpose(0, 1).float(), cos, sin).transpose(0, 1).to(keys.dtype)
    return keys


def sparse_decode(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
                  config: SparseConfig = SparseConfig(), budget_tokens: int | None = None, rope=None,
                  recall=None) -> tuple[torch.Tensor, SparseStats]:
    """q [H, D]; keys, values [Hkv, T, D] (the sequence's cache, in order). Returns [H, D] and stats.
    `budget_tokens` overrides the config's (the feedback loop's current budget); `rope` (positions
    -> cos, sin) remaps positions where `config.remaps` says so, and there `recall(blocks, shares)`
    (the sequence's `SelectionMemory` of this layer) turns the candidates' shares into the scores
    selected by."""
    num_heads, dim = q.shape
    num_kv_heads, length, _ = keys.shape
    group = num_heads // num_kv_heads
    qg = q.view(num_kv_heads, group, dim)
    finite = torch.isfinite(keys).all(-1) & torch.isfinite(values).all(-1)  # [Hkv, T]
    keys = torch.where(finite[..., None], keys, torch.zeros((), dtype=keys.dtype))
    values = torch.where(finite[..., None], values, torch.zeros((), dtype=values.dtype))
    if config.runs_dense(length):
        out, _lse = _attend(qg, keys, values, finite, scale)
        return out.reshape(num_heads, dim).to(q.dtype), SparseStats(True, length, 0, 0, 1.0)

    bs = config.block_size
    layout = Layout.of(length, config)
    remap = config.remaps(length)
    scored = keys  # where remapping, the blocks are scored at distance window_tokens
    if remap:
        assert rope is not None, "remapping positions needs the model's rotary table"
        scored = remap_keys(keys, layout.window_first * bs, config.window_tokens, rope)
    middle = layout.middle
    budget = min((budget_tokens or config.budget_tokens) // bs, middle.numel())
    kmin, kmax = block_bounds(torch.where(finite[..., None], scored.float(), torch.nan), bs)
    bound = scored_bounds(qg, kmin, kmax, scale)[:, middle]  # [Hkv, M]
    candidates = candidate_blocks(bound, budget, config, remap)  # [Hkv, C]

    k8, k_scale = quantize_fp8(keys)  # where remapping, scored on int8 keys (the paged path's pools)
    if remap:
        logits = int8_logits(qg, *_squeezed(quantize_int8(scored))) * scale
    else:
        logits = torch.einsum("hgd,htd->hgt", qg.float(), dequantize_fp8(k8, k_scale)) * scale
    lse_candidates = _block_lse(logits, finite, middle[candidates], bs)  # [Hkv, G, C]
    shares = candidate_shares(lse_candidates)
    if remap and recall is not None:
        shares = recall(middle[candidates], shares)
    order = shares.argsort(dim=-1, descending=True)
    chosen = candidates.gather(-1, order[:, :budget])  # [Hkv, budget] best first
    high = round(budget * config.high_precision_share)
    fixed_hi, fixed_lo = layout.fixed(config.uses_fp8)
    if remap:  # attended packed before the window (`packed_shifts`)
        far = torch.cat([layout.sinks.expand(num_kv_heads, -1), middle[chosen]], 1)
        scores = packing_scores(shares, order, budget, config)
        shifts = torch.zeros(num_kv_heads, layout.num_blocks, dtype=torch.long).scatter_(
            1, far, packed_shifts(far, layout.window_first, layout.sink_blocks, scores) * bs)
    v8, v_scale = quantize_fp8(values)

    outputs, lses = [], []
    attended = fp8_tokens = 0
    for h in range(num_kv_heads):
        hi_tokens = _tokens_of(torch.cat([fixed_hi, middle[chosen[h, :high]]]), bs, length)
        lo_tokens = _tokens_of(torch.cat([fixed_lo, middle[chosen[h, high:]]]), bs, length)
        k_hi = keys[h : h + 1, hi_tokens]
        if remap:
            k_hi = shift_keys(k_hi, shifts[h, hi_tokens // bs], rope)
        out_hi, lse_hi = _attend(qg[h : h + 1], k_hi, values[h : h + 1, hi_tokens], finite[h : h + 1, hi_tokens], scale)
        if lo_tokens.numel():
            k_lo = dequantize_fp8(k8[h : h + 1, lo_tokens], k_scale[h : h + 1, lo_tokens])
            if remap:
                k_lo = shift_keys(k_lo, shifts[h, lo_tokens // bs], rope)
            v_lo = dequantize_fp8(v8[h : h + 1, lo_tokens], v_scale[h : h + 1, lo_tokens])
            out_lo, lse_lo = _attend(qg[h : h + 1], k_lo, v_lo, finite[h : h + 1, lo_tokens], scale)
            out_hi, lse_hi = _merge(out_hi, lse_hi, out_lo, lse_lo)
        outputs.append(out_hi)
        lses.append(lse_hi)
        attended += hi_tokens.numel() + lo_tokens.numel()
        fp8_tokens += lo_tokens.numel()
    out = torch.cat(outputs).reshape(num_heads, dim)

    lse = torch.stack(lses).squeeze(1)  # [Hkv, G]
    picked = order[:, :budget]  # chosen, as indices into the candidates
    stats = SparseStats(False, attended // num_kv_heads, fp8_tokens // num_kv_heads, int(candidates.shape[1]),
                        captured_lower_bound(bound, chosen, lse, group, bs), budget * bs,
                        captured_estimate(lse, lse_candidates, picked))
    if config.probe:
        stats.probe = exact_masses(qg, scored, finite, scale, bs, layout, chosen)
    return out.to(q.dtype), stats


def exact_masses(qg, keys, finite, scale, bs, layout: Layout, chosen) -> dict[str, float]:
    """Exact attention masses (mean over query heads): of the sinks and window, of what was
    selected with them, and of an oracle that selects the same number of blocks by their true mass."""
    logits = torch.einsum("hgd,htd->hgt", qg.float(), keys.float()) * scale
    probs = torch.softmax(logits.masked_fill(~finite[:, None, :], -torch.inf), -1).nan_to_num(0.0)
    length = keys.shape[1]
    blocks = -(-length // bs)
    block_mass = torch.zeros(*probs.shape[:2], blocks * bs)
    block_mass[..., :length] = probs
    block_mass = block_mass.view(*probs.shape[:2], blocks, bs).sum(-1)  # [Hkv, G, blocks]
    fixed = block_mass[..., : layout.sink_blocks].sum(-1) + block_mass[..., layout.window_first :].sum(-1)
    middle_mass = block_mass[:, :, layout.middle]  # [Hkv, G, M]
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


def _squeezed(quantized: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    codes, scale = quantized
    return codes, scale.squeeze(-1)


def _block_lse(logits: torch.Tensor, valid: torch.Tensor, blocks: torch.Tensor, block_size: int) -> torch.Tensor:
    """Each query head's log-sum-exp of its logits [Hkv, G, T] over each candidate block's tokens:
    blocks [Hkv, C] -> [Hkv, G, C]."""
    num_kv_heads, _num_candidates = blocks.shape
    tokens = blocks[..., None] * block_size + torch.arange(block_size)  # [Hkv, C, bs]
    length = logits.shape[-1]
    in_range = tokens < length
    tokens = tokens.clamp_max(length - 1)
    heads = torch.arange(num_kv_heads)[:, None, None]
    picked = logits[heads, :, tokens].permute(0, 3, 1, 2)  # [Hkv, G, C, bs]
    picked = picked.masked_fill(~(in_range & valid[heads, tokens])[:, None], -torch.inf)
    return torch.logsumexp(picked, -1).nan_to_num(nan=-torch.inf)
