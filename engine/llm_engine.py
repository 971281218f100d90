"""The inference engine: loads a checkpoint and streams generations with prefix reuse."""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.attention import AttentionMetadata
from engine.block_manager import BlockManager
from engine.checkpoints import Checkpoint, load_checkpoint
from engine.errors import MissingTensorError, PromptTooLongError
from engine.fifo_lock import FifoLock
from engine.kv_cache import KVCache
from engine.model import Transformer, required_tensor_names
from engine.quantize import add_int8_decode_weights
from engine.sampling import SamplingParams, sample
from engine.sequence import Sequence
from engine.text_stream import TextStream
from engine.tokenizer import Tokenizer

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class EngineOptions:
    dtype: str = "bf16"  # weights and KV; fp32 reproduces reference logits exactly
    int8_decode: bool = True  # int8 weight copies for one-token steps (bf16 only)
    kv_cache_mib: int = 512  # KV pool; prefix blocks stay cached in what the live requests leave free
    max_context: int | None = None  # default: the model's trained window
    prefill_chunk: int = 512  # tokens per prefill step: bounds activation memory
    num_threads: int | None = None  # torch intra-op threads; default: torch's choice

    def __post_init__(self) -> None:
        assert self.dtype in DTYPES, f"dtype must be one of {sorted(DTYPES)}"
        assert self.prefill_chunk >= 1


@dataclass
class GenerationStats:
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens whose KV was reused, not recomputed
    num_generated: int = 0
    time_to_first_token_s: float = 0.0
    decode_s: float = 0.0

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
    if options.int8_decode:
        add_int8_decode_weights(model)
    return model.eval()


class LLMEngine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, model_id: str, options: EngineOptions) -> None:
        self.model, self.tokenizer, self.model_id, self.options = model, tokenizer, model_id, options
        self.config = model.config
        self.max_context = min(options.max_context or self.config.max_position, self.config.max_position)
        kv_dtype = DTYPES[options.dtype]
        num_blocks = KVCache.num_blocks_for(self.config, kv_dtype, options.kv_cache_mib << 20, self.max_context)
        self.kv = KVCache(self.config, num_blocks, kv_dtype)
        self.blocks = BlockManager(num_blocks, self.kv.block_size)
        self._turns = FifoLock()  # one sequence runs at a time, in arrival order

    @classmethod
    def load(cls, path: str | Path, options: EngineOptions | None = None) -> "LLMEngine":
        options = options or EngineOptions()
        if options.num_threads:
            torch.set_num_threads(options.num_threads)
        checkpoint = load_checkpoint(path, DTYPES[options.dtype])
        model = build_model(checkpoint, options)
        return cls(model, checkpoint.tokenizer, checkpoint.model_id, options)

    @property
    def queued_requests(self) -> int:
        """Generations waiting for the one running to finish."""
        return self._turns.waiting

    @property
    def kv_resident_bytes(self) -> int:
        """Bytes of the KV pool in use or ever used (the pool's pages are touched on first use)."""
        return self.blocks.high_water * self.kv.block_size * KVCache.bytes_per_token(self.config, self.kv.k.dtype)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Prompt ids, with BOS where the model wants one."""
        ids = self.tokenizer.encode(text, allow_special=allow_special)
        bos = self.tokenizer.bos_id
        return [bos] + ids if self.tokenizer.add_bos and bos is not None else ids

    def generate(
        self, prompt: str | list[int], params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        """Streams the completion of `prompt`; stops between tokens once `cancel` is set.

        Checks the prompt at once (PromptTooLongError); the model runs as the iterator is read.
        """
        prompt_ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not prompt_ids:
            prompt_ids = [self.tokenizer.bos_id if self.tokenizer.bos_id is not None else 0]
        if len(prompt_ids) >= self.max_context:
            raise PromptTooLongError(num_tokens=len(prompt_ids), max_tokens=self.max_context)
        return self._generate(prompt_ids, params, cancel)

    def _generate(self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event | None) -> Iterator[GenerationChunk]:
        if not self._turns.acquire(cancel):
            return
        seq = Sequence(list(prompt_ids))
        try:
            yield from self._run(seq, params, cancel)
        finally:
            seq.free(self.blocks)
            self._turns.release()

    def _run(self, seq: Sequence, params: SamplingParams, cancel: threading.Event | None) -> Iterator[GenerationChunk]:
        started = time.perf_counter()
        stats = GenerationStats(num_prompt_tokens=len(seq))
        stats.num_cached_tokens = seq.reuse_prefix(self.blocks)
        generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos and self.tokenizer.eos_id is not None:
            stop_ids.add(self.tokenizer.eos_id)
        stream = TextStream(self.tokenizer, params.stop)
        max_len = min(len(seq) + params.max_tokens, self.max_context)

        logits = self._prefill(seq, cancel)
        stats.time_to_first_token_s = time.perf_counter() - started
        decode_started = time.perf_counter()
        finish_reason = "length"
        while logits is not None and len(seq) < max_len:
            if cancel is not None and cancel.is_set():
                finish_reason = "cancelled"
                break
            seen = torch.tensor(seq.token_ids[-params.repetition_window:]) if params.repetition_penalty != 1.0 \
                else torch.empty(0, dtype=torch.long)
            token_id = sample(logits, params, seen, generator)
            stats.num_generated += 1
            if token_id in stop_ids:
                finish_reason = "stop"
                break
            seq.token_ids.append(token_id)
            text = stream.push(token_id)
            if stream.stopped:
                finish_reason = "stop"
                yield GenerationChunk(text, [token_id])
                break
            if text:
                yield GenerationChunk(text, [token_id])
            if len(seq) < max_len:
                logits = self._step(seq, len(seq) - 1, len(seq))
        if logits is None:
            finish_reason = "cancelled"
        stats.decode_s = time.perf_counter() - decode_started
        yield GenerationChunk(stream.finish(), [], finish_reason, stats)

    def _prefill(self, seq: Sequence, cancel: threading.Event | None) -> torch.Tensor | None:
        """Computes the prompt's KV in chunks past the reused prefix; returns the last logits, or
        None when cancelled between chunks (the finished chunks' blocks stay cached for the next)."""
        chunk = self.options.prefill_chunk
        logits = None
        for start in range(seq.num_computed, len(seq), chunk):
            if cancel is not None and cancel.is_set():
                return None
            logits = self._step(seq, start, min(start + chunk, len(seq)))
        return logits

    def _step(self, seq: Sequence, start: int, end: int) -> torch.Tensor:
        """Runs tokens [start, end) of `seq` through the model; returns the last token's logits [V]."""
        seq.reserve(self.blocks, end)
        meta = AttentionMetadata.for_step(seq.block_ids, start, end - start, self.kv.block_size)
        input_ids = torch.tensor(seq.token_ids[start:end], dtype=torch.long)
        positions = torch.arange(start, end)
        logits = self.model(input_ids, positions, self.kv, meta)
        seq.num_computed = end
        seq.seal_full_blocks(self.blocks)
        return logits[0]
