"""Decoder-only transformer for the llama and qwen2 families (RMSNorm, RoPE, GQA, SwiGLU).

Imports nothing of the engine but its config, RoPE and attention. The KV cache and the block table
(AttentionMetadata) are inputs to `forward`: which blocks a step reads is decided outside the model.
"""

import functools
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from engine.attention import (
    AttentionMetadata,
    BatchMetadata,
    gather_keys,
    gather_values,
    paged_attention,
    write_kv,
)
from engine.config import ModelConfig
from engine.kv_cache import KVCache
from engine.kv_tiers import DeviceTier
from engine.rope import RotaryEmbedding, apply_rotary
from engine.sparse_attention import SparseConfig, SparseCounter, sparse_decode
from engine.sparse_paged import SparsePools, sparse_paged_decode
from engine.sparse_prefill import sparse_prefill


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """x, weight fp32; eps a 0-d tensor. F.rms_norm runs ~8 ops on CPU, this 6 (61 norms per token)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # [T, 1]
    inv_rms = torch.addcmul(eps, norm, norm, value=1 / x.shape[-1]).rsqrt_()
    return torch.mul(x, inv_rms).mul_(weight).to(out_dtype)


class RMSNorm(nn.Module):
    """Normalises the fp32 residual stream (fp32 weight too); returns `out_dtype` for the next matmul."""

    def __init__(self, dim: int, eps: float, out_dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = torch.tensor(eps, device="cpu")  # not a buffer: models are built on "meta"
        self.out_dtype = out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, self.out_dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=False)
        self.scale = self.head_dim**-0.5


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)


class DecoderLayer(nn.Module):
    """Holds one layer's weights; `LayerStep` runs it."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_eps, dtype)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_eps, dtype)
        self.mlp = MLP(config)


def as_function(linear: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """An nn.Linear, or a module a transform put in its place (quantize.py), as a plain function."""
    if isinstance(linear, nn.Linear):
        return functools.partial(F.linear, weight=linear.weight, bias=linear.bias)
    return linear.as_function()


class LayerStep:
    """A decoder layer's forward, with its tensors and projections held as plain attributes.

    nn.Module calls and attribute lookups cost ~1.4 ms per token over 30 layers (measured), some 8%
    of a decode step; the modules stay the store of weights and names.
    """

    def __init__(self, layer: DecoderLayer, sparse: SparseConfig | None = None,
                 counter: SparseCounter | None = None, index: int = -1, rope: RotaryEmbedding | None = None,
                 dense: bool = False) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.sparse, self.counter, self.index = sparse, counter, index  # sparse decode for this layer, when set
        self.probing = replace(sparse, probe=True) if sparse is not None else None
        self.rope = rope  # remaps far keys' positions in sparse decode
        self.dense = dense  # a layer whose attention is diffuse: sparse only where positions are remapped
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        self.input_norm, self.post_norm = ((norm.weight, norm.eps, norm.out_dtype) for norm in norms)
        self.qkv, self.o = as_function(attn.qkv_proj), as_function(attn.o_proj)
        self.gate_up, self.down = as_function(mlp.gate_up_proj), as_function(mlp.down_proj)
        self.num_heads, self.num_kv_heads, self.head_dim = attn.num_heads, attn.num_kv_heads, attn.head_dim
        self.scale, self.intermediate_size = attn.scale, mlp.intermediate_size

    def __call__(self, x, cos, sin, k_cache, v_cache, meta: AttentionMetadata, pools: SparsePools | None = None,
                 tier: DeviceTier | None = None) -> torch.Tensor:
        """x: the fp32 residual stream [T, d], updated in place and returned. With a `tier`, every block
        read in the cache dtype is fetched first (it may be on disk only)."""
        num_tokens, num_qk = x.shape[0], self.num_heads + self.num_kv_heads
        qkv = self.qkv(rms_norm(x, *self.input_norm)).view(num_tokens, -1, self.head_dim)  # [T, H + 2 Hkv, D]
        qk = apply_rotary(qkv[:, :num_qk], cos, sin).to(k_cache.dtype)
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)  # [T, H, D], [T, Hkv, D]
        v = qkv[:, num_qk:]  # [T, Hkv, D]
        fetch = functools.partial(tier.fetch, self.index) if tier is not None else None
        prefetch = functools.partial(tier.prefetch, self.index) if tier is not None else None
        if tier is not None:
            tier.prepare_write(self.index, meta.slot_blocks)
        write_kv(k_cache, v_cache, k, v, meta)
        if pools is not None:
            pools.write(k, v, meta, cos, sin)
        if self.sparse is not None and (num_tokens == 1 or isinstance(meta, BatchMetadata)):
            out = self._sparse_decode(q, qkv[:, : self.num_heads], k_cache, v_cache, meta, pools, fetch, prefetch)
        elif self.sparse is not None and pools is not None and self.sparse.remaps(meta.context_len):
            memory = meta.sparse_budget.memory if meta.sparse_budget is not None else None
            remember = functools.partial(memory.start, self.index) if memory is not None else None
            out = sparse_prefill(q, qkv[:, : self.num_heads], k, v, k_cache, v_cache, pools, meta, self.scale,
                                 self.sparse, self.rope, fetch, remember)
        else:
            _fetch_context(fetch, meta)
            out = paged_attention(q, k, v, k_cache, v_cache, meta, self.scale)  # [T, H, D]
        x.add_(self.o(out.reshape(num_tokens, -1)))
        gate, up = self.gate_up(rms_norm(x, *self.post_norm)).split(self.intermediate_size, -1)
        return x.add_(self.down(F.silu(gate) * up))


    def _sparse_decode(self, q, q_unrotated, k_cache, v_cache, meta, pools: SparsePools | None,
                       fetch=None, prefetch=None) -> torch.Tensor:
        """One token per sequence. With the layer's pools, reads only what it selects (dense when
        the context is short); without them, the reference reads the whole cache. A probe step (the
        feedback loop's, or every step when the config probes) also measures the exact masses."""
        metas = meta.metas if isinstance(meta, BatchMetadata) else [meta]
        outs = []
        for i, m in enumerate(metas):
            if self.dense and not self.sparse.remaps(m.context_len):
                _fetch_context(fetch, m)
                outs.append(paged_attention(q[i : i + 1], None, None, k_cache, v_cache, m, self.scale)[0])
                continue
            feedback = m.sparse_budget
            budget = feedback.budget(self.index, m.context_len) if feedback is not None else None
            probing = self.sparse.probe or (feedback is not None and feedback.probes_now(self.index, m.context_len))
            memory = feedback.memory if feedback is not None else None
            recall = functools.partial(memory.recall, self.index) if memory is not None else None
            if pools is not None:
                done = sparse_paged_decode(q[i], k_cache, v_cache, pools, m, self.scale, self.sparse, budget, probing,
                                           q_unrotated[i], self.rope, fetch, prefetch, recall)
                if done is None:
                    _fetch_context(fetch, m)
                    outs.append(paged_attention(q[i : i + 1], None, None, k_cache, v_cache, m, self.scale)[0])
                    self.counter.dense_steps += 1
                    continue
                out, stats = done
            else:
                _fetch_context(fetch, m)
                keys = gather_keys(k_cache, m, m.context_len)
                values = gather_values(v_cache, m, m.context_len)
                out, stats = sparse_decode(q[i], keys, values, self.scale, self.probing if probing else self.sparse,
                                           budget, self.rope, recall)
            self.counter.add(stats, self.index)
            if feedback is not None:
                feedback.observe(self.index, stats, m.context_len)
            outs.append(out)
        return torch.stack(outs)


def _fetch_context(fetch, meta: AttentionMetadata | BatchMetadata) -> None:
    """Dense attention reads every block of the context (of each sequence)."""
    if fetch is not None:
        for m in meta.metas if isinstance(meta, BatchMetadata) else [meta]:
            fetch(m.block_table[: -(-m.context_len // m.block_size)])


class Transformer(nn.Module):
    """Build it, then `.to(dtype)` and `keep_norms_fp32()`: matmuls run in `dtype`, the residual in fp32."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, dtype) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_eps, dtype)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(config, config.max_position)
        self._steps: list[LayerStep] | None = None  # bound by the first forward: transform the model before
        self.sparse: SparseConfig | None = None  # sparse decode attention; set before the first forward
        self.sparse_counter = SparseCounter()

    @torch.inference_mode()
    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, kv: KVCache, meta: AttentionMetadata,
        logits_for: torch.Tensor | None = None, tier: DeviceTier | None = None,
    ) -> torch.Tensor:
        """input_ids, positions: [T]. Returns fp32 logits [N, V] for the rows in `logits_for` (default: last);
        `tier`: the device tier that bounds what of `kv` is resident (engine/kv_tiers.py)."""
        x = self.embed_tokens(input_ids).float()  # [T, d]: the residual stream stays fp32
        cos, sin = self.rotary(positions)
        if self._steps is None:
            sparse = self.sparse
            self._steps = [LayerStep(layer, sparse, self.sparse_counter, i, self.rotary,
                                     dense=sparse is not None and i in sparse.dense_layers)
                           for i, layer in enumerate(self.layers)]
        pools = kv.sparse_pools or [None] * len(self._steps)
        for step, k_cache, v_cache, layer_pools in zip(self._steps, kv.k, kv.v, pools):
            x = step(x, cos, sin, k_cache, v_cache, meta, layer_pools, tier)
        x = x[-1:] if logits_for is None else x[logits_for]
        return self.lm_head(self.norm(x)).float()

    def set_sparse(self, config: SparseConfig | None) -> None:
        """Sparse decode attention from the next forward on (the layers bind it at a forward)."""
        self.sparse, self._steps = config, None

    def keep_norms_fp32(self) -> "Transformer":
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.float()
        return self

    def load_hf_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Loads HF-named tensors, fusing q/k/v and gate/up. Consumes `tensors` to bound peak memory."""
        def take(name: str) -> torch.Tensor:
            return tensors.pop(name)

        with torch.no_grad():
            self.embed_tokens.weight.copy_(take("model.embed_tokens.weight"))
            self.norm.weight.copy_(take("model.norm.weight"))
            if not self.config.tie_embeddings:
                self.lm_head.weight.copy_(take("lm_head.weight"))
            for i, layer in enumerate(self.layers):
                p = f"model.layers.{i}."
                attn = layer.self_attn
                qkv = [take(p + f"self_attn.{n}_proj.weight") for n in "qkv"]
                attn.qkv_proj.weight.copy_(torch.cat(qkv))
                if attn.qkv_proj.bias is not None:
                    attn.qkv_proj.bias.copy_(torch.cat([take(p + f"self_attn.{n}_proj.bias") for n in "qkv"]))
                attn.o_proj.weight.copy_(take(p + "self_attn.o_proj.weight"))
                gate_up = [take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")]
                layer.mlp.gate_up_proj.weight.copy_(torch.cat(gate_up))
                layer.mlp.down_proj.weight.copy_(take(p + "mlp.down_proj.weight"))
                layer.input_layernorm.weight.copy_(take(p + "input_layernorm.weight"))
                layer.post_attention_layernorm.weight.copy_(take(p + "post_attention_layernorm.weight"))


def required_tensor_names(config: ModelConfig) -> list[str]:
    """The HF tensor names a checkpoint must provide."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not config.tie_embeddings:
        names.append("lm_head.weight")
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{n}_proj.weight" for n in "qkvo"]
        if config.attention_bias:
            names += [p + f"self_attn.{n}_proj.bias" for n in "qkv"]
        names += [p + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    return names
