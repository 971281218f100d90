"""Zhiyin's local inference engine: checkpoints, model, paged KV cache, generation."""

import os

# oneDNN keeps a compiled kernel per matmul shape (1024 by default, megabytes each): a server whose
# prompts end at a different length every keystroke grows by hundreds of MiB. 64 keeps decode's and
# full prefill chunks' shapes hot (measured: same speed) and bounds the memory. Read at first use.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

from engine.errors import EngineError
from engine.llm_engine import EngineOptions, GenerationChunk, GenerationStats, LLMEngine
from engine.sampling import SamplingParams

__all__ = ["EngineError", "EngineOptions", "GenerationChunk", "GenerationStats", "LLMEngine", "SamplingParams"]
