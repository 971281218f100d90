"""Paged KV storage: one pool of fixed-size blocks per layer, head-major.

Values: [num_kv_heads, num_slots, head_dim] per layer, a row per token. Keys are stored transposed
within each block, [num_kv_heads, num_blocks, head_dim, block_size], a row per head dimension: a
decode step's scores are then weighted sums of key rows and its output a weighted sum of value
rows, which `torch.embedding_bag` computes straight through the block table (see attention.py).
A run of consecutive blocks is still a plain view for prefill's values; its keys are one copy.

Both pools sit on page arenas: a pool's pages are resident once written, and a block of one layer's
head (its keys, or its values: head_dim × block_size elements each, contiguous) can be handed back
to the OS (`release`), which the device tier does to blocks it keeps on disk (engine/kv_tiers.py).
"""

import mmap

import torch

from engine.config import ModelConfig
from engine.memory import PageArena
from engine.sparse_paged import SparsePools

BLOCK_SIZE = 64


class KVCache:
    def __init__(self, config: ModelConfig, num_blocks: int, dtype: torch.dtype, block_size: int = BLOCK_SIZE) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        num_layers, num_kv_heads, head_dim = config.num_layers, config.num_kv_heads, config.head_dim
        # Pages are touched only when blocks are used.
        self._k_pages = PageArena((num_layers, num_kv_heads, num_blocks, head_dim, block_size), dtype)
        self._v_pages = PageArena((num_layers, num_kv_heads, num_blocks * block_size, head_dim), dtype)
        self.k, self.v = self._k_pages.tensor, self._v_pages.tensor
        self.sparse_pools: list[SparsePools | None] | None = None  # per layer, for sparse decode
        self.unit_bytes = head_dim * block_size * dtype.itemsize  # one block of one head's keys (or values)
        self.fp8_unit_bytes = head_dim * block_size  # the same in the sparse pools' FP8 codes (engine/kv_host.py)

    @property
    def releasable(self) -> bool:
        """Whether a block of one head's keys or values is whole pages (head_dim 64 in bf16 is two)."""
        return self.unit_bytes % mmap.PAGESIZE == 0

    def release(self, layer: int, heads: list[int], blocks: list[int]) -> None:
        """Hands the keys and values of (head, block) pairs of `layer` back to the OS: they read as
        zeros until written again (where blocks are not whole pages, they stay). Same byte offset in both
        pools: [L, Hkv, blocks] units."""
        if not self.releasable:
            return
        _, num_kv_heads, num_blocks = self.k.shape[:3]
        for head, block in zip(heads, blocks):
            start = ((layer * num_kv_heads + head) * num_blocks + block) * self.unit_bytes
            self._k_pages.release(start, self.unit_bytes)
            self._v_pages.release(start, self.unit_bytes)

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
