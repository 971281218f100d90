"""Paged KV storage: one pool of fixed-size blocks per layer, head-major.

Layout [num_kv_heads, num_slots, head_dim] per layer: a run of consecutive blocks is a plain view
([H, T, D], each head a contiguous matrix), which the attention matmuls read without a copy.
"""

import torch

from engine.config import ModelConfig

BLOCK_SIZE = 64


class KVCache:
    def __init__(self, config: ModelConfig, num_blocks: int, dtype: torch.dtype, block_size: int = BLOCK_SIZE) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        shape = (config.num_layers, config.num_kv_heads, num_blocks * block_size, config.head_dim)
        self.k = torch.empty(shape, dtype=dtype)  # pages are touched only when blocks are used
        self.v = torch.empty(shape, dtype=dtype)

    @staticmethod
    def bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
        return 2 * config.num_layers * config.num_kv_heads * config.head_dim * dtype.itemsize

    @classmethod
    def num_blocks_for(cls, config: ModelConfig, dtype: torch.dtype, budget_bytes: int, min_tokens: int) -> int:
        """As many blocks as the budget holds, but never fewer than one full context needs."""
        per_block = cls.bytes_per_token(config, dtype) * BLOCK_SIZE
        return max(budget_bytes // per_block, -(-min_tokens // BLOCK_SIZE) + 1)
