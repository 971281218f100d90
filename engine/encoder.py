"""BERT / XLM-R text encoder (post-LN, GELU, learned absolute positions) with mean pooling.

Imports nothing of the engine. Matmuls and attention run in the chosen dtype (bf16 by default);
the residual stream, the layer norms and the pooling stay fp32, and SDPA keeps its softmax in fp32.
Weights load under Hugging Face's XLM-R names; the word-embedding module is passed in, so a
checkpoint can keep its table quantised.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

XLMR_POSITION_OFFSET = 2  # XLM-R numbers positions from padding_idx + 1 = 2


@dataclass
class EncoderConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int  # tokens per text, specials included (the table holds 2 more rows)
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        assert self.hidden_size % self.num_heads == 0, "heads must split the hidden size"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig, dtype: torch.dtype) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.qkv = nn.Linear(h, 3 * h, dtype=dtype)  # query, key, value fused: one matmul
        self.attn_out = nn.Linear(h, h, dtype=dtype)
        self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(h, config.intermediate_size, dtype=dtype)
        self.ffn_out = nn.Linear(config.intermediate_size, h, dtype=dtype)
        self.ffn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x: the fp32 residual stream [B, S, H]; attn_mask: [B, 1, 1, S], True where a key is real."""
        batch, seq, hidden = x.shape
        dtype = self.qkv.weight.dtype
        qkv = self.qkv(x.to(dtype)).view(batch, seq, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, NH, S, D]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, NH, S, D]
        out = out.transpose(1, 2).reshape(batch, seq, hidden)
        x = self.attn_norm(x + self.attn_out(out))  # fp32 + dtype: promoted inside the add, no extra copy
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x.to(dtype)))))


class Encoder(nn.Module):
    """Build with `from_hf_tensors`; `forward` maps padded token ids to L2-normalised mean-pooled vectors."""

    def __init__(self, config: EncoderConfig, word_embeddings: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = word_embeddings  # ids [B, S] -> fp32 [B, S, H]
        num_rows = config.max_positions + XLMR_POSITION_OFFSET
        self.position_embeddings = nn.Parameter(torch.empty(num_rows, config.hidden_size))
        self.token_type_embedding = nn.Parameter(torch.empty(config.hidden_size))  # every token is type 0
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config, dtype) for _ in range(config.num_layers))

    @classmethod
    def from_hf_tensors(
        cls, config: EncoderConfig, tensors: dict[str, torch.Tensor], word_embeddings: nn.Module,
        dtype: torch.dtype = torch.bfloat16,
    ) -> "Encoder":
        """Hugging Face XLM-R names (without the word table), fp32. Consumes `tensors` to bound peak memory."""
        take = tensors.pop
        with torch.device("meta"):
            encoder = cls(config, word_embeddings, dtype)
        state = {
            "position_embeddings": take("embeddings.position_embeddings.weight"),
            "token_type_embedding": take("embeddings.token_type_embeddings.weight")[0],
            "embed_norm.weight": take("embeddings.LayerNorm.weight"),
            "embed_norm.bias": take("embeddings.LayerNorm.bias"),
        }
        for i in range(config.num_layers):
            hf, ours = f"encoder.layer.{i}.", f"layers.{i}."
            for part in ("weight", "bias"):
                qkv = [take(f"{hf}attention.self.{n}.{part}") for n in ("query", "key", "value")]
                state[f"{ours}qkv.{part}"] = torch.cat(qkv).to(dtype)  # one matmul for the three
                state[f"{ours}attn_out.{part}"] = take(f"{hf}attention.output.dense.{part}").to(dtype)
                state[f"{ours}attn_norm.{part}"] = take(f"{hf}attention.output.LayerNorm.{part}")
                state[f"{ours}ffn_in.{part}"] = take(f"{hf}intermediate.dense.{part}").to(dtype)
                state[f"{ours}ffn_out.{part}"] = take(f"{hf}output.dense.{part}").to(dtype)
                state[f"{ours}ffn_norm.{part}"] = take(f"{hf}output.LayerNorm.{part}")
        encoder.load_state_dict(state, strict=True, assign=True)
        return encoder.eval().requires_grad_(False)

    def hidden_states(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """input_ids, mask: [B, S], real tokens first in each row. Returns fp32 [B, S, H]."""
        seq = input_ids.shape[1]
        assert seq <= self.config.max_positions, f"{seq} tokens, the model takes {self.config.max_positions}"
        positions = self.position_embeddings[XLMR_POSITION_OFFSET : XLMR_POSITION_OFFSET + seq]  # [S, H]
        x = self.word_embeddings(input_ids) + positions + self.token_type_embedding
        x = self.embed_norm(x)  # [B, S, H] fp32
        attn_mask = None if bool(mask.all()) else mask[:, None, None, :]  # [B, 1, 1, S]
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the real tokens, L2-normalised: fp32 [B, H]."""
        weights = mask.unsqueeze(-1).float()  # [B, S, 1]
        pooled = (self.hidden_states(input_ids, mask) * weights).sum(1) / weights.sum(1)
        return F.normalize(pooled, dim=-1)
