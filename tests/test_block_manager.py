"""KV block bookkeeping: prefix sharing, reference counts, LRU eviction. Pure Python."""

import pytest

from engine.block_manager import BlockManager, KVCacheFullError, block_hash
from engine.sequence import Sequence

BS = 4


def run(blocks: BlockManager, tokens: list[int]) -> Sequence:
    """What the engine does for a prompt: reuse, reserve, compute (pretend), seal."""
    seq = Sequence(list(tokens))
    seq.reuse_prefix(blocks)
    seq.reserve(blocks, len(seq))
    seq.num_computed = len(seq)
    seq.seal_full_blocks(blocks)
    return seq


def test_hash_chain_depends_on_the_whole_prefix():
    assert block_hash(b"", [1, 2]) == block_hash(b"", [1, 2])
    assert block_hash(b"", [1, 2]) != block_hash(block_hash(b"", [0, 0]), [1, 2])


def test_shared_prefix_reuses_blocks_and_keeps_one_token_to_compute():
    blocks = BlockManager(num_blocks=16, block_size=BS)
    first = run(blocks, list(range(10)))  # 2 full blocks + 2 tokens
    first_ids = list(first.block_ids)
    first.free(blocks)
    second = Sequence(list(range(10)) + [99, 98])
    assert second.reuse_prefix(blocks) == 8
    assert second.block_ids == first_ids[:2]
    exact = Sequence(list(range(8)))  # the whole prompt cached: the last block is recomputed
    assert exact.reuse_prefix(blocks) == 4


def test_a_prefix_reused_on_a_grid_ends_on_a_grid_line_and_gives_the_rest_back():
    """Where a prompt prefills sparsely, its chunks keep one grid: blocks cached past the last grid
    line were computed in a shorter chunk, so they are recomputed (and their references dropped)."""
    blocks = BlockManager(num_blocks=16, block_size=BS)
    run(blocks, list(range(14))).free(blocks)  # 3 full blocks cached
    held = Sequence(list(range(14)) + [99])
    assert held.reuse_prefix(blocks, grid=2 * BS) == 2 * BS
    assert len(held.block_ids) == 2 and held.num_sealed == 2
    assert Sequence(list(range(14)) + [99]).reuse_prefix(blocks) == 3 * BS  # the third stays cached for others
    assert Sequence(list(range(14)) + [99]).reuse_prefix(blocks, grid=4 * BS) == 0


def test_different_prefix_shares_nothing():
    blocks = BlockManager(num_blocks=16, block_size=BS)
    run(blocks, list(range(12))).free(blocks)
    assert Sequence([7] + list(range(1, 12))).reuse_prefix(blocks) == 0


def test_live_blocks_are_never_evicted_and_full_cache_raises():
    blocks = BlockManager(num_blocks=4, block_size=BS)
    live = run(blocks, list(range(16)))
    assert blocks.num_free == 0
    with pytest.raises(KVCacheFullError):
        run(blocks, [50, 51, 52, 53])
    live.free(blocks)
    assert blocks.num_free == 4


def test_least_recently_used_cached_blocks_go_first():
    blocks = BlockManager(num_blocks=4, block_size=BS)
    old = run(blocks, [1, 1, 1, 1, 2])
    old.free(blocks)
    recent = run(blocks, [3, 3, 3, 3, 4])
    recent.free(blocks)
    run(blocks, [5, 5, 5, 5, 6, 6, 6, 6, 7]).free(blocks)  # 3 blocks: the 2 free ones and the LRU cached one
    assert Sequence([3, 3, 3, 3, 9]).reuse_prefix(blocks) == 4
    assert Sequence([1, 1, 1, 1, 9]).reuse_prefix(blocks) == 0


def test_shared_block_survives_until_its_last_user_frees_it():
    blocks = BlockManager(num_blocks=8, block_size=BS)
    a = run(blocks, [1, 2, 3, 4, 5])
    b = Sequence([1, 2, 3, 4, 6])
    assert b.reuse_prefix(blocks) == 4
    assert blocks.ref_counts[a.block_ids[0]] == 2
    shared = a.block_ids[0]
    a.free(blocks)
    assert blocks.ref_counts[shared] == 1 and shared not in blocks.evictable
    b.free(blocks)
    assert blocks.ref_counts[shared] == 0 and shared in blocks.evictable
