"""Paged attention over the KV cache, driven by a block table chosen outside the model.

Plain PyTorch. Prefill splits each chunk into its cached past (no mask) and the chunk itself
(causal) and merges the two by log-sum-exp. Decode reads the pool through the block table with
`torch.embedding_bag` (weighted sums of cache rows, see kv_cache.py): no gather, no copy.
"""

from dataclasses import dataclass, field

import torch

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


@dataclass
class AttentionMetadata:
    """Which cache slots this step reads and writes; built once per forward, shared by all layers."""

    block_table: torch.Tensor  # [num_blocks] int64: the sequence's blocks, in order
    slot_mapping: torch.Tensor  # [T] int64: where each new token's K/V goes
    context_len: int  # tokens visible after this step, new ones included
    block_size: int
    first_block: int | None  # set when block_table is one consecutive run: the KV is a view
    sparse_budget: object = None  # the sequence's SparseBudget (sparse decoding's feedback loop), if any
    slot_blocks: torch.Tensor = field(init=False)  # [T] int64: slot_mapping // block_size
    slot_offsets: torch.Tensor = field(init=False)  # [T] int64: slot_mapping % block_size
    _bags: dict = field(default_factory=dict, repr=False)  # decode row indices, built by the first layer

    def __post_init__(self) -> None:
        self.slot_blocks = self.slot_mapping // self.block_size
        self.slot_offsets = self.slot_mapping % self.block_size

    @property
    def num_new(self) -> int:
        return self.slot_mapping.numel()

    @classmethod
    def for_step(cls, block_ids: list[int], start: int, num_new: int, block_size: int,
                 sparse_budget: object = None) -> "AttentionMetadata":
        positions = torch.arange(start, start + num_new)
        table = torch.tensor(block_ids, dtype=torch.long)
        slots = table[positions // block_size] * block_size + positions % block_size
        contiguous = block_ids[-1] - block_ids[0] == len(block_ids) - 1 and all(
            b - a == 1 for a, b in zip(block_ids, block_ids[1:])
        )
        return cls(table, slots, start + num_new, block_size, block_ids[0] if contiguous else None, sparse_budget)

    def decode_bags(self, num_kv_heads: int, group: int, head_dim: int, num_pool_blocks: int) -> tuple:
        """Rows and bag offsets of `torch.embedding_bag` into one layer's flattened pools (any layer).

        Keys: one bag per (query head, block) over the head_dim rows of that block's keys.
        Values: one bag per query head over the value rows of all its blocks; slots past the context
        point at the first token's row (finite, weighted 0), so no copy trims the probabilities.
        """
        key = (num_kv_heads, group, head_dim, num_pool_blocks)
        if key not in self._bags:
            heads = torch.arange(num_kv_heads)[:, None, None, None]
            key_rows = (heads * num_pool_blocks + self.block_table[:, None]) * head_dim + torch.arange(head_dim)
            key_rows = key_rows.expand(-1, group, -1, -1).flatten()  # [Hkv * G * blocks * D]
            slots = (self.block_table[:, None] * self.block_size + torch.arange(self.block_size)).flatten()
            slots[self.context_len :] = slots[0]
            value_rows = heads[:, :, :, 0] * num_pool_blocks * self.block_size + slots
            value_rows = value_rows.expand(-1, group, -1).flatten()  # [Hkv * G * blocks * block_size]
            self._bags[key] = (
                key_rows, torch.arange(0, key_rows.numel(), head_dim),
                value_rows, torch.arange(0, value_rows.numel(), slots.numel()),
            )
        return self._bags[key]


@dataclass
class BatchMetadata:
    """One decode step of several sequences at once (continuous batching): token i belongs to
    `metas[i]`. The projections run as one matmul over all tokens; attention runs per sequence."""

    metas: list[AttentionMetadata]
    slot_mapping: torch.Tensor = field(init=False)
    slot_blocks: torch.Tensor = field(init=False)
    slot_offsets: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        assert all(m.num_new == 1 for m in self.metas), "a batch holds one new token per sequence"
        self.slot_mapping = torch.cat([m.slot_mapping for m in self.metas])
        self.slot_blocks = torch.cat([m.slot_blocks for m in self.metas])
        self.slot_offsets = torch.cat([m.slot_offsets for m in self.metas])


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             meta: AttentionMetadata | BatchMetadata) -> None:
    """k, v: [T, Hkv, D] in the cache dtype into k_cache [Hkv, blocks, D, block_size] and v_cache [Hkv, S, D]."""
    k_slots = k_cache.permute(1, 3, 0, 2)  # [blocks, block_size, Hkv, D]
    k_slots.index_put_((meta.slot_blocks, meta.slot_offsets), k)
    v_cache.index_copy_(1, meta.slot_mapping, v.transpose(0, 1))


def gather_keys(k_cache: torch.Tensor, meta: AttentionMetadata, end: int) -> torch.Tensor:
    """The first `end` keys of the sequence, untransposed: [Hkv, end, D] (a copy)."""
    num_blocks = -(-end // meta.block_size)
    if meta.first_block is not None:
        blocks = k_cache[:, meta.first_block : meta.first_block + num_blocks]
    else:
        blocks = k_cache.index_select(1, meta.block_table[:num_blocks])
    num_kv_heads, _, head_dim, block_size = k_cache.shape
    return blocks.transpose(2, 3).reshape(num_kv_heads, num_blocks * block_size, head_dim)[:, :end]


def gather_values(v_cache: torch.Tensor, meta: AttentionMetadata, end: int) -> torch.Tensor:
    """The first `end` values of the sequence: [Hkv, end, D] (a view when the blocks are one run)."""
    if meta.first_block is not None:
        start = meta.first_block * meta.block_size
        return v_cache[:, start : start + end]
    slots = (meta.block_table[:, None] * meta.block_size + torch.arange(meta.block_size)).flatten()
    return v_cache.index_select(1, slots[:end])


def paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    meta: AttentionMetadata | BatchMetadata, scale: float,
) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, Hkv, D] of the new tokens, already written to the cache; all in the
    cache dtype. Returns [T, H, D]."""
    if isinstance(meta, BatchMetadata):
        return torch.cat([_decode(q[i : i + 1], k_cache, v_cache, m, scale) for i, m in enumerate(meta.metas)])
    if q.shape[0] == 1:
        return _decode(q, k_cache, v_cache, meta, scale)
    queries = q.transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
    out, lse = causal_attention(queries, k, v, scale)
    past = meta.context_len - q.shape[0]
    if past:
        keys, values = gather_keys(k_cache, meta, past), gather_values(v_cache, meta, past)
        out, lse = merge_partials(out, lse, *grouped_attention(queries, keys, values, scale))
    return out[0].transpose(0, 1)


def causal_attention(queries: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """A chunk attending itself causally: queries [1, H, T, D], k, v [T, Hkv, D] -> out [1, H, T, D], lse [1, H, T]."""
    group = queries.shape[1] // k.shape[1]
    k_new, v_new = (x.transpose(0, 1).repeat_interleave(group, 0).unsqueeze(0) for x in (k, v))  # [1, H, T, D]
    return _flash(queries, k_new, v_new, is_causal=True, scale=scale)


def grouped_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float):
    """Queries [1, H, T, D] against keys, values [Hkv, N, D] all before them (no mask): out [1, H, T, D],
    lse [1, H, T]. One query row per (head in group, token): the whole group shares one K/V head."""
    _, num_heads, num_new, head_dim = queries.shape
    num_kv_heads = keys.shape[0]
    rows = queries.reshape(1, num_kv_heads, num_heads // num_kv_heads * num_new, head_dim)
    out, lse = _flash(rows, keys[None].to(queries.dtype), values[None].to(queries.dtype), scale=scale)
    return out.reshape(1, num_heads, num_new, head_dim), lse.reshape(1, num_heads, num_new)


def merge_partials(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the union of two key sets, from each set's output and log-sum-exp."""
    lse = torch.logaddexp(lse_a, lse_b)
    weight_a = torch.exp(lse_a - lse).unsqueeze(-1)
    weight_b = torch.exp(lse_b - lse).unsqueeze(-1)
    out = out_a.float() * weight_a + out_b.float() * weight_b
    return out.to(out_a.dtype), lse


def _decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    # Two bmm calls here cost 5 ms per token at 2k context against 2.7 for embedding_bag: with 3
    # query rows per KV head oneDNN leaves most of each vector idle, and bmm copies the pool view.
    num_kv_heads, num_pool_blocks, head_dim, block_size = k_cache.shape
    num_heads = q.shape[1]
    group = num_heads // num_kv_heads
    num_blocks = meta.block_table.numel()
    key_rows, key_bags, value_rows, value_bags = meta.decode_bags(num_kv_heads, group, head_dim, num_pool_blocks)
    # Bag (head, block) weighs the block's key rows by the head's query; mul materialises the expand.
    q = q.view(num_kv_heads, group, 1, head_dim).expand(-1, -1, num_blocks, -1)
    q = torch.mul(q, scale)  # [Hkv, G, blocks, D]
    scores = _weighted_row_sums(k_cache.view(-1, block_size), key_rows, key_bags, q.view(-1))
    scores = scores.view(num_heads, num_blocks * block_size)  # [H, blocks * block_size]
    if meta.context_len < scores.shape[1]:
        scores[:, meta.context_len :].fill_(float("-inf"))  # unwritten slots of the last block
    probs = torch.softmax(scores, -1).view(-1)  # bf16 softmax computes in fp32 inside
    out = _weighted_row_sums(v_cache.view(-1, head_dim), value_rows, value_bags, probs)
    return out.view(1, num_heads, head_dim)


def _weighted_row_sums(table: torch.Tensor, rows: torch.Tensor, bags: torch.Tensor, weights: torch.Tensor):
    """out[b] = sum of weights[i] * table[rows[i]] over bag b's i: [num_bags, row length], table's dtype."""
    return torch.embedding_bag(table, rows, bags, False, 0, False, weights)[0]  # mode 0: sum
