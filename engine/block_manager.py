"""KV block bookkeeping: free list, reference counts and prefix hashes. Plain Python, no torch.

Each full block of a sequence is named by a hash chain over its tokens (the hash of the previous
block and this block's token ids), as vLLM and SGLang do: two requests sharing a token prefix share
the blocks of that prefix. Blocks nobody references stay cached, evicted least recently used.
"""

import hashlib
import heapq
from array import array
from collections import OrderedDict

from engine.errors import EngineError, N_


class KVCacheFullError(EngineError):
    message = N_(
        "The KV cache is full ({num_blocks} blocks). Finish or cancel other "
        "requests, or raise kv_cache_mib in the configuration."
    )


def block_hash(parent: bytes, token_ids: list[int]) -> bytes:
    """Stable across processes (later stored on disk), unlike Python's hash()."""
    return hashlib.blake2b(parent + array("i", token_ids).tobytes(), digest_size=16).digest()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_counts = [0] * num_blocks
        self.block_hashes: list[bytes | None] = [None] * num_blocks
        self.hash_to_block: dict[bytes, int] = {}
        self.free_ids = list(range(num_blocks))  # min-heap: low ids first keeps sequences contiguous
        self.evictable: OrderedDict[int, None] = OrderedDict()  # unreferenced but cached, LRU first
        self.high_water = 0  # blocks [0, high_water) have been used: their memory is resident

    @property
    def num_free(self) -> int:
        return len(self.free_ids) + len(self.evictable)

    def match_prefix(self, token_ids: list[int]) -> tuple[list[int], bytes]:
        """Takes a reference on every cached full block that starts `token_ids`."""
        block_ids: list[int] = []
        parent = b""
        for start in range(0, len(token_ids) - self.block_size + 1, self.block_size):
            h = block_hash(parent, token_ids[start : start + self.block_size])
            block_id = self.hash_to_block.get(h)
            if block_id is None:
                break
            self._take(block_id)
            block_ids.append(block_id)
            parent = h
        return block_ids, parent

    def allocate(self) -> int:
        if self.free_ids:
            block_id = heapq.heappop(self.free_ids)
        elif self.evictable:
            block_id, _ = self.evictable.popitem(last=False)
            del self.hash_to_block[self.block_hashes[block_id]]
            self.block_hashes[block_id] = None
        else:
            raise KVCacheFullError(num_blocks=self.num_blocks)
        self.ref_counts[block_id] = 1
        self.high_water = max(self.high_water, block_id + 1)
        return block_id

    def seal(self, block_id: int, parent: bytes, token_ids: list[int]) -> bytes:
        """Names a block that just filled up, so later requests can reuse it."""
        h = block_hash(parent, token_ids)
        if h not in self.hash_to_block:
            self.hash_to_block[h] = block_id
            self.block_hashes[block_id] = h
        return h

    def release(self, block_ids: list[int]) -> None:
        for block_id in reversed(block_ids):  # tail blocks are the least likely to be shared again
            self.ref_counts[block_id] -= 1
            assert self.ref_counts[block_id] >= 0
            if self.ref_counts[block_id] == 0:
                if self.block_hashes[block_id] is not None:
                    self.evictable[block_id] = None
                else:
                    heapq.heappush(self.free_ids, block_id)

    def forget(self, block_id: int) -> None:
        """Unnames a block whose contents were lost: later requests recompute its tokens."""
        h = self.block_hashes[block_id]
        if h is None:
            return
        del self.hash_to_block[h]
        self.block_hashes[block_id] = None
        if self.ref_counts[block_id] == 0:
            self.evictable.pop(block_id, None)
            heapq.heappush(self.free_ids, block_id)

    def _take(self, block_id: int) -> None:
        if self.ref_counts[block_id] == 0:
            self.evictable.pop(block_id, None)
        self.ref_counts[block_id] += 1
