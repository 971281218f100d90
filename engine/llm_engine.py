"""The inference engine: loads a checkpoint and streams generations with prefix reuse."""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from engine.adapter import adapter_digest, base_fingerprint, load_adapter
from engine.attention import AttentionMetadata, BatchMetadata
from engine.block_manager import BlockManager
from engine.checkpoints import Checkpoint, load_checkpoint
from engine.errors import MissingTensorError, PromptTooLongError
from engine.kv_cache import KVCache
from engine.kv_disk import DiskKVStore
from engine.kv_host import HOST_COUNTERS, HostTier, HostTierNeedsSparseError, host_bytes
from engine.kv_persist import KVPersistence
from engine.kv_tiers import TIER_COUNTERS, DeviceTier, DiskTierTooSmallError, TieringNeedsSparseError
from engine.model import Transformer, required_tensor_names
from engine.openmp import release_workers
from engine.prompt import Prompt
from engine.prompt_format import build_fim_prompt, render_chat
from engine.quantize import add_int8_decode_weights
from engine.sampling import SamplingParams
from engine.scheduler import GenerationChunk, GenerationStats, Request, Scheduler
from engine.sequence import Sequence
from engine.sparse_attention import SparseConfig
from engine.sparse_budget import SparseBudget
from engine.text_stream import TextStream
from engine.tokenizer import Tokenizer

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
ATTENTION_MODES = ("dense", "sparse", "sparse-fp8")


@dataclass
class EngineOptions:
    dtype: str = "bf16"  # weights and KV; fp32 reproduces reference logits exactly
    int8_decode: bool = True  # int8 weight copies for one-token steps (bf16 only)
    kv_cache_mib: int = 512  # KV pool; prefix blocks stay cached in what the live requests leave free
    max_context: int | None = None  # default: the model's trained window
    prefill_chunk: int = 512  # tokens per prefill step: bounds activation memory
    num_threads: int | None = None  # torch intra-op threads; default: torch's choice
    max_batch: int = 16  # requests decoded together (continuous batching)
    attention: str = "dense"  # decode attention: dense, sparse (selected blocks, cache dtype), sparse-fp8
    sparse: SparseConfig = field(default_factory=SparseConfig)  # for the sparse modes
    adapter: Path | None = None  # a repository adapter (engine/adapter.py) folded into the weights
    kv_disk_dir: Path | None = None  # the disk tier: prompt prefixes' KV persisted across processes
    kv_disk_mib: int = 4096  # its byte budget (least recently used chunks evicted)
    kv_device_mib: int | None = None  # the device tier's budget: blocks beyond it are read back from disk
    kv_host_mib: int | None = None  # the host tier's budget (sparse attention's FP8 copies); the rest in a file

    def __post_init__(self) -> None:
        assert self.dtype in DTYPES, f"dtype must be one of {sorted(DTYPES)}"
        assert self.prefill_chunk >= 1 and self.max_batch >= 1
        assert self.attention in ATTENTION_MODES, f"attention must be one of {ATTENTION_MODES}"


def build_model(checkpoint: Checkpoint, options: EngineOptions) -> Transformer:
    config, tensors = checkpoint.config, checkpoint.tensors
    for name in required_tensor_names(config):
        if name not in tensors:
            raise MissingTensorError(path=str(checkpoint.path), name=name, arch=config.arch)
    dtype = DTYPES[options.dtype]
    with torch.device("meta"):
        model = Transformer(config, dtype)
    model = model.to_empty(device="cpu").to(dtype).keep_norms_fp32()
    model.load_hf_weights(tensors)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    if options.adapter is not None:
        load_adapter(Path(options.adapter), config, base_fingerprint(model)).merge_into(model)
    if options.int8_decode:
        add_int8_decode_weights(model)
    if options.attention != "dense":  # "sparse": every selected block in the cache dtype, none in FP8
        share = 1.0 if options.attention == "sparse" else options.sparse.high_precision_share
        model.sparse = replace(options.sparse, high_precision_share=share)
    return model.eval()


class LLMEngine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, model_id: str, options: EngineOptions) -> None:
        self.model, self.tokenizer, self.model_id, self.options = model, tokenizer, model_id, options
        self.config = model.config
        trained = self.config.max_position
        self.max_context = options.max_context or trained
        if model.sparse is None:
            self.max_context = min(self.max_context, trained)  # dense attention breaks past its trained positions
        kv_dtype = DTYPES[options.dtype]
        num_blocks = KVCache.num_blocks_for(self.config, kv_dtype, options.kv_cache_mib << 20, self.max_context)
        self.kv = KVCache(self.config, num_blocks, kv_dtype)
        if model.sparse is not None:
            remaps = self.max_context > trained  # longer contexts remap positions in every layer
            layers = set(range(self.config.num_layers))
            if remaps:
                model.sparse = replace(model.sparse, remap_beyond=trained)
            else:
                layers -= set(model.sparse.dense_layers)
            self.kv.enable_sparse(layers, unrotated=remaps)
        self.blocks = BlockManager(num_blocks, self.kv.block_size)
        self.persistence = None
        if options.kv_disk_dir is not None:
            store = DiskKVStore(Path(options.kv_disk_dir), model_id, kv_dtype, options.kv_disk_mib << 20)
            self.persistence = KVPersistence(store, self.kv, model.rotary)
        self.tier = self._device_tier() if options.kv_device_mib is not None else None
        self.host = self._host_tier() if options.kv_host_mib is not None else None
        persistence = self.persistence
        self.scheduler = Scheduler(self.blocks, self._prefill_step, self._decode_step,
                                   prefill_chunk=options.prefill_chunk, max_batch=options.max_batch,
                                   restore=persistence.restore if persistence else None,
                                   persist=persistence.persist if persistence else None,
                                   chunk_sensitive=self._prefills_sparsely)

    def _prefills_sparsely(self, length: int) -> bool:
        """Past the trained window each prefill chunk selects the blocks it attends (sparse_prefill.py)."""
        return self.model.sparse is not None and self.model.sparse.remaps(length)

    def _device_tier(self) -> DeviceTier:
        """A bounded device tier; refused when it cannot hold one step's reads, or the disk one context."""
        sparse = self.model.sparse
        if sparse is None or self.persistence is None:
            raise TieringNeedsSparseError()
        tier = DeviceTier(self.kv, self.persistence.store, self.blocks, self.options.kv_device_mib << 20,
                          sparse.window_tokens)
        tier.check(sparse, self.max_context, self.options.prefill_chunk)
        context_bytes = self.max_context * KVCache.bytes_per_token(self.config, self.kv.k.dtype)
        if self.options.kv_disk_mib << 20 < context_bytes:  # the disk tier must not evict what it alone holds
            raise DiskTierTooSmallError(budget=self.options.kv_disk_mib, needed=-(-context_bytes >> 20),
                                        tokens=self.max_context)
        self.persistence.tier = tier
        return tier

    def _host_tier(self) -> HostTier:
        """A bounded host tier; refused without sparse attention, or when it cannot hold one step's reads."""
        if self.model.sparse is None:
            raise HostTierNeedsSparseError()
        host = HostTier(self.kv, self.options.kv_host_mib << 20, self.options.kv_disk_dir)
        host.check(self.model.sparse, self.max_context, self.options.prefill_chunk)
        return host

    @classmethod
    def load(cls, path: str | Path, options: EngineOptions | None = None) -> "LLMEngine":
        options = options or EngineOptions()
        if options.num_threads:
            torch.set_num_threads(options.num_threads)
        checkpoint = load_checkpoint(path, DTYPES[options.dtype])
        model = build_model(checkpoint, options)
        model_id = checkpoint.model_id  # keys cached KV: other weights, another id
        if options.adapter is not None:  # its digest: a retrained adapter of the same name is other weights
            model_id += "+" + adapter_digest(Path(options.adapter))[:16]
        engine = cls(model, checkpoint.tokenizer, model_id, options)
        release_workers()  # the scheduler's loop computes from here on (engine/openmp.py)
        return engine

    @property
    def queued_requests(self) -> int:
        """Generations waiting for their turn (the running ones not counted)."""
        return self.scheduler.waiting

    @property
    def kv_resident_bytes(self) -> int:
        """Bytes of the KV pool in use or ever used (the pool's pages are touched on first use)."""
        return self.blocks.high_water * self.kv.block_size * KVCache.bytes_per_token(self.config, self.kv.k.dtype)

    def kv_tiers(self) -> dict[str, float | None]:
        """Where the KV cache is, per tier, and the device tier's counters when it is bounded: what
        /metrics, the editor's status and the chat status show."""
        out: dict[str, float | None] = {
            "device_bytes": self.tier.stats.device_bytes if self.tier is not None else self.kv_resident_bytes,
            "device_budget": self.tier.stats.device_budget if self.tier is not None else None,
            "host_bytes": self.host.stats.host_bytes if self.host is not None else host_bytes(self.kv),
            "host_budget": self.host.stats.host_budget if self.host is not None else None,
            "disk_bytes": self.persistence.store.disk_bytes() if self.persistence is not None else 0}
        if self.tier is not None:
            counters = self.tier.stats.as_dict()
            out.update({name: counters[name] for name in TIER_COUNTERS})
        if self.host is not None:
            counters = self.host.stats.as_dict()
            out.update({name: counters[name] for name in HOST_COUNTERS})
        return out

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Prompt ids, with BOS where the model wants one."""
        ids = self.tokenizer.encode(text, allow_special=allow_special)
        bos = self.tokenizer.bos_id
        return [bos] + ids if self.tokenizer.add_bos and bos is not None else ids

    def chat_ids(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str], list[int]]:
        """Prompt ids for `messages` in the model's chat template, with its stop strings and ids."""
        chat = render_chat(self.tokenizer, messages)
        # The template writes BOS itself where the model wants it.
        return self.tokenizer.encode(chat.text, allow_special=True), list(chat.stop_strings), list(chat.stop_token_ids)

    def infill_ids(self, prefix: str, suffix: str) -> tuple[list[int], list[str], list[int]]:
        """Prompt ids to fill in between `prefix` and `suffix` (FIM where the model has the tokens, the
        prefix alone otherwise), with the stop strings and ids."""
        fim = build_fim_prompt(self.tokenizer, prefix, suffix)
        ids: list[int] = []
        for piece, is_special in fim.segments:  # the user's code never turns into special tokens
            ids += self.tokenizer.encode(piece, allow_special=is_special)
        bos = self.tokenizer.bos_id
        if self.tokenizer.add_bos and bos is not None:
            ids.insert(0, bos)
        return ids, list(fim.stop_strings), list(fim.stop_token_ids)

    def chat_prompt(self, messages: list[dict[str, str]]) -> Prompt:
        ids, stop, stop_ids = self.chat_ids(messages)
        return Prompt(ids, stop, stop_ids, messages=messages, num_tokens=len(ids))

    def completion_prompt(self, prefix: str, suffix: str | None = None) -> Prompt:
        """`prefix` to continue; with `suffix`, fill in the middle where the model has FIM tokens."""
        ids, stop, stop_ids = self.infill_ids(prefix, suffix) if suffix else (self.encode(prefix), [], [])
        return Prompt(ids, stop, stop_ids, prefix=prefix, suffix=suffix, num_tokens=len(ids))

    def generate(
        self, prompt: Prompt | str | list[int], params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        """Streams the completion of `prompt`; stops between tokens once `cancel` is set.

        Checks the prompt at once (PromptTooLongError); the model runs as the iterator is read.
        """
        if isinstance(prompt, Prompt):
            prompt = prompt.token_ids
        prompt_ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not prompt_ids:
            prompt_ids = [self.tokenizer.bos_id if self.tokenizer.bos_id is not None else 0]
        if len(prompt_ids) >= self.max_context:
            raise PromptTooLongError(num_tokens=len(prompt_ids), max_tokens=self.max_context)
        return self._generate(prompt_ids, params, cancel)

    def teacher_forced_logits(self, token_ids: list[int], first: int, step_seconds: list | None = None) -> torch.Tensor:
        """The next-token logits [len - first, V] at positions first-1 … len-2: the prompt up to
        `first` prefilled, then each later token fed one decode step at a time (the path sparse
        attention takes), as evaluation does; each step's time appended to `step_seconds`.
        Not for use beside live requests."""
        seq = self._sequence(token_ids[:first])
        seq.reserve(self.blocks, len(token_ids))
        try:
            rows = [self._prefill_all(seq)]
            for token in token_ids[first:-1]:
                seq.token_ids.append(token)
                started = time.perf_counter()
                rows.append(self._step(seq, len(seq) - 1, len(seq)))
                if step_seconds is not None:
                    step_seconds.append(time.perf_counter() - started)
            return torch.stack(rows)
        finally:
            seq.free(self.blocks)

    def _prefill_all(self, seq: Sequence) -> torch.Tensor:
        logits = None
        for start in range(0, len(seq), self.options.prefill_chunk):
            logits = self._step(seq, start, min(start + self.options.prefill_chunk, len(seq)))
        return logits

    def _generate(self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event | None) -> Iterator[GenerationChunk]:
        request = self._request(prompt_ids, params, cancel)
        self.scheduler.submit(request)
        finished = False
        try:
            while (item := request.out.get()) is not None:
                if isinstance(item, Exception):
                    finished = True
                    raise item
                yield item
            finished = True
        finally:
            if not finished:  # the reader stopped early: the loop frees the request within a step
                request.abandoned.set()
                while request.out.get() is not None:
                    pass

    def _request(self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event | None) -> Request:
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos and self.tokenizer.eos_id is not None:
            stop_ids.add(self.tokenizer.eos_id)
        return Request(
            seq=self._sequence(prompt_ids), params=params, cancel=cancel or threading.Event(),
            stream=TextStream(self.tokenizer, params.stop), stop_ids=stop_ids,
            max_len=min(len(prompt_ids) + params.max_tokens, self.max_context),
            generator=torch.Generator().manual_seed(params.seed) if params.seed is not None else None,
            stats=GenerationStats(num_prompt_tokens=len(prompt_ids)))

    def _sequence(self, token_ids: list[int]) -> Sequence:
        budget = SparseBudget(self.model.sparse) if self.model.sparse is not None else None
        return Sequence(list(token_ids), sparse_budget=budget)

    def _prefill_step(self, request: Request, start: int, end: int) -> torch.Tensor:
        return self._step(request.seq, start, end)

    def _decode_step(self, requests: list[Request]) -> torch.Tensor:
        """The next-token logits [B, V] of each request, from one forward over their last tokens."""
        if len(requests) == 1:
            seq = requests[0].seq
            return self._step(seq, len(seq) - 1, len(seq))[None]
        seqs = [r.seq for r in requests]
        batch = BatchMetadata([AttentionMetadata.for_step(s.block_ids, len(s) - 1, 1, self.kv.block_size,
                                                          s.sparse_budget) for s in seqs])
        input_ids = torch.tensor([s.token_ids[-1] for s in seqs], dtype=torch.long)
        positions = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long)
        self._begin_step(len(seqs))
        logits = self.model(input_ids, positions, self.kv, batch, logits_for=torch.arange(len(seqs)), tier=self.tier)
        for s in seqs:
            s.num_computed = len(s)
            s.seal_full_blocks(self.blocks)
            if self.tier is not None:
                self.tier.spill(s)
        return logits

    def _begin_step(self, tokens: int) -> None:
        if self.tier is not None:
            self.tier.begin_step(tokens)
        if self.host is not None:
            self.host.begin_step()

    def _step(self, seq: Sequence, start: int, end: int) -> torch.Tensor:
        """Runs tokens [start, end) of `seq` through the model; returns the last token's logits [V]."""
        seq.reserve(self.blocks, end)
        meta = AttentionMetadata.for_step(seq.block_ids, start, end - start, self.kv.block_size, seq.sparse_budget)
        input_ids = torch.tensor(seq.token_ids[start:end], dtype=torch.long)
        positions = torch.arange(start, end)
        self._begin_step(end - start)
        logits = self.model(input_ids, positions, self.kv, meta, tier=self.tier)
        seq.num_computed = end
        seq.seal_full_blocks(self.blocks)
        if self.tier is not None:
            self.tier.spill(seq)
        return logits[0]
