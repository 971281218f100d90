"""Persisted prompt prefixes: KV chunks moved between the paged cache and the disk tier.

When a request is admitted, after the blocks already in memory, the chunks of its prompt found on
disk are copied into its blocks (and their sparse pools rebuilt from the keys), so a new process
serving the same repository context skips that prefill. When its prefill ends, the prompt's whole
chunks not yet on disk are snapshotted and written by a background thread: disk is never written
on the token path, and a full queue drops chunks rather than stall generation (they are written the
next time the prefix is served).
"""

from __future__ import annotations

import queue
import threading

import torch

from engine.attention import AttentionMetadata
from engine.block_manager import block_hash
from engine.kv_cache import KVCache
from engine.kv_disk import CHUNK_BLOCKS, DiskKVStore
from engine.rope import RotaryEmbedding
from engine.scheduler import at_exit_after_loops
from engine.sequence import Sequence

QUEUE_CHUNKS = 64  # snapshots waiting for the writer (~6 MB each for the default model in bf16)


def block_hashes(token_ids: list[int], block_size: int) -> list[bytes]:
    """The hash chain of every full block of `token_ids` (as BlockManager names blocks)."""
    hashes, parent = [], b""
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = block_hash(parent, token_ids[start : start + block_size])
        hashes.append(parent)
    return hashes


class KVPersistence:
    def __init__(self, store: DiskKVStore, kv: KVCache, rotary: RotaryEmbedding) -> None:
        self.store, self.kv, self.rotary = store, kv, rotary
        layers, heads, _, dim, bs = kv.k.shape
        self.k_shape = (layers, heads, CHUNK_BLOCKS, dim, bs)
        self.v_shape = (layers, heads, CHUNK_BLOCKS * bs, dim)
        self.chunk_tokens = CHUNK_BLOCKS * bs
        self.dropped = 0  # snapshots not queued because the writer was behind
        self.tier = None  # engine.kv_tiers.DeviceTier, when the device tier is bounded
        self._queue: queue.Queue = queue.Queue(QUEUE_CHUNKS)
        self._writer: threading.Thread | None = None  # started with the first chunk to write

    def restore(self, seq: Sequence, grid: int = 0) -> int:
        """Copies the chunks on disk that continue `seq`'s computed prefix into its (reserved) blocks;
        returns the tokens restored. The last prompt token is always left to compute. With a `grid`
        (the prompt prefills differently when chunked differently), up to a grid line only, so the
        rest prefills in a cold run's chunks (exactly where the grid is a multiple of the chunk)."""
        bs = self.kv.block_size
        hashes = block_hashes(seq.token_ids, bs)
        restored_from = rebuilt = seq.num_computed // bs  # blocks before it are in memory already
        chunk = restored_from // CHUNK_BLOCKS
        end = (len(seq) - 1) // grid * grid if grid else len(seq) - 1
        while (chunk + 1) * self.chunk_tokens <= end:
            loaded = self.store.load(hashes[(chunk + 1) * CHUNK_BLOCKS - 1], self.k_shape, self.v_shape)
            if loaded is None:
                break
            keys, values = loaded
            first = max(chunk * CHUNK_BLOCKS, seq.num_computed // bs)
            if self.tier is not None:  # a bounded device tier: a batch of chunks at a time, then evictable
                if first - rebuilt >= self._tier_batch_blocks():
                    self._rebuild_pools(seq, rebuilt, first)
                    rebuilt = first
                self.tier.restored(seq, first, (chunk + 1) * CHUNK_BLOCKS, hashes[CHUNK_BLOCKS - 1 :: CHUNK_BLOCKS])
            for block in range(first, (chunk + 1) * CHUNK_BLOCKS):
                j, target = block - chunk * CHUNK_BLOCKS, seq.block_ids[block]
                self.kv.k[:, :, target] = keys[:, :, j]
                self.kv.v[:, :, target * bs : (target + 1) * bs] = values[:, :, j * bs : (j + 1) * bs]
            seq.num_computed = seq.num_persisted = (chunk + 1) * self.chunk_tokens
            chunk += 1
        if seq.num_computed // bs > rebuilt:  # one pass over all restored blocks: per-call costs add up
            self._rebuild_pools(seq, rebuilt, seq.num_computed // bs)
        return seq.num_computed - restored_from * bs

    def _tier_batch_blocks(self) -> int:
        """Blocks restored between two rebuilds of the sparse pools under a bounded device tier: a
        quarter of its capacity, in whole chunks."""
        layers, heads = self.kv.k.shape[:2]
        return max(1, self.tier.capacity // 4 // (layers * heads * CHUNK_BLOCKS)) * CHUNK_BLOCKS

    def _rebuild_pools(self, seq: Sequence, first: int, end: int) -> None:
        """Block bounds and FP8 copies of restored blocks, from their keys, as the prefill wrote them."""
        if self.kv.sparse_pools is None:
            return
        bs = self.kv.block_size
        start, count = first * bs, (end - first) * bs
        meta = AttentionMetadata.for_step(seq.block_ids, start, count, bs)
        cos, sin = self.rotary(torch.arange(start, start + count))
        pool_blocks = torch.tensor(seq.block_ids[first:end])
        for layer, pools in enumerate(self.kv.sparse_pools):
            if pools is None:
                continue
            k = self.kv.k[layer][:, pool_blocks].permute(1, 3, 0, 2).reshape(count, -1, self.kv.k.shape[3])
            v = self.kv.v[layer][:, meta.slot_mapping].transpose(0, 1)
            pools.write(k, v, meta, cos, sin)

    def persist(self, seq: Sequence, computed: int) -> None:
        """Queues the whole chunks of the first `computed` tokens that are not on disk yet."""
        bs = self.kv.block_size
        first, end = seq.num_persisted // self.chunk_tokens, computed // self.chunk_tokens
        if end <= first:
            return
        hashes = block_hashes(seq.token_ids[: end * self.chunk_tokens], bs)
        seq.num_persisted = end * self.chunk_tokens
        for chunk in range(first, end):
            key = hashes[(chunk + 1) * CHUNK_BLOCKS - 1]
            if self.store.contains(key):
                continue
            pool_blocks = torch.tensor(seq.block_ids[chunk * CHUNK_BLOCKS : (chunk + 1) * CHUNK_BLOCKS])
            slots = (pool_blocks[:, None] * bs + torch.arange(bs)).reshape(-1)
            snapshot = (key, self.kv.k[:, :, pool_blocks], self.kv.v[:, :, slots])  # copies
            if self._writer is None:  # it holds the queue and the store only: a dropped engine is freed
                self._writer = threading.Thread(target=_write_loop, args=(self._queue, self.store),
                                                name="kv-disk-writer", daemon=True)
                self._writer.start()
                at_exit_after_loops(self._queue.join)  # a short-lived process (`zhiyin generate`) leaves its chunks
            try:
                self._queue.put_nowait(snapshot)
            except queue.Full:
                self.dropped += 1

    def flush(self) -> None:
        """Waits until every queued chunk is on disk."""
        self._queue.join()


def _write_loop(chunks: queue.Queue, store: DiskKVStore) -> None:
    while True:
        key, keys, values = chunks.get()
        try:
            store.save(key, keys, values)
        except OSError:
            pass  # a full or read-only disk costs the reuse, never the generation
        finally:
            chunks.task_done()
