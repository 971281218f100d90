"""The disk tier of the KV cache: 256-token chunks as files, all layers contiguous, checksummed.

A chunk is named by the hash chain of its last block (engine/block_manager.py: it covers every token
before it) together with the model id and the cache dtype, so a chunk is only ever found by a
process serving the same weights with the same prefix; another model file, or an edited prefix,
simply misses. Files are written to a temporary name, synced and renamed: a process killed while
writing leaves no file under a chunk's name. Each read checks the header and a BLAKE2 digest of the
payload, or of the one layer it reads (the device tier fetches blocks layer by layer); a damaged chunk is
deleted and reported as a miss (the caller recomputes it). The folder
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
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

MAGIC = b"ZKV2"  # ZKV1 files (one digest, no per-layer ones) read as damaged: recomputed once
CHUNK_BLOCKS = 4  # 256 tokens of 64-token blocks
_HEADER = struct.Struct("<4sI")  # magic, JSON length
_HEAD_READ = 8192  # bytes read for the header and its JSON (about 1.6 KB with 30 layer digests)


def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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
        self.written_here: set[bytes] = set()  # chunks this process wrote (until it finds one damaged)
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        """Temporary files of writers that were killed (their process is gone)."""
        for path in self.folder.glob(".*.tmp"):
            try:
                pid = int(path.name.split(".")[-3])  # .<chunk>.kv.<pid>.<thread>.tmp
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
        meta_len = self._meta_length(data, chunk_hash, k_shape, v_shape)
        if meta_len is None:
            return None
        payload = memoryview(data)[_HEADER.size + meta_len :]
        if (len(payload) != (math.prod(k_shape) + math.prod(v_shape)) * self.dtype.itemsize
                or json.loads(data[_HEADER.size : _HEADER.size + meta_len])["digest"] != _digest(payload)):
            return None
        raw = torch.frombuffer(bytearray(payload), dtype=self.dtype)
        return raw[: math.prod(k_shape)].view(k_shape), raw[math.prod(k_shape) :].view(v_shape)

    def _meta_length(self, head: bytes, chunk_hash: bytes, k_shape: tuple, v_shape: tuple) -> int | None:
        """The length of the header's JSON when it names this chunk of this model, else None."""
        try:
            magic, meta_len = _HEADER.unpack_from(head)
            meta = json.loads(head[_HEADER.size : _HEADER.size + meta_len])
            if (magic != MAGIC or meta["chunk"] != chunk_hash.hex() or meta["model"] != self.model_id
                    or meta["dtype"] != str(self.dtype) or meta["k"] != list(k_shape) or meta["v"] != list(v_shape)
                    or len(meta["layers"]) != k_shape[0]):
                return None
        except (struct.error, ValueError, KeyError, TypeError):
            return None
        return meta_len

    def load_layer(self, chunk_hash: bytes, layer: int, k_shape: tuple, v_shape: tuple,
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One layer of a chunk: keys k_shape[1:] and values v_shape[1:], read and checked alone (two
        reads of that layer's bytes, its own digest); None when missing or damaged (then deleted)."""
        path = self.path(chunk_hash)
        try:
            with open(path, "rb") as f:
                head = f.read(_HEAD_READ)
                meta_len = self._meta_length(head, chunk_hash, k_shape, v_shape)
                if meta_len is None or _HEADER.size + meta_len > len(head):
                    return self._damaged(path)
                meta = json.loads(head[_HEADER.size : _HEADER.size + meta_len])
                k_layer, v_layer = (math.prod(shape[1:]) * self.dtype.itemsize for shape in (k_shape, v_shape))
                start = _HEADER.size + meta_len
                keys = os.pread(f.fileno(), k_layer, start + layer * k_layer)
                values = os.pread(f.fileno(), v_layer, start + k_shape[0] * k_layer + layer * v_layer)
        except OSError:
            self.stats.misses += 1
            return None
        if len(keys) != k_layer or len(values) != v_layer or meta["layers"][layer] != _digest(keys + values):
            return self._damaged(path)
        self.stats.hits += 1
        self.stats.bytes_read += k_layer + v_layer
        raw = torch.frombuffer(bytearray(keys + values), dtype=self.dtype)
        split = k_layer // self.dtype.itemsize
        return raw[:split].view(k_shape[1:]), raw[split:].view(v_shape[1:])

    def _damaged(self, path: Path) -> None:
        self.stats.corrupt += 1
        path.unlink(missing_ok=True)

    def save(self, chunk_hash: bytes, keys: torch.Tensor, values: torch.Tensor, sync: bool = True,
             overwrite: bool = False) -> None:
        """Writes the chunk atomically, then evicts down to the budget. `sync`: on disk before the
        rename (a power cut then loses nothing; without it the digests still catch a torn file).
        `overwrite`: replaces a chunk already there, which may be damaged (readers keep the old file)."""
        path = self.path(chunk_hash)
        if path.is_file() and not overwrite:
            return
        key_bytes = [layer.contiguous().view(-1).view(torch.uint8).numpy().tobytes() for layer in keys]
        value_bytes = [layer.contiguous().view(-1).view(torch.uint8).numpy().tobytes() for layer in values]
        payload = b"".join(key_bytes + value_bytes)
        meta = json.dumps({"chunk": chunk_hash.hex(), "model": self.model_id, "dtype": str(self.dtype),
                           "k": list(keys.shape), "v": list(values.shape), "digest": _digest(payload),
                           "layers": [_digest(k + v) for k, v in zip(key_bytes, value_bytes)]}).encode()
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(temporary, "wb") as f:
            f.write(_HEADER.pack(MAGIC, len(meta)) + meta)
            f.write(payload)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        with self._locked():
            os.replace(temporary, path)
            self.written_here.add(chunk_hash)
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

