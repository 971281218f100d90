"""Continuous batching: one thread runs the model for every request.

Requests wait in arrival order. One is admitted when the KV pool can hold all it may write (its
prompt and `max_tokens`), so a running request never runs out of blocks. Each step of the loop runs
one prefill chunk of the request being admitted (all of its prefill at once when nothing else is
running), then one decode step for every running request together: the weights are read once for
the whole batch, which is where a memory-bound CPU or GPU gains. Requests leave between steps when
they finish, are cancelled, or their reader goes away.

At interpreter exit the loops cancel their requests and are joined: a daemon thread still inside a
torch operator when the interpreter finalizes is killed in C++ and aborts the process ("terminate
called without an active exception", exit status 134).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from engine.block_manager import BlockManager, KVCacheFullError
from engine.errors import EngineError
from engine.sampling import SamplingParams, sample
from engine.sequence import Sequence
from engine.text_stream import TextStream

log = logging.getLogger(__name__)

EXIT_JOIN_S = 30.0  # the longest a loop is waited for at exit: one prefill chunk of a long prompt
_exiting = threading.Event()
_loops: set[threading.Thread] = set()  # the running loops of every scheduler
_after_loops: list[Callable[[], None]] = []


def at_exit_after_loops(fn: Callable[[], None]) -> None:
    """Runs `fn` at interpreter exit once every loop has stopped (e.g. flushing what they queued)."""
    _after_loops.append(fn)


@atexit.register
def _stop_loops() -> None:
    _exiting.set()
    for thread in list(_loops):
        thread.join(EXIT_JOIN_S)
    for fn in _after_loops:
        fn()


@dataclass
class GenerationStats:
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens whose KV was reused, not recomputed
    num_disk_tokens: int = 0  # of those, read from the disk tier
    num_generated: int = 0
    queue_s: float = 0.0  # waiting for a turn before the prefill started
    time_to_first_token_s: float = 0.0  # the prefill, from its start
    decode_s: float = 0.0
    sparse: dict | None = None  # sparse decoding's metrics (SparseBudget.metrics) when it ran

    @property
    def decode_tokens_per_s(self) -> float:
        return (self.num_generated - 1) / self.decode_s if self.num_generated > 1 and self.decode_s else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        computed = self.num_prompt_tokens - self.num_cached_tokens
        return computed / self.time_to_first_token_s if self.time_to_first_token_s else 0.0


@dataclass
class GenerationChunk:
    text: str  # new text since the previous chunk
    token_ids: list[int]
    finish_reason: str | None = None  # "stop", "length" or "cancelled" on the last chunk
    stats: GenerationStats | None = None  # on the last chunk


@dataclass
class Request:
    seq: Sequence
    params: SamplingParams
    cancel: threading.Event  # the caller's
    stream: TextStream
    stop_ids: set[int]
    max_len: int
    generator: torch.Generator | None
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # chunks, an exception, then None
    abandoned: threading.Event = field(default_factory=threading.Event)  # the reader went away
    stats: GenerationStats = field(default_factory=GenerationStats)
    submitted: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    decode_started: float = 0.0
    logits: torch.Tensor | None = None  # the next token's, once computed

    @property
    def stopped(self) -> bool:
        return self.cancel.is_set() or self.abandoned.is_set() or _exiting.is_set()


# The model steps the scheduler calls: prefill (request, start, end) -> last logits [V];
# decode (requests) -> logits [B, V] for each request's last token.
PrefillStep = Callable[[Request, int, int], torch.Tensor]
DecodeStep = Callable[[list[Request]], torch.Tensor]


class Scheduler:
    def __init__(self, blocks: BlockManager, prefill: PrefillStep, decode: DecodeStep, *,
                 prefill_chunk: int, max_batch: int, restore: Callable[[Sequence, int], int] | None = None,
                 persist: Callable[[Sequence, int], None] | None = None,
                 chunk_sensitive: Callable[[int], bool] = lambda length: False) -> None:
        self.blocks, self._prefill, self._decode = blocks, prefill, decode
        self._restore, self._persist = restore, persist  # the disk tier (engine/kv_persist.py), when on
        self.prefill_chunk, self.max_batch = prefill_chunk, max_batch
        # Whether a prompt this long prefills differently when chunked differently (sparse prefill selects
        # per chunk): then its chunks keep one grid, and a cached prefix is reused up to a grid line only.
        self.chunk_sensitive = chunk_sensitive
        self._waiting: deque[Request] = deque()
        self._admitting: Request | None = None
        self._running: list[Request] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.peak_batch = 0  # the most requests one decode step has served

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running) + (self._admitting is not None)

    def submit(self, request: Request) -> None:
        with self._wake:
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="zhiyin-engine-loop", daemon=True)
                _loops.add(self._thread)
                self._thread.start()
            self._wake.notify()

    # --- the loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        """Runs while there is work; the next request starts it again. An idle engine is then held by
        nothing but its owners: one that is dropped is freed (tests and editors load several)."""
        while True:
            with self._wake:
                if not (self._waiting or self._admitting or self._running):
                    _loops.discard(self._thread)
                    self._thread = None
                    return
            try:
                self._iterate()
            except Exception as e:  # fail every request in flight rather than hang them
                if isinstance(e, EngineError):  # the user's to fix (e.g. a lost KV chunk): no traceback
                    log.warning("engine step: %s", e)
                else:  # a bug
                    log.exception("engine step")
                for request in [*self._running, *([self._admitting] if self._admitting else [])]:
                    self._fail(request, e)
                self._running, self._admitting = [], None

    def _iterate(self) -> None:
        self._drop_stopped_waiters()
        if self._admitting is None:
            self._admit()
        if self._admitting is not None:
            self._prefill_some(whole=not self._running)
        self._running = [r for r in self._running if not self._finish_if_stopped(r)]
        if self._running:
            self.peak_batch = max(self.peak_batch, len(self._running))
            for request, logits in zip(self._running, self._decode(self._running)):
                request.logits = logits
            self._running = [r for r in self._running if self._sample(r)]

    def _drop_stopped_waiters(self) -> None:
        with self._wake:
            stopped = [r for r in self._waiting if r.stopped]
            for r in stopped:
                self._waiting.remove(r)
        for r in stopped:
            self._finish(r, "cancelled")

    def _admit(self) -> None:
        """Takes the head of the queue if the batch has room and the pool can hold all it may write."""
        with self._wake:
            if not self._waiting or len(self._running) >= self.max_batch:
                return
            request = self._waiting[0]
        seq = request.seq
        grid = self.prefill_chunk if self.chunk_sensitive(len(seq)) else 0
        request.stats.num_cached_tokens = seq.reuse_prefix(self.blocks, grid)
        try:
            seq.reserve(self.blocks, request.max_len)
        except KVCacheFullError as e:
            seq.free(self.blocks)
            if self._running:
                return  # wait for running requests to free their blocks
            with self._wake:
                self._waiting.popleft()
            self._fail(request, e)  # too big for the whole pool
            return
        with self._wake:
            self._waiting.popleft()
        request.started = time.perf_counter()
        request.stats.queue_s = request.started - request.submitted
        if self._restore is not None:  # counted in the time to first token
            restored = self._restore(seq, grid)
            request.stats.num_cached_tokens += restored
            request.stats.num_disk_tokens = restored
        self._admitting = request

    def _prefill_some(self, whole: bool) -> None:
        request = self._admitting
        seq = request.seq
        while seq.num_computed < len(seq):
            if request.stopped:
                self._admitting = None
                self._finish(request, "cancelled")
                return
            end = min((seq.num_computed // self.prefill_chunk + 1) * self.prefill_chunk, len(seq))  # on the grid
            request.logits = self._prefill(request, seq.num_computed, end)
            if self._persist is not None:  # as chunks complete: the writer keeps pace with the prefill
                self._persist(seq, seq.num_computed)
            if not whole:
                break
        if seq.num_computed == len(seq):
            self._admitting = None
            request.stats.time_to_first_token_s = time.perf_counter() - request.started
            request.decode_started = time.perf_counter()
            if not self._finish_if_stopped(request) and self._sample(request):
                self._running.append(request)

    def _sample(self, request: Request) -> bool:
        """Picks the next token from the request's logits and streams it; False when it finished."""
        seq, params = request.seq, request.params
        if len(seq) >= request.max_len:
            self._finish(request, "length")
            return False
        seen = torch.tensor(seq.token_ids[-params.repetition_window:]) if params.repetition_penalty != 1.0 \
            else torch.empty(0, dtype=torch.long)
        token_id = sample(request.logits, params, seen, request.generator)
        request.stats.num_generated += 1
        if token_id in request.stop_ids:
            self._finish(request, "stop")
            return False
        seq.token_ids.append(token_id)
        text = request.stream.push(token_id)
        if text or request.stream.stopped:
            request.out.put(GenerationChunk(text, [token_id]))
        if request.stream.stopped:
            self._finish(request, "stop")
            return False
        if len(seq) >= request.max_len:
            self._finish(request, "length")
            return False
        return True

    def _finish_if_stopped(self, request: Request) -> bool:
        if request.stopped:
            self._finish(request, "cancelled")
            return True
        return False

    def _finish(self, request: Request, reason: str) -> None:
        if request.decode_started:
            request.stats.decode_s = time.perf_counter() - request.decode_started
        if request.seq.sparse_budget is not None and request.seq.sparse_budget.layer_steps:
            request.stats.sparse = request.seq.sparse_budget.metrics()
        request.seq.free(self.blocks)
        request.out.put(GenerationChunk(request.stream.finish(), [], reason, request.stats))
        request.out.put(None)

    def _fail(self, request: Request, error: Exception) -> None:
        request.seq.free(self.blocks)
        request.out.put(error)
        request.out.put(None)
