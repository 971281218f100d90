"""The disk tier of the KV cache: 256-token chunks as files, all layers contiguous, checksummed.

A chunk is named by the hash chain of its last block (engine/block_manager.py: it covers every token
before it) together with the model id and the cache dtype, so a chunk is only ever found by a
process serving the same weights with the same prefix; another model file, or an edited prefix,
simply misses. Files are written to a temporary name, synced and renamed: a process killed while
writing leaves no file under a chunk's name. Each read checks the header and a BLAKE2 digest of the
payload; a damaged chunk is deleted and reported as a miss (the caller recomputes it). The folder
stays under a byte budget by evicting the least recently used chunks (reads refresh the mtime),
under an flock so that processes sharing the folder do not evict what another is renaming in.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

MAGIC = b"ZKV1"
CHUNK_BLOCKS = 4  # 256 tokens of 64-token blocks
_HEADER = struct.Struct("<4sI")  # magic, JSON length


@dataclass
class DiskStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # chunks found damaged (deleted, recomputed)
    written: int = 0
    evicted: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


class DiskKVStore:
    """Chunks of one model's KV under `folder/<model key>/`. Chunk tensors: keys [L, Hkv, 4, D, bs]
    and values [L, Hkv, 4·bs, D] in the cache dtype, as the paged cache lays them out."""

    def __init__(self, folder: Path, model_id: str, dtype: torch.dtype, budget_bytes: int) -> None:
        key = hashlib.blake2b(f"{model_id}|{dtype}".encode(), digest_size=10).hexdigest()
        self.folder = Path(folder) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model_id, self.dtype, self.budget_bytes = model_id, dtype, budget_bytes
        self.stats = DiskStats()
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        """Temporary files of writers that were killed (their process is gone)."""
        for path in self.folder.glob(".*.tmp"):
            try:
                pid = int(path.name.rsplit(".", 2)[-2])
                os.kill(pid, 0)
            except ProcessLookupError:
                path.unlink(missing_ok=True)
            except (ValueError, PermissionError):
                continue

    def path(self, chunk_hash: bytes) -> Path:
        return self.folder / f"{chunk_hash.hex()}.kv"

    def contains(self, chunk_hash: bytes) -> bool:
        return self.path(chunk_hash).is_file()

    def load(self, chunk_hash: bytes, k_shape: tuple, v_shape: tuple) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The chunk's keys and values, or None when it is missing or damaged (then deleted)."""
        path = self.path(chunk_hash)
        try:
            data = path.read_bytes()
        except OSError:  # missing, or evicted by another process since
            self.stats.misses += 1
            return None
        chunk = self._parse(data, chunk_hash, k_shape, v_shape)
        if chunk is None:
            self.stats.corrupt += 1
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        self.stats.hits += 1
        self.stats.bytes_read += len(data)
        return chunk

    def _parse(self, data: bytes, chunk_hash: bytes, k_shape: tuple, v_shape: tuple):
        try:
            magic, meta_len = _HEADER.unpack_from(data)
            meta = json.loads(data[_HEADER.size : _HEADER.size + meta_len])
            payload = memoryview(data)[_HEADER.size + meta_len :]
            k_bytes = math.prod(k_shape) * self.dtype.itemsize
            if (magic != MAGIC or meta["chunk"] != chunk_hash.hex() or meta["model"] != self.model_id
                    or meta["dtype"] != str(self.dtype) or meta["k"] != list(k_shape) or meta["v"] != list(v_shape)
                    or len(payload) != k_bytes + math.prod(v_shape) * self.dtype.itemsize
                    or meta["digest"] != hashlib.blake2b(payload, digest_size=16).hexdigest()):
                return None
        except (struct.error, ValueError, KeyError, TypeError):
            return None
        raw = torch.frombuffer(bytearray(payload), dtype=self.dtype)
        return raw[: math.prod(k_shape)].view(k_shape), raw[math.prod(k_shape) :].view(v_shape)

    def save(self, chunk_hash: bytes, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Writes the chunk atomically, then evicts down to the budget."""
        path = self.path(chunk_hash)
        if path.is_file():
            return
        payload = keys.contiguous().view(-1).view(torch.uint8).numpy().tobytes() + \
            values.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        meta = json.dumps({"chunk": chunk_hash.hex(), "model": self.model_id, "dtype": str(self.dtype),
                           "k": list(keys.shape), "v": list(values.shape),
                           "digest": hashlib.blake2b(payload, digest_size=16).hexdigest()}).encode()
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as f:
            f.write(_HEADER.pack(MAGIC, len(meta)) + meta)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        with self._locked():
            os.replace(temporary, path)
            self.stats.written += 1
            self.stats.bytes_written += path.stat().st_size
            self._evict()

    def _evict(self) -> None:
        """Oldest-used chunks first, until the folder fits the budget (the lock is held)."""
        entries = []
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".kv"):
                try:
                    st = entry.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime_ns, st.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.budget_bytes:
                break
            try:
                os.unlink(path)
            except OSError:
                continue
            total -= size
            self.stats.evicted += 1

    @contextmanager
    def _locked(self):
        with open(self.folder / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.kv"))


@dataclass
class StoredModel:
    model_id: str
    dtype: str
    chunks: int
    bytes: int


def describe(folder: Path) -> list[StoredModel]:
    """What the disk tier under `folder` holds, per model (read from one chunk header each)."""
    out = []
    for sub in sorted(p for p in Path(folder).glob("*") if p.is_dir()):
        files = list(sub.glob("*.kv"))
        if not files:
            continue
        try:
            with open(files[0], "rb") as f:
                _, meta_len = _HEADER.unpack(f.read(_HEADER.size))
                meta = json.loads(f.read(meta_len))
            model_id, dtype = meta["model"], meta["dtype"]
        except (OSError, struct.error, ValueError, KeyError):
            model_id, dtype = "?", "?"
        out.append(StoredModel(model_id, dtype, len(files), sum(p.stat().st_size for p in files)))
    return out

