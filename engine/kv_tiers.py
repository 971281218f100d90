"""The device tier of the KV cache: a bounded set of blocks in the cache dtype; the rest on disk.

Three tiers (issue 3): device — the blocks a step reads in the cache dtype (on a GPU its memory; on a
CPU-only machine the resident pages of the paged pool, engine/memory.PageArena); host — what sparse
decoding scores and reads in FP8 (`SparsePools`: every block's key bounds, FP8 keys and values with
their scales; engine/kv_host.py bounds it); disk — 256-token chunks, all layers contiguous,
checksummed (engine/kv_disk.py).

The unit of placement is one block of one KV head of one layer (its keys and values), as the sparse
selection picks them:
- written: resident, and pinned until its chunk is on disk. A chunk goes to disk (`spill`) once it
  has left its sequence's window: nothing before the window is read in the cache dtype except what
  the scorer selects.
- read: every read in the cache dtype is preceded by `fetch`: a resident unit is a hit; a missing one
  is promoted (its layer of the chunk read from disk, checked against its digest, copied in).
- evicted least recently used (demoted) whenever the tier would pass its byte budget: only units on
  disk, never one the current layer of the current step has asked for. Eviction frees a batch at a
  time (`SLACK` of the budget), so that its scan runs once every few steps, not once per layer.
- prefetched: a decode step names the blocks ranked just below its best (`prefetch`), which the next
  steps are likely to promote; a background thread reads them from disk into free room (it never
  evicts), off the step's critical path. The tier's state is shared with it under one lock; the
  model reads resident pages outside it (the reader only writes pages that are not resident).

Output is identical to an unbounded cache: a promoted unit holds the exact bytes that were evicted.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from dataclasses import asdict, dataclass

import torch

from engine.block_manager import BlockManager, block_hash
from engine.errors import N_, EngineError
from engine.kv_cache import KVCache
from engine.kv_disk import CHUNK_BLOCKS, DiskKVStore
from engine.sequence import Sequence
from engine.sparse_attention import SparseConfig

SLACK = 0.05  # share of the budget an eviction frees beyond what is asked
TIER_COUNTERS = ("device_peak", "promotions", "demotions", "hits", "misses", "locality", "prefetched", "prefetch_hits",
                 "fetch_ms_per_promotion", "disk_bytes_read", "disk_bytes_per_token", "spilled_chunks", "over_budget",
                 "tokens")


class DeviceTierTooSmallError(EngineError):
    message = N_("kv_device_mib = {budget} is too small for these attention settings: a step may need "
                 "{needed} MiB in the cache dtype. Raise kv_device_mib to at least {needed}.")


class DiskTierTooSmallError(EngineError):
    message = N_("kv_disk_mib = {budget} cannot hold a whole context of {tokens} tokens ({needed} MiB), which a "
                 "bounded device tier keeps on disk. Raise kv_disk_mib to at least {needed}, or lower max_context.")


class TieringNeedsSparseError(EngineError):
    message = N_("kv_device_mib bounds the KV cache read in full precision; it needs sparse attention "
                 "(attention = \"sparse\" or \"sparse-fp8\") and the disk tier (kv_disk_mib above 0).")


class KVChunkLostError(EngineError):
    message = N_("A block of the KV cache kept on disk is gone or damaged ({path}): another process sharing "
                 "the cache folder evicted it, or the disk is failing. Raise kv_disk_mib or give this process "
                 "a cache folder of its own, then send the request again.")


@dataclass
class TierStats:
    device_bytes: int = 0
    device_budget: int = 0
    device_peak: int = 0  # the most the tier held at any point
    promotions: int = 0  # units copied in from disk
    demotions: int = 0  # units handed back (their bytes stay on disk)
    hits: int = 0  # of the selected blocks a decode step reads in the cache dtype: already resident
    misses: int = 0  # ... not resident: promoted on the step's critical path
    fetch_seconds: float = 0.0  # reading, checking and copying promoted units
    disk_bytes_read: int = 0
    spilled_chunks: int = 0  # chunks the tier wrote to disk as they left the window
    over_budget: int = 0  # evictions that found too little to evict (a budget below the working set)
    prefetched: int = 0  # units the background reader brought in
    prefetch_hits: int = 0  # selected units found resident because they were prefetched
    tokens: int = 0  # run through the model (prefill and decode)

    @property
    def locality(self) -> float:
        """Share of selected blocks already in the device tier when a decode step reads them."""
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 1.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "locality": round(self.locality, 4),
                "disk_bytes_per_token": round(self.disk_bytes_read / self.tokens, 1) if self.tokens else 0.0,
                "fetch_ms_per_promotion":
                    round(1000 * self.fetch_seconds / self.promotions, 4) if self.promotions else 0.0}


class DeviceTier:
    def __init__(self, kv: KVCache, store: DiskKVStore, blocks: BlockManager, budget_bytes: int,
                 window_tokens: int) -> None:
        self.kv, self.store, self.blocks, self.window_tokens = kv, store, blocks, window_tokens
        num_layers, num_kv_heads, num_blocks, _, bs = kv.k.shape
        self.unit_pair_bytes = 2 * kv.unit_bytes  # keys and values
        self.capacity = budget_bytes // self.unit_pair_bytes  # units
        self.resident = torch.zeros(num_layers, num_kv_heads, num_blocks, dtype=torch.bool)
        self.stamp = torch.zeros(num_layers, num_kv_heads, num_blocks, dtype=torch.long)  # (step, layer) of last use
        self.spilled = torch.zeros(num_blocks, dtype=torch.bool)  # its contents are on disk: evictable
        self.chunk_of: dict[int, tuple[bytes, int]] = {}  # pool block -> (chunk key, index), while spilled
        self.prefetched = torch.zeros_like(self.resident)  # brought in by the reader, not yet used
        self.count = 0  # resident units
        self.step = 0
        self._lock = threading.Lock()
        self._requests: queue.Queue = queue.Queue(2 * num_layers)  # (layer, pool blocks) to prefetch
        self._reader: threading.Thread | None = None
        self.k_shape = (num_layers, num_kv_heads, CHUNK_BLOCKS, kv.k.shape[3], bs)
        self.v_shape = (num_layers, num_kv_heads, CHUNK_BLOCKS * bs, kv.k.shape[3])
        self.stats = TierStats(device_budget=budget_bytes)

    def check(self, sparse: SparseConfig, max_context: int, prefill_chunk: int) -> None:
        """Refuses a budget below what one step of a sequence may hold at once: its sinks, window and
        unwritten chunks in every layer, plus one layer's widest read (dense attention up to the
        remapping point, or the window and the largest budget)."""
        num_layers, num_kv_heads = self.kv.k.shape[:2]
        bs, chunk = self.kv.block_size, -(-prefill_chunk // self.kv.block_size)
        dense_span = min(max_context, sparse.remap_beyond or max_context)
        widest = max(dense_span, sparse.sink_tokens + sparse.window_tokens + sparse.max_budget_tokens) // bs + chunk + 1
        pinned = (sparse.sink_tokens + sparse.window_tokens) // bs + chunk + 2 * CHUNK_BLOCKS + 1
        units_needed = num_kv_heads * (num_layers * pinned + widest)
        if units_needed > self.capacity:
            mib = 1 << 20
            raise DeviceTierTooSmallError(budget=self.stats.device_budget // mib,
                                          needed=-(-units_needed * self.unit_pair_bytes // mib))

    def begin_step(self, tokens: int) -> None:
        self.step += 1
        self.stats.tokens += tokens

    def _now(self, layer: int) -> int:
        return self.step * self.kv.k.shape[0] + layer

    def prepare_write(self, layer: int, pool_blocks: torch.Tensor) -> None:
        """Before a layer writes tokens into `pool_blocks` [T]: they are resident, pinned, used now."""
        blocks = pool_blocks.unique()
        with self._lock:
            self.spilled[blocks] = False  # new contents: not the chunk on disk (a reused block id)
            self._use(layer, blocks, load=False)

    def fetch(self, layer: int, pool_blocks: torch.Tensor, selected: bool = False) -> None:
        """Before a layer reads pool blocks in the cache dtype: [Hkv, N] (per head) or [N] (every head).
        `selected`: the blocks a decode step's scorer chose (counted for locality)."""
        with self._lock:
            if selected:
                heads, blocks = self._units(pool_blocks)
                early = self.prefetched[layer, heads, blocks]
                self.stats.prefetch_hits += int(early.sum())
                self.prefetched[layer, heads[early], blocks[early]] = False
            hits, count = self._use(layer, pool_blocks, load=True)
            if selected:
                self.stats.hits += hits
                self.stats.misses += count - hits

    def prefetch(self, layer: int, pool_blocks: torch.Tensor) -> None:
        """Units of `layer` a later step will likely read ([Hkv, N] per head), for the background reader."""
        if self._reader is None:  # it holds the tier weakly: a dropped engine is freed, and the reader stops
            self._reader = threading.Thread(target=_read_ahead, args=(weakref.ref(self), self._requests),
                                            name="kv-prefetch", daemon=True)
            self._reader.start()
            # Also at exit: not in the middle of a copy when the interpreter goes.
            weakref.finalize(self, _stop_reader, self._requests, self._reader)
        try:
            self._requests.put_nowait((layer, pool_blocks.clone()))
        except queue.Full:  # the reader is behind: these are guesses, drop them
            pass

    def _read_one(self, layer: int, pool_blocks: torch.Tensor) -> None:
        """Brings units of `layer` (pool blocks [Hkv, N]) that are on disk only into free room."""
        with self._lock:
            heads, blocks = self._units(pool_blocks)
            wanted = ~self.resident[layer, heads, blocks] & self.spilled[blocks]
            room = max(0, self.capacity - self.count)
            by_chunk = self._by_chunk(heads[wanted].tolist()[:room], blocks[wanted].tolist()[:room])
        for chunk, chunk_units in by_chunk.items():
            loaded = self.store.load_layer(chunk, layer, self.k_shape, self.v_shape)  # outside the lock
            if loaded is None:
                continue  # a step that needs it will find it lost and say so
            with self._lock:
                for head, block, index in chunk_units:
                    still = self.spilled[block] and self.chunk_of.get(block) == (chunk, index)
                    if not still or self.resident[layer, head, block] or self.count >= self.capacity:
                        continue
                    self._install(layer, head, block, index, *loaded)
                    self.resident[layer, head, block] = self.prefetched[layer, head, block] = True
                    self.stamp[layer, head, block] = self._now(layer) - self.kv.k.shape[0]  # as if used a step ago
                    self.count += 1
                    self.stats.prefetched += 1
                self.stats.device_bytes = self.count * self.unit_pair_bytes
                self.stats.device_peak = max(self.stats.device_peak, self.stats.device_bytes)
                self.stats.disk_bytes_read += sum(t.numel() * t.element_size() for t in loaded)

    def _by_chunk(self, heads: list[int], blocks: list[int]) -> dict[bytes, list[tuple[int, int, int]]]:
        """Units (heads[i], blocks[i]), all spilled, grouped by the chunk that holds them: chunk ->
        [(head, block, index in the chunk)]."""
        by_chunk: dict[bytes, list[tuple[int, int, int]]] = {}
        for head, block in zip(heads, blocks):
            chunk, index = self.chunk_of[block]
            by_chunk.setdefault(chunk, []).append((head, block, index))
        return by_chunk

    def _units(self, pool_blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heads, blocks) flat, of pool blocks [Hkv, N] per head or [N] for every head."""
        if pool_blocks.dim() == 1:
            pool_blocks = pool_blocks.expand(self.kv.k.shape[1], -1)
        heads = torch.arange(pool_blocks.shape[0])[:, None].expand_as(pool_blocks)
        return heads.reshape(-1), pool_blocks.reshape(-1)

    def _use(self, layer: int, pool_blocks: torch.Tensor, load: bool, stamp: int | None = None) -> tuple[int, int]:
        """Marks units of `layer` used now (or at `stamp`): pool blocks [Hkv, N] per head, or [N] for every
        head. Makes the missing ones resident (read from disk when `load`). Returns (how many were
        resident already, how many were asked for)."""
        heads, blocks = self._units(pool_blocks)
        now = self._now(layer)
        self.stamp[layer, heads, blocks] = now if stamp is None else stamp
        missing = ~self.resident[layer, heads, blocks]
        num_missing = int(missing.sum())
        if num_missing:
            pairs = torch.unique(torch.stack([blocks[missing], heads[missing]], 1), dim=0)
            self._make_room(pairs.shape[0], now)
            if load:
                self._load(layer, pairs[:, 1], pairs[:, 0])
            self.resident[layer, pairs[:, 1], pairs[:, 0]] = True
            self.count += pairs.shape[0]
            self.stats.device_bytes = self.count * self.unit_pair_bytes
            self.stats.device_peak = max(self.stats.device_peak, self.stats.device_bytes)
        return heads.numel() - num_missing, heads.numel()

    def _make_room(self, incoming: int, now: int) -> None:
        over = self.count + incoming - self.capacity
        if over <= 0:
            return
        evictable = self.resident & self.spilled[None, None] & (self.stamp < now)
        layers, heads, blocks = evictable.nonzero(as_tuple=True)
        target = min(layers.numel(), over + int(SLACK * self.capacity))
        if target < over:
            self.stats.over_budget += 1
        if not target:
            return
        oldest = self.stamp[layers, heads, blocks].topk(target, largest=False).indices
        self._drop(layers[oldest], heads[oldest], blocks[oldest])
        self.stats.demotions += target

    def _drop(self, layers: torch.Tensor, heads: torch.Tensor, blocks: torch.Tensor) -> None:
        """Units (layers[i], heads[i], blocks[i]) leave the tier: their pages go back to the OS."""
        self.resident[layers, heads, blocks] = self.prefetched[layers, heads, blocks] = False
        for layer in layers.unique().tolist():
            mine = layers == layer
            self.kv.release(layer, heads[mine].tolist(), blocks[mine].tolist())
        self.count -= layers.numel()
        self.stats.device_bytes = self.count * self.unit_pair_bytes

    def _load(self, layer: int, heads: torch.Tensor, blocks: torch.Tensor) -> None:
        """Copies units (heads[i], blocks[i]) of `layer` in from their chunks on disk."""
        started = time.perf_counter()
        for chunk, units in self._by_chunk(heads.tolist(), blocks.tolist()).items():
            loaded = self.store.load_layer(chunk, layer, self.k_shape, self.v_shape)
            if loaded is None:
                self._forget_evicted()
                self.store.written_here.clear()  # what else was damaged is unknown: nothing is trusted
                raise KVChunkLostError(path=str(self.store.path(chunk)))
            for head, block, index in units:
                self._install(layer, head, block, index, *loaded)
            self.stats.disk_bytes_read += sum(t.numel() * t.element_size() for t in loaded)
        self.stats.promotions += heads.numel()
        self.stats.fetch_seconds += time.perf_counter() - started

    def _install(self, layer: int, head: int, block: int, index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copies unit (head, block index `index` of a chunk's layer: keys [Hkv, 4, D, bs], values
        [Hkv, 4 bs, D]) into pool block `block`."""
        bs = self.kv.block_size
        self.kv.k[layer, head, block] = keys[head, index]
        self.kv.v[layer, head, block * bs : (block + 1) * bs] = values[head, index * bs : (index + 1) * bs]

    def _forget_evicted(self) -> None:
        """A chunk on disk is gone, and others may be: every block not wholly resident loses its name,
        so that the request sent again recomputes (or restores from disk what is still sound) instead
        of failing the same way, one chunk at a time."""
        partial = (self.spilled & ~self.resident.all(0).all(0)).nonzero().flatten()
        for block in partial.tolist():
            del self.chunk_of[block]
            self.blocks.forget(block)
        self.spilled[partial] = False
        layers, heads, blocks = self.resident[:, :, partial].nonzero(as_tuple=True)  # else pinned for good
        self._drop(layers, heads, partial[blocks])

    def spill(self, seq: Sequence) -> None:
        """After a step: writes `seq`'s chunks that have wholly left its window to disk (unless there),
        which makes their units evictable."""
        bs = self.kv.block_size
        chunk_tokens = CHUNK_BLOCKS * bs
        window_first = (seq.num_computed - self.window_tokens) // bs
        while (seq.num_spilled + chunk_tokens) // bs <= min(window_first, seq.num_sealed):
            first = seq.num_spilled // bs
            pool_blocks = seq.block_ids[first : first + CHUNK_BLOCKS]
            key = seq.spilled_hash
            for start in range(seq.num_spilled, seq.num_spilled + chunk_tokens, bs):  # the chain, as blocks are named
                key = block_hash(key, seq.token_ids[start : start + bs])
            on_disk = all(self.chunk_of.get(b) == (key, i) for i, b in enumerate(pool_blocks)) \
                and bool(self.spilled[pool_blocks].all())  # blocks shared with a sequence that spilled them
            if not on_disk and key not in self.store.written_here:  # an older file may be damaged: rewritten
                index = torch.tensor(pool_blocks)
                slots = (index[:, None] * bs + torch.arange(bs)).reshape(-1)
                self.store.save(key, self.kv.k[:, :, index], self.kv.v[:, :, slots], sync=False, overwrite=True)
                self.stats.spilled_chunks += 1
            self._adopt(pool_blocks, key)
            seq.num_spilled, seq.spilled_hash = seq.num_spilled + chunk_tokens, key

    def _adopt(self, pool_blocks: list[int], chunk: bytes) -> None:
        """`pool_blocks` hold chunk `chunk` on disk: their units may be evicted. Until the blocks are
        written again (`prepare_write`), which is the only other way their contents change."""
        with self._lock:
            for index, block in enumerate(pool_blocks):
                self.chunk_of[block] = (chunk, index)
            self.spilled[pool_blocks] = True

    def restored(self, seq: Sequence, first_block: int, end_block: int, chunk_keys: list[bytes]) -> None:
        """Blocks [first_block, end_block) of `seq`, up to whole chunks (`chunk_keys`: each chunk's name),
        are about to be copied in from disk: makes room for them. They count as used before this step:
        once copied (and their sparse pools rebuilt), they are the first to go when the next batch needs room."""
        pool_blocks = torch.tensor(seq.block_ids[first_block:end_block])
        with self._lock:
            for layer in range(self.kv.k.shape[0]):
                self._use(layer, pool_blocks, load=False, stamp=self._now(0) - 1)
        for start in range(first_block // CHUNK_BLOCKS * CHUNK_BLOCKS, end_block, CHUNK_BLOCKS):
            self._adopt(seq.block_ids[start : start + CHUNK_BLOCKS], chunk_keys[start // CHUNK_BLOCKS])
        seq.num_spilled, seq.spilled_hash = end_block * self.kv.block_size, chunk_keys[end_block // CHUNK_BLOCKS - 1]


def _read_ahead(tier_ref: weakref.ref, requests: queue.Queue) -> None:
    while (request := requests.get()) is not None:
        tier = tier_ref()
        if tier is None:
            return
        tier._read_one(*request)
        del tier  # between requests the reader holds nothing


def _stop_reader(requests: queue.Queue, reader: threading.Thread) -> None:
    while True:
        try:
            requests.get_nowait()
        except queue.Empty:
            break
    requests.put(None)
    if reader is not threading.current_thread():  # the reader itself may drop the last reference
        reader.join(timeout=10)
