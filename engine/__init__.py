"""Zhiyin's local inference engine: checkpoints, model, paged KV cache, generation."""

from engine.errors import EngineError
from engine.llm_engine import EngineOptions, GenerationChunk, GenerationStats, LLMEngine
from engine.sampling import SamplingParams

__all__ = ["EngineError", "EngineOptions", "GenerationChunk", "GenerationStats", "LLMEngine", "SamplingParams"]
