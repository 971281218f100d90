"""Paged KV storage: one pool of fixed-size blocks per layer, head-major.

Values: [num_kv_heads, num_slots, head_dim] per layer, a row per token. Keys are stored transposed
within each block, [num_kv_heads, num_blocks, head_dim, block_size], a row per head dimension: a
decode step's scores are then weighted sums of key rows and its output a weighted sum of value
rows, which `torch.embedding_bag` computes straight through the block table (see attention.py).
A run of consecutive blocks is still a plain view for prefill's values; its keys are one copy.
"""

import torch

from engine.config import ModelConfig
from engine.sparse_paged import SparsePools

BLOCK_SIZE = 64


class KVCache:
    def __init__(self, config: ModelConfig, num_blocks: int, dtype: torch.dtype, block_size: int = BLOCK_SIZE) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        num_layers, num_kv_heads, head_dim = config.num_layers, config.num_kv_heads, config.head_dim
        # Pages are touched only when blocks are used.
        self.k = torch.empty(num_layers, num_kv_heads, num_blocks, head_dim, block_size, dtype=dtype)
        self.v = torch.empty(num_layers, num_kv_heads, num_blocks * block_size, head_dim, dtype=dtype)
        self.sparse_pools: list[SparsePools | None] | None = None  # per layer, for sparse decode

    def enable_sparse(self, layers: set[int], unrotated: bool = False) -> None:
        """Keeps block bounds and FP8 copies for `layers` (the ones that decode sparsely); `unrotated`:
        also of the keys before RoPE (for contexts past the trained positions, which remap them)."""
        _, num_kv_heads, num_blocks, head_dim, block_size = self.k.shape
        self.sparse_pools = [SparsePools(num_kv_heads, num_blocks, head_dim, block_size, unrotated) if i in layers
                             else None for i in range(self.k.shape[0])]

    @staticmethod
    def bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
        return 2 * config.num_layers * config.num_kv_heads * config.head_dim * dtype.itemsize

    @classmethod
    def num_blocks_for(cls, config: ModelConfig, dtype: torch.dtype, budget_bytes: int, min_tokens: int) -> int:
        """As many blocks as the budget holds, but never fewer than one full context needs."""
        per_block = cls.bytes_per_token(config, dtype) * BLOCK_SIZE
        return max(budget_bytes // per_block, -(-min_tokens // BLOCK_SIZE) + 1)
