"""Sparse FP8 decode attention, the torch reference: it equals dense attention when everything is
selected, its Quest bound really bounds, FP8 stays within e4m3's precision, and the edge cases
(short contexts, a partial block, equal scores, NaN/Inf keys) behave."""

import math
from dataclasses import replace

import pytest
import torch

from engine.sparse_attention import (
    SparseConfig,
    block_bounds,
    dequantize_fp8,
    fp8_to_float,
    int8_logits,
    quantize_fp8,
    quantize_int8,
    quest_bound,
    sparse_decode,
)

SMALL = SparseConfig(block_size=16, sink_tokens=16, window_tokens=64, budget_tokens=64, candidates=2)


def dense(q, keys, values, scale):
    num_heads, _dim = q.shape
    group = num_heads // keys.shape[0]
    k = keys.float().repeat_interleave(group, 0)
    v = values.float().repeat_interleave(group, 0)
    probs = torch.softmax(torch.einsum("hd,htd->ht", q.float(), k) * scale, -1)
    return torch.einsum("ht,htd->hd", probs, v)


def inputs(length, heads=6, kv_heads=2, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(heads, dim, generator=g), torch.randn(kv_heads, length, dim, generator=g),
            torch.randn(kv_heads, length, dim, generator=g), 1 / math.sqrt(dim))


def test_a_short_context_is_attended_densely() -> None:
    q, k, v, scale = inputs(100)
    out, stats = sparse_decode(q, k, v, scale, SMALL)
    assert stats.dense and stats.fp8_tokens == 0
    torch.testing.assert_close(out, dense(q, k, v, scale), rtol=1e-5, atol=1e-5)


def test_selecting_every_block_in_high_precision_equals_dense_with_a_partial_last_block() -> None:
    q, k, v, scale = inputs(16 + 64 + 64 + 64 + 7)  # middle of 8 blocks, budget 4, last block partial
    everything = SparseConfig(block_size=16, sink_tokens=16, window_tokens=64, budget_tokens=64 * 2,
                              high_precision_share=1.0, candidates=2)
    out, stats = sparse_decode(q, k, v, scale, everything)
    assert not stats.dense or stats.attended_tokens == k.shape[1]
    torch.testing.assert_close(out, dense(q, k, v, scale), rtol=1e-4, atol=1e-5)


def test_fp8_band_stays_within_e4m3_precision_of_dense() -> None:
    q, k, v, scale = inputs(16 + 64 * 4 + 64 + 7)
    all_fp8 = SparseConfig(block_size=16, sink_tokens=16, window_tokens=64, budget_tokens=64 * 4,
                           high_precision_share=0.0, candidates=1)
    out, stats = sparse_decode(q, k, v, scale, all_fp8)
    assert stats.fp8_coverage > 0.5
    torch.testing.assert_close(out, dense(q, k, v, scale), rtol=2e-2, atol=2e-2)


def test_sparse_selection_finds_the_block_that_matters() -> None:
    q, k, v, scale = inputs(16 + 64 * 8 + 64)
    target = 16 + 64 * 5 + 3  # a token far from sinks and window that the query points at
    k[:, target] = q.view(2, 3, -1).sum(1) * 3
    v[:, target] = 10.0
    out, stats = sparse_decode(q, k, v, scale, SMALL)
    reference = dense(q, k, v, scale)
    assert not stats.dense and stats.attended_tokens < k.shape[1]
    assert stats.captured_mass_lower_bound <= 1.0
    heavy = reference[:, 0] > 9  # the heads whose attention the planted token takes over
    assert heavy.sum() >= 4
    torch.testing.assert_close(out[heavy], reference[heavy], rtol=5e-3, atol=5e-2)  # it was selected


def test_the_quest_bound_bounds_every_blocks_logits() -> None:
    q, k, _v, scale = inputs(16 * 9 + 5)
    kmin, kmax = block_bounds(k, 16)
    bound = quest_bound(q.view(2, 3, -1), kmin, kmax, scale)  # [Hkv, blocks], group-summed
    logits = torch.einsum("hgd,htd->ht", q.view(2, 3, -1), k) * scale  # group-summed per token
    for b in range(bound.shape[1]):
        assert (logits[:, b * 16 : (b + 1) * 16].max(-1).values <= bound[:, b] + 1e-4).all()


def test_fp8_quantisation_uses_power_of_two_scales_and_keeps_three_mantissa_bits() -> None:
    x = torch.randn(4, 100, 64) * torch.logspace(-3, 3, 100)[None, :, None]
    values, scales = quantize_fp8(x)
    assert values.dtype == torch.float8_e4m3fn
    assert torch.equal(torch.exp2(torch.log2(scales).round()), scales)
    back = dequantize_fp8(values, scales)
    big = x.abs() > x.abs().amax(-1, keepdim=True) / 64  # e4m3's normal range below the row's max
    assert ((back - x).abs()[big] <= x.abs()[big] / 16 + 1e-12).all()


def test_int8_keys_are_scored_within_their_rounding() -> None:
    """Keys that are only scored (before RoPE, past the trained window) are int8 with a scale per row;
    the CPU's int8 GEMV multiplies them by the query in bf16."""
    q, k, _v, _scale = inputs(300, heads=6, kv_heads=2, dim=64)
    k = k * torch.logspace(-2, 2, 300)[None, :, None]  # rows of very different sizes
    codes, scales = quantize_int8(k)
    assert codes.dtype == torch.int8 and scales.shape == (2, 300, 1)
    assert ((codes.float() * scales - k).abs() <= scales / 2 + 1e-6 * k.abs()).all()
    exact = torch.einsum("hgd,htd->hgt", q.view(2, 3, 64), k)
    scored = int8_logits(q.view(2, 3, 64), codes, scales.squeeze(-1))
    row_size = q.view(2, 3, 64).norm(dim=-1)[..., None] * k.norm(dim=-1)[:, None, :]  # |q| |k| per logit
    assert ((scored - exact).abs() <= 0.02 * row_size).all()


def _one_head_rope(dim: int, length: int):
    from engine.config import ModelConfig
    from engine.rope import RotaryEmbedding

    return RotaryEmbedding(ModelConfig(arch="llama", vocab_size=10, hidden_size=dim, num_layers=1, num_heads=1,
                                       num_kv_heads=1, intermediate_size=8, max_position=64), length)


def _cached_keys(scored: torch.Tensor, before: int, config: SparseConfig, rope) -> torch.Tensor:
    """Keys [1, T, D] as the cache holds them (rotated at their positions) whose first `before` read as
    `scored` once remapping moves them to distance window_tokens from the last position's query."""
    from engine.rope import apply_rotary

    shift = scored.shape[1] - 1 - config.window_tokens - torch.arange(before)  # what remapping moves them by
    cos, sin = rope(shift)
    keys = scored.clone()
    keys[0, :before] = apply_rotary(scored[0, :before, None], cos, -sin)[:, 0]
    return keys


def test_past_the_window_every_middle_block_is_scored_where_the_bound_misses_the_one_that_matters() -> None:
    """Decoy blocks whose channel-wise extremes come from different tokens have a large Quest bound
    and small logits; the block that matters holds one key along the query. Past the trained window
    stage two scores every middle block (`scan_tokens`) and selects it; with the bound preselecting
    it is missed. Probes measure the attention mass each selection captures, at the scored distance."""
    dim, bs, length = 32, 16, 512
    rope = _one_head_rope(dim, length)
    config = SparseConfig(block_size=bs, sink_tokens=16, window_tokens=64, recent_tokens=16, budget_tokens=32,
                          min_budget_tokens=16, candidates=1, target_mass=None, remap_beyond=128, probe=True)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, dim, generator=g)
    scored = torch.randn(1, length, dim, generator=g) * 0.05  # the keys as the scorer sees them (distance 64)
    for block in range(4, 24, 2):  # decoys: token i holds channel i at 3x the query's sign
        scored[0, block * bs + torch.arange(bs), torch.arange(bs)] = 3 * q[0, :bs].sign()
        scored[0, block * bs + torch.arange(bs), bs + torch.arange(bs)] = 3 * q[0, bs:].sign()
    needle = 17
    scored[0, needle * bs + 5] = 8 * q[0] / q[0].norm()
    window_first = (length - config.window_tokens) // bs
    keys = _cached_keys(scored, window_first * bs, config, rope)
    values = torch.randn(1, length, dim, generator=g)
    kmin, kmax = block_bounds(scored, bs)
    bounds = quest_bound(q.view(1, 1, dim), kmin, kmax, 1.0)[0]
    assert bounds[4:24:2].min() > bounds[needle]  # the bound ranks every decoy above the block that matters

    _out, scanned = sparse_decode(q, keys, values, 1.0, config, rope=rope)
    _out, preselected = sparse_decode(q, keys, values, 1.0, replace(config, scan_tokens=0), rope=rope)
    assert scanned.blocks_scored == window_first - 1 and preselected.blocks_scored == 2
    assert scanned.probe["captured"] > 0.99 and scanned.probe["captured"] == pytest.approx(scanned.probe["oracle"])
    assert preselected.probe["captured"] < 0.5


@pytest.mark.parametrize("width", [64, 7])  # a pair of codes per lookup; one at a time when the width is odd
def test_fp8_lookup_reads_every_code_as_the_cast_does(width: int) -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    pairs = torch.cartesian_prod(codes, codes).flatten()  # every pair of neighbouring codes
    pairs = pairs[: pairs.numel() // width * width].view(-1, width).view(torch.float8_e4m3fn)
    expected = pairs.float().nan_to_num(0.0)  # NaN codes read 0
    assert torch.equal(fp8_to_float(pairs), expected)
    assert torch.equal(fp8_to_float(pairs.t()), expected.t())  # not contiguous


def test_equal_scores_and_non_finite_keys_give_finite_outputs() -> None:
    q, k, v, scale = inputs(16 + 64 * 6 + 64)
    flat = torch.ones_like(k)
    out, _stats = sparse_decode(q, flat, v, scale, SMALL)  # every block scores the same
    assert torch.isfinite(out).all()
    k[:, 200] = float("nan")
    k[:, 300] = float("inf")
    v[:, 301] = float("-inf")
    out, _stats = sparse_decode(q, k, v, scale, SMALL)
    assert torch.isfinite(out).all()
    nothing = torch.full_like(k, float("nan"))
    out, _stats = sparse_decode(q, nothing, v, scale, SMALL)  # no valid key at all: zeros, not NaN
    assert torch.isfinite(out).all()


def test_a_budget_larger_than_the_context_is_dense() -> None:
    q, k, v, scale = inputs(300)
    out, stats = sparse_decode(q, k, v, scale, SparseConfig(block_size=16, sink_tokens=16, window_tokens=64,
                                                             budget_tokens=4096))
    assert stats.dense
    torch.testing.assert_close(out, dense(q, k, v, scale), rtol=1e-5, atol=1e-5)


def test_the_engine_decodes_sparsely_when_asked(default_model) -> None:
    """A context longer than sinks + window + budget: decode steps run sparse, in both bands."""
    from engine import EngineOptions, LLMEngine, SamplingParams

    small = SparseConfig(sink_tokens=64, window_tokens=128, budget_tokens=128, candidates=2)
    prompt = "".join(f"def function_{i}(value):\n    return value * {i}\n\n" for i in range(120))
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    dense_engine = LLMEngine.load(default_model, EngineOptions(dtype="fp32"))
    sparse_engine = LLMEngine.load(default_model, EngineOptions(dtype="fp32", attention="sparse-fp8", sparse=small))
    dense_text = "".join(c.text for c in dense_engine.generate(prompt, params))
    sparse_text = "".join(c.text for c in sparse_engine.generate(prompt, params))
    counter = sparse_engine.model.sparse_counter
    assert len(dense_engine.encode(prompt)) > 64 + 128 + 128
    assert counter.steps > 0 and counter.dense_steps == 0 and 0 < counter.fp8_coverage < 1
    assert sparse_text[:8] == dense_text[:8]  # the next function's start is in the window: same tokens


def test_the_probe_measures_exact_masses_and_the_oracle_bounds_the_selection() -> None:
    q, k, v, scale = inputs(16 + 64 * 8 + 64)
    probing = SparseConfig(block_size=16, sink_tokens=16, window_tokens=64, budget_tokens=64, candidates=2, probe=True)
    _out, stats = sparse_decode(q, k, v, scale, probing)
    p = stats.probe
    assert 0 < p["fixed"] <= p["captured"] <= p["oracle"] + 1e-6 <= 1 + 1e-6
    assert stats.captured_mass_lower_bound <= p["captured"] + 1e-6  # the bound is a lower bound


def test_the_paged_path_matches_the_reference_and_reads_only_what_it_selects(default_model) -> None:
    """The engine keeps block bounds and FP8 copies as it writes; its sparse decode then gives the
    reference's tokens without gathering the whole cache."""
    from engine import EngineOptions, LLMEngine, SamplingParams

    small = SparseConfig(sink_tokens=64, window_tokens=128, recent_tokens=64, budget_tokens=128, candidates=2,
                         target_mass=None)  # a fixed budget: what is read is bounded below
    prompt = "".join(f"def function_{i}(value):\n    return value * {i}\n\n" for i in range(120))
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    paged = LLMEngine.load(default_model, EngineOptions(dtype="fp32", attention="sparse-fp8", sparse=small))
    reference = LLMEngine.load(default_model, EngineOptions(dtype="fp32", attention="sparse-fp8", sparse=small))
    assert paged.kv.sparse_pools is not None and paged.kv.sparse_pools[0] is None  # layer 0 stays dense
    reference.kv.sparse_pools = None  # without pools the torch reference reads the whole cache
    text = "".join(c.text for c in paged.generate(prompt, params))
    reference_text = "".join(c.text for c in reference.generate(prompt, params))
    assert text == reference_text
    counter = paged.model.sparse_counter
    assert counter.steps > 0 and 0 < counter.fp8_coverage < 1
    assert counter.attended_tokens / counter.steps < 64 + 128 + 128 + 64  # sinks, window, budget, a partial block


def test_the_feedback_loop_grows_the_budget_for_a_high_target_and_shrinks_it_for_a_low_one(default_model) -> None:
    """Each layer's budget moves to hold the captured mass at the target; the request reports it."""
    from engine import EngineOptions, LLMEngine, SamplingParams

    prompt = "".join(f"def function_{i}(value):\n    return value * {i}\n\n" for i in range(120))
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    budgets = {}
    for target in (0.999, 0.5):
        config = SparseConfig(sink_tokens=64, window_tokens=128, recent_tokens=64, budget_tokens=256, candidates=2,
                              target_mass=target, min_budget_tokens=64, probe_every=4)
        engine = LLMEngine.load(default_model, EngineOptions(dtype="fp32", attention="sparse-fp8", sparse=config))
        stats = list(engine.generate(prompt, params))[-1].stats
        assert stats.sparse is not None and stats.sparse["layer_steps"] == 29 * 15  # layer 0 is dense
        assert stats.sparse["probes"] == 29 * 4 and 0 < stats.sparse["fp8_coverage"] < 1
        assert 0.0 < stats.sparse["captured_mass"] <= 1.0
        budgets[target] = stats.sparse["budget_tokens"]
    assert budgets[0.999] > 256 > budgets[0.5]


def test_past_the_trained_window_the_budget_holds_still_and_nothing_probes() -> None:
    """Remapped contexts hold the loop's floor whatever mass the scorer sees, and take no dense probe;
    shorter ones steer by it. A fixed budget stays what it is."""
    from engine.sparse_attention import SparseStats
    from engine.sparse_budget import SparseBudget

    config = SparseConfig(budget_tokens=2048, min_budget_tokens=512, target_mass=0.95, probe_every=1, remap_beyond=8192)
    low = SparseStats(False, 2048, 1024, 32, 0.1, 512, captured_mass=0.5)
    feedback = SparseBudget(config)
    for _ in range(4):
        assert not feedback.probes_now(3, 20000)
        feedback.observe(3, low, 20000)
    assert feedback.budget(3, 20000) == 512 and feedback.probes == 0
    assert feedback.metrics()["layer_steps"] == 4
    assert feedback.probes_now(3, 4096)
    feedback.observe(3, low, 4096)
    assert feedback.budget(3, 4096) > 2048
    fixed = SparseBudget(replace(config, target_mass=None))
    assert fixed.budget(3, 20000) == 2048


def test_the_fp8_part_of_the_window_is_its_older_part() -> None:
    """Sinks, the newest window tokens and the best selected blocks in the cache dtype; the rest in FP8."""
    q, k, v, scale = inputs(16 + 64 * 8 + 64)
    config = SparseConfig(block_size=16, sink_tokens=16, window_tokens=64, recent_tokens=32, budget_tokens=64,
                          high_precision_share=0.5, candidates=2)
    _out, stats = sparse_decode(q, k, v, scale, config)
    assert stats.attended_tokens == 16 + 64 + 64
    assert stats.fp8_tokens == 32 + 32  # the older half of the window, the lower half of the selection
    no_fp8 = replace(config, high_precision_share=1.0)
    assert sparse_decode(q, k, v, scale, no_fp8)[1].fp8_tokens == 0


def _remapping_engine(default_model, config: SparseConfig, remap_beyond: int, pools: bool = True):
    """An engine that may read past its trained positions, told to remap from `remap_beyond` on."""
    from engine import EngineOptions, LLMEngine

    engine = LLMEngine.load(default_model, EngineOptions(dtype="fp32", attention="sparse-fp8", sparse=config,
                                                         max_context=8192 + 64, kv_cache_mib=256))
    assert engine.model.sparse.remap_beyond == 8192 and engine.kv.sparse_pools[0] is not None
    engine.model.sparse = replace(engine.model.sparse, remap_beyond=remap_beyond)  # read by the first forward
    if not pools:
        engine.kv.sparse_pools = None  # the torch reference, reading the whole cache
    return engine


@pytest.mark.parametrize(("high_precision_share", "scan_tokens", "pack_by_score", "memory_decay"),
                         [(0.25, 131072, False, 0.0), (1.0, 131072, False, 0.0), (0.25, 0, False, 0.0),
                          (0.25, 131072, True, 0.0), (0.25, 131072, True, 0.9)])
def test_remapped_positions_in_the_paged_path_match_the_reference(default_model, high_precision_share,
                                                                   scan_tokens, pack_by_score, memory_decay) -> None:
    """Past `remap_beyond`, blocks are scored at distance window_tokens and attended packed before the
    window: the paged path (unrotated int8 pools, the query rotated there; blocks moved by their
    shifts) gives the reference's tokens (the whole cache re-rotated), with an FP8 band or none, every
    middle block scored or Quest's bound preselecting, packed in text order or by score, with the
    selection memory or without."""
    from engine import SamplingParams

    config = SparseConfig(sink_tokens=64, window_tokens=128, recent_tokens=64, budget_tokens=128, candidates=2,
                          target_mass=None, high_precision_share=high_precision_share, scan_tokens=scan_tokens,
                          pack_by_score=pack_by_score, memory_decay=memory_decay)
    prompt = "".join(f"def function_{i}(value):\n    return value * {i}\n\n" for i in range(120))
    paged = _remapping_engine(default_model, config, 0)
    length = len(paged.encode(prompt))
    paged.model.sparse = replace(paged.model.sparse, remap_beyond=length)  # the prompt dense, every step remapped
    reference = _remapping_engine(default_model, config, length, pools=False)
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    text = "".join(c.text for c in paged.generate(prompt, params))
    assert text == "".join(c.text for c in reference.generate(prompt, params))
    assert paged.model.sparse_counter.steps == 30 * 9  # every layer, layer 0 too: it is remapped


def test_a_context_past_the_remapping_point_is_prefilled_sparsely_and_still_read(default_model) -> None:
    """Prefill chunks past `remap_beyond` attend window, sinks and selected blocks; the model still
    continues the pattern the way it does with dense attention."""
    from engine import EngineOptions, LLMEngine, SamplingParams

    config = SparseConfig(sink_tokens=64, window_tokens=256, recent_tokens=128, budget_tokens=256, target_mass=None)
    prompt = "".join(f"def function_{i}(value):\n    return value * {i}\n\n" for i in range(120))
    params = SamplingParams(max_tokens=12)
    dense = "".join(c.text for c in LLMEngine.load(default_model, EngineOptions(dtype="fp32")).generate(prompt, params))
    engine = _remapping_engine(default_model, config, 700)
    assert len(engine.encode(prompt)) > 700 + 2 * 512  # chunks of 512: at least two prefilled sparsely
    remapped = "".join(c.text for c in engine.generate(prompt, params))
    assert dense.startswith("\ndef function_120(value):")
    assert remapped == dense


@pytest.mark.parametrize("by_score", [False, True])
@pytest.mark.parametrize("budget_blocks", [16, 3])
def test_sparse_prefill_equals_attention_written_out(budget_blocks, by_score) -> None:
    """One chunk: each query attends the chunk causally and the window before it at true positions,
    the sinks and the selected middle blocks packed just before the window: the sinks, then the
    selected in text order (with a budget covering every middle block, plain causal attention), or
    by score in half-octaves, the best last."""
    from engine.attention import AttentionMetadata, write_kv
    from engine.config import ModelConfig
    from engine.rope import RotaryEmbedding, apply_rotary
    from engine.sparse_paged import SparsePools
    from engine.sparse_prefill import _far_blocks, far_query, sparse_prefill

    heads, kv_heads, dim, bs = 4, 2, 16, 16
    config = SparseConfig(block_size=bs, sink_tokens=16, window_tokens=32, recent_tokens=16,
                          budget_tokens=budget_blocks * bs, target_mass=None, min_budget_tokens=16,
                          pack_by_score=by_score)
    model = ModelConfig(arch="llama", vocab_size=10, hidden_size=heads * dim, num_layers=1, num_heads=heads,
                        num_kv_heads=kv_heads, intermediate_size=8, max_position=64)
    rope = RotaryEmbedding(model, 64)
    g = torch.Generator().manual_seed(0)
    length, chunk = 200, 40  # the chunk is tokens 160..199
    q_pre, k_pre, v = (torch.randn(length, n, dim, generator=g) for n in (heads, kv_heads, kv_heads))
    cos, sin = rope(torch.arange(length))
    q, k = apply_rotary(q_pre, cos, sin), apply_rotary(k_pre, cos, sin)
    blocks = -(-length // bs)
    k_cache, v_cache = torch.zeros(kv_heads, blocks, dim, bs), torch.zeros(kv_heads, blocks * bs, dim)
    pools = SparsePools(kv_heads, blocks, dim, bs, unrotated=True)
    meta = AttentionMetadata.for_step(list(range(blocks)), 0, length, bs)
    write_kv(k_cache, v_cache, k, v, meta)
    pools.write(k, v, meta, cos, sin)
    start = length - chunk
    chunk_meta = AttentionMetadata.for_step(list(range(blocks)), start, chunk, bs)
    remembered = []
    out = sparse_prefill(q[start:], q_pre[start:], k[start:], v[start:], k_cache, v_cache, pools, chunk_meta,
                         dim ** -0.5, config, rope, remember=lambda blocks, scores: remembered.append((blocks, scores)))

    window_first = (start - 32) // bs  # the chunk's window starts on a block
    far, shares = _far_blocks(far_query(q_pre[start:], config, rope), pools, chunk_meta.block_table, 1,
                              window_first, dim ** -0.5, config)
    assert far.shape[1] == 1 + min(budget_blocks, window_first - 1)
    [(blocks, scores)] = remembered  # every middle block, with its largest share of one sampled query
    assert sorted(blocks[0].tolist()) == list(range(1, window_first))
    group = heads // kv_heads
    assert (scores <= group + 1e-6).all() and (scores.sum(-1) >= group - 1e-6).all()  # a query's shares sum to G
    assert (scores.sum(-1) > group + 0.1).all()  # different queries find different blocks
    expected = torch.empty(chunk, heads, dim)
    for h in range(heads):
        kv = h // (heads // kv_heads)
        level = torch.floor(2 * torch.log2(shares[kv])).tolist() if by_score else [0] * len(shares[kv])
        ordered = sorted(zip(level, far[kv, 1:].tolist(), strict=True))  # by half-octave, then text order
        far_blocks = torch.tensor([int(far[kv, 0])] + [block for _, block in ordered])
        tokens = (far_blocks[:, None] * bs + torch.arange(bs)).flatten()
        packed = (window_first - len(far_blocks)) * bs + torch.arange(len(tokens))  # so, before the window
        far_keys = apply_rotary(k_pre[tokens, kv : kv + 1], *rope(packed))[:, 0]
        for row, p in enumerate(range(start, length)):
            logits = torch.cat([far_keys, k[window_first * bs : p + 1, kv]]) @ q[p, h]
            probs = torch.softmax(logits * dim ** -0.5, -1)
            expected[row, h] = probs @ torch.cat([v[tokens, kv], v[window_first * bs : p + 1, kv]])
    torch.testing.assert_close(out.float(), expected, rtol=1e-4, atol=1e-4)
    if budget_blocks >= window_first:
        assert all(sorted(row.tolist()) == list(range(window_first)) for row in far)
    if budget_blocks >= window_first and not by_score:
        full = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), k.repeat_interleave(2, 1).transpose(0, 1), v.repeat_interleave(2, 1).transpose(0, 1),
            is_causal=True, scale=dim ** -0.5).transpose(0, 1)
        torch.testing.assert_close(out.float(), full[start:], rtol=1e-4, atol=1e-4)


def test_packing_puts_the_sinks_first_then_the_selected_in_text_order_or_by_score() -> None:
    """Far blocks (sinks, then the selected best first) move to the slots just before the window: the
    sinks, then the selected in text order; or by score in half-octaves, the best nearest the window,
    text order within a half-octave, where a block near the window that scores low moves back."""
    from engine.sparse_attention import packed_shifts

    far = torch.tensor([[0, 1, 12, 39, 5], [0, 1, 38, 3, 20]])  # two sink blocks, then three selected
    assert (far + packed_shifts(far, 40, sink_blocks=2)).tolist() == [[35, 36, 38, 39, 37], [35, 36, 39, 37, 38]]
    shares = torch.tensor([[0.9, 0.3, 0.01], [0.6, 0.6 * 1.001, 0.55]])  # in row 2, one half-octave
    slots = far + packed_shifts(far, 40, sink_blocks=2, shares=shares)
    assert slots.tolist() == [[35, 36, 39, 38, 37], [35, 36, 39, 37, 38]]
    assert packed_shifts(far, 40, 2, shares)[0, 3] == -1  # block 39, second best: one slot back


def test_the_selection_memory_keeps_a_decaying_score_for_the_blocks_found_before() -> None:
    """A decode step selects by the larger of a block's share now and the decayed score remembered;
    blocks not scored decay; a prefill chunk starts the memory afresh; the table grows with the context."""
    from engine.sparse_memory import SelectionMemory

    def close(got, expected):
        torch.testing.assert_close(got, torch.tensor(expected))

    memory = SelectionMemory(0.5)
    memory.start(3, torch.tensor([[1, 2, 3]]), torch.tensor([[0.8, 0.1, 0.1]]))
    close(memory.recall(3, torch.tensor([[1, 2, 3]]), torch.tensor([[0.1, 0.7, 0.2]])), [[0.4, 0.7, 0.2]])
    close(memory.recall(3, torch.tensor([[2, 4]]), torch.tensor([[0.0, 0.5]])), [[0.35, 0.5]])
    close(memory.scores[3], [[0.0, 0.2, 0.35, 0.1, 0.5]])  # blocks 1 and 3 decayed, unscored
    memory.start(3, torch.tensor([[1]]), torch.tensor([[0.3]]))
    close(memory.scores[3], [[0.0, 0.3]])
    assert 7 not in memory.scores


def test_past_the_trained_window_the_memory_keeps_the_block_the_prompt_found() -> None:
    """Step one's query points at one far block; step two's points nowhere in particular. Selecting
    one block, step two keeps the first one's block with the memory (capturing less of its own mass
    than the oracle would) and picks its own best block without it (the oracle's choice)."""
    from engine.sparse_memory import SelectionMemory

    dim, bs, length = 32, 16, 512
    rope = _one_head_rope(dim, length)
    config = SparseConfig(block_size=bs, sink_tokens=16, window_tokens=64, recent_tokens=16, budget_tokens=16,
                          min_budget_tokens=16, candidates=1, target_mass=None, remap_beyond=128, probe=True)
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(2, 1, dim, generator=g)
    scored = torch.randn(1, length, dim, generator=g) * 0.5  # the keys as the scorer sees them (distance 64)
    needle = 9
    scored[0, needle * bs + 5] = 8 * first[0] / first[0].norm()
    window_first = (length - config.window_tokens) // bs
    keys = _cached_keys(scored, window_first * bs, config, rope)
    values = torch.randn(1, length, dim, generator=g)

    def steps(memory):
        recall = (lambda blocks, shares: memory.recall(0, blocks, shares)) if memory else None
        sparse_decode(first, keys, values, 1.0, config, rope=rope, recall=recall)
        return sparse_decode(second, keys, values, 1.0, config, rope=rope, recall=recall)[1].probe

    fresh, kept = steps(None), steps(SelectionMemory(0.9))
    assert fresh["captured"] == pytest.approx(fresh["oracle"])  # step two's own best block
    assert kept["captured"] < fresh["captured"] - 0.01  # the needle's block, which step two cares less for
