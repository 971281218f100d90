"""The host tier of the KV cache: the 8-bit copies sparse decoding scores and reads, under a byte budget.

Sparse attention keeps, per layer, a copy of the KV it can read cheaply (`SparsePools`): each block's
key bounds and every token's scales, which the scorer reads for every block at every step, and the
8-bit codes of keys (FP8 as cached; int8 before RoPE, where positions are remapped) and FP8 values,
of which a step reads only its candidates, its window and its selected band. At a million tokens
the codes are 17 GB: they are what this tier bounds. Bounds and scales (a sixth as much) stay resident.

The unit is one block of one KV head of one layer, per kind of code: block_size × head_dim bytes, a
4 KiB page at the default model's head_dim 64. Every read or write of codes is preceded by `use`
(the pools call it): a resident unit is a hit; a missing one is read back from the tier's file. Over
budget, the least recently used units (never one the current layer of the current step asked for)
leave in a batch: written to the file first when changed since they were last there, then their
pages are handed back to the OS (engine/memory.PageArena). The file is the tier's own, unlinked as
soon as it is open: it lives as long as the process, and a killed process leaves nothing behind.

Output is identical to an unbounded tier: a unit read back holds the bytes it left with.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import N_, EngineError
from engine.kv_cache import KVCache
from engine.sparse_attention import SparseConfig

SLACK = 0.05  # share of the budget an eviction frees beyond what is asked
KINDS = ("keys", "unrotated", "values")  # the 8-bit codes of a layer's pools
HOST_COUNTERS = ("host_peak", "host_promotions", "host_demotions", "host_bytes_read", "host_bytes_written")


class HostTierTooSmallError(EngineError):
    message = N_("kv_host_mib = {budget} is too small: the block bounds and FP8 scales of {tokens} tokens take "
                 "{fixed} MiB, and a step may read {needed} MiB of FP8 codes besides. Raise kv_host_mib to at "
                 "least {total}, or lower max_context.")


class HostTierNeedsSparseError(EngineError):
    message = N_("kv_host_mib bounds the FP8 copies that sparse attention reads; it needs attention = "
                 "\"sparse-fp8\" or \"sparse\", and a model whose KV blocks fill whole memory pages.")


class HostTierWriteError(EngineError):
    message = N_("The host tier could not write its FP8 copies to {path}: {error}. Free disk space there, or "
                 "raise kv_host_mib so that less leaves memory.")


@dataclass
class HostStats:
    host_bytes: int = 0  # resident: bounds and scales, and the FP8 units in memory
    host_budget: int = 0
    host_peak: int = 0
    host_promotions: int = 0  # units read back from the tier's file
    host_demotions: int = 0  # units handed back to the OS
    host_bytes_read: int = 0
    host_bytes_written: int = 0
    read_seconds: float = 0.0
    over_budget: int = 0  # evictions that found too little to evict (one step reading more than the budget)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class HostTier:
    def __init__(self, kv: KVCache, budget_bytes: int, directory: Path | None = None) -> None:
        if kv.sparse_pools is None or kv.fp8_unit_bytes % mmap.PAGESIZE:
            raise HostTierNeedsSparseError()
        num_layers, num_kv_heads, num_blocks = kv.k.shape[:3]
        self.num_kv_heads, self.num_blocks, self.unit_bytes = num_kv_heads, num_blocks, kv.fp8_unit_bytes
        self.arenas = {}  # (layer, kind) -> the PageArena of those codes, [Hkv, slots, D]
        fixed = 0
        for layer, pools in enumerate(kv.sparse_pools):
            if pools is None:
                continue
            for kind, (arena, small) in pools.code_arenas().items():
                self.arenas[layer, KINDS.index(kind)] = arena
                fixed += small
            pools.on_use = self._hook(layer)
        self.region_bytes = num_kv_heads * num_blocks * self.unit_bytes  # one (layer, kind) in the file
        self.capacity = max(0, budget_bytes - fixed) // self.unit_bytes  # units
        shape = (num_layers, len(KINDS), num_kv_heads, num_blocks)
        self.resident = torch.zeros(shape, dtype=torch.bool)
        self.dirty = torch.zeros(shape, dtype=torch.bool)  # changed since last written to the file
        self.saved = torch.zeros(shape, dtype=torch.bool)  # the file holds its bytes
        self.stamp = torch.zeros(shape, dtype=torch.long)  # (step, layer) of last use
        self.count = 0
        self.step = 0
        self.num_layers = num_layers
        self.fixed_bytes = fixed
        self.stats = HostStats(host_bytes=fixed, host_budget=budget_bytes, host_peak=fixed)
        folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        self.fd, self.path = tempfile.mkstemp(prefix=".zhiyin-host-", suffix=".fp8", dir=folder)
        os.unlink(self.path)  # the open descriptor keeps it: nothing is left when the process ends
        self._closer = weakref.finalize(self, os.close, self.fd)

    def _hook(self, layer: int):
        def on_use(kind: str, pool_blocks: torch.Tensor, write: bool = False) -> None:
            self.use(layer, KINDS.index(kind), pool_blocks, write)
        return on_use

    def check(self, sparse: SparseConfig, max_context: int, prefill_chunk: int) -> None:
        """Refuses a budget below the bounds and scales plus one layer-step's reads of every kind: the
        candidates of the largest budget (past the trained window, up to `scan_tokens` of middle), the
        window and the chunk being written, in every head."""
        bs = sparse.block_size
        scanned = min(max_context, sparse.scan_tokens) if sparse.remaps(max_context) else 0
        per_head = (max(sparse.candidates * sparse.max_budget_tokens, scanned) + sparse.window_tokens) // bs \
            + -(-prefill_chunk // bs) + 1
        needed = len(KINDS) * self.num_kv_heads * per_head * self.unit_bytes
        if self.capacity * self.unit_bytes < needed:
            mib = 1 << 20
            raise HostTierTooSmallError(budget=self.stats.host_budget // mib, tokens=max_context,
                                        fixed=-(-self.fixed_bytes // mib), needed=-(-needed // mib),
                                        total=-(-(self.fixed_bytes + needed) // mib))

    def begin_step(self) -> None:
        self.step += 1

    def use(self, layer: int, kind: int, pool_blocks: torch.Tensor, write: bool = False) -> None:
        """Before codes of `layer` are read (or written, `write`): pool blocks [Hkv, N] per head or [N]
        for every head are made resident and marked used now."""
        if pool_blocks.dim() == 1:
            pool_blocks = pool_blocks.expand(self.num_kv_heads, -1)
        heads = torch.arange(pool_blocks.shape[0])[:, None].expand_as(pool_blocks).reshape(-1)
        blocks = pool_blocks.reshape(-1)
        now = self.step * self.num_layers + layer
        self.stamp[layer, kind, heads, blocks] = now
        if write:
            self.dirty[layer, kind, heads, blocks] = True
        missing = ~self.resident[layer, kind, heads, blocks]
        if not bool(missing.any()):
            return
        flat = torch.unique(heads[missing] * self.num_blocks + blocks[missing])
        self._make_room(flat.numel(), now)
        heads, blocks = flat // self.num_blocks, flat % self.num_blocks
        back = self.saved[layer, kind, heads, blocks]
        if bool(back.any()):
            self._read_back(layer, kind, flat[back])
        self.resident[layer, kind, heads, blocks] = True
        self.count += flat.numel()
        self._account()

    def _account(self) -> None:
        self.stats.host_bytes = self.fixed_bytes + self.count * self.unit_bytes
        self.stats.host_peak = max(self.stats.host_peak, self.stats.host_bytes)

    def _make_room(self, incoming: int, now: int) -> None:
        over = self.count + incoming - self.capacity
        if over <= 0:
            return
        evictable = self.resident & (self.stamp < now)
        index = evictable.flatten().nonzero().flatten()
        target = min(index.numel(), over + int(SLACK * self.capacity))
        if target < over:
            self.stats.over_budget += 1
        oldest = index[self.stamp.flatten()[index].topk(target, largest=False).indices]
        flat_resident, flat_dirty = self.resident.view(-1), self.dirty.view(-1)
        written = oldest[flat_dirty[oldest]]
        for region, start, length in self._runs(written):
            view = self.arenas[region].view(start, length)
            try:
                done = os.pwrite(self.fd, view, self._file_offset(region, start))
            except OSError as error:
                raise HostTierWriteError(path=str(self.path), error=error.strerror or str(error)) from None
            if done != length:
                raise HostTierWriteError(path=str(self.path), error="short write")
            self.stats.host_bytes_written += length
        self.saved.view(-1)[written] = True
        flat_dirty[written] = False
        for region, start, length in self._runs(oldest):
            self.arenas[region].release(start, length)
        flat_resident[oldest] = False
        self.count -= oldest.numel()
        self.stats.host_demotions += oldest.numel()
        self._account()

    def _read_back(self, layer: int, kind: int, flat: torch.Tensor) -> None:
        """Units of (layer, kind), as head * num_blocks + block, read back from the file."""
        started = time.perf_counter()
        base = (layer * len(KINDS) + kind) * self.num_kv_heads * self.num_blocks
        for region, start, length in self._runs(flat + base):
            into = self.arenas[region].view(start, length)
            if os.preadv(self.fd, [into], self._file_offset(region, start)) != length:
                raise HostTierWriteError(path=str(self.path), error="short read")
            self.stats.host_bytes_read += length
        self.stats.host_promotions += flat.numel()
        self.stats.read_seconds += time.perf_counter() - started

    def _runs(self, units: torch.Tensor):
        """Flat unit indices (over [layers, kinds, heads, blocks]) -> (region (layer, kind), byte start in
        its arena, byte length) of each run of consecutive units: one system call per run."""
        if not units.numel():
            return
        units = np.sort(units.numpy())
        breaks = np.flatnonzero(np.diff(units) != 1) + 1
        per_region = self.num_kv_heads * self.num_blocks
        for run in np.split(units, breaks):
            first, last = int(run[0]), int(run[-1])
            while first <= last:  # a run may cross from one region into the next
                region, offset = divmod(first, per_region)
                end = min(last, (region + 1) * per_region - 1)
                layer, kind = divmod(region, len(KINDS))
                yield (layer, kind), offset * self.unit_bytes, (end - first + 1) * self.unit_bytes
                first = end + 1

    def _file_offset(self, region: tuple[int, int], start: int) -> int:
        layer, kind = region
        return (layer * len(KINDS) + kind) * self.region_bytes + start

    def close(self) -> None:
        """Closes the file (its space is freed): the tier cannot be used after."""
        self._closer()


def host_bytes(kv: KVCache) -> int:
    """The host tier unbounded: the sparse pools' 8-bit codes with their bounds and scales, sized for
    the whole pool."""
    return sum(arena.tensor.nbytes + resident for pools in kv.sparse_pools or [] if pools is not None
               for arena, resident in pools.code_arenas().values())
