"""The one text-embedder interface of Zhiyin (Chinese, English and code), for the indexer and the
project memory, and the models behind it.

Two models, chosen by name, measured by bench/index_bench.py on real code (README, "Performance"):

- "use-m3" (default): USE multilingual v3, pure numpy. ~110 chunks/s here: 100k lines of code index
  with vectors in about 40 s. Hybrid search recall equals e5's; better on Chinese questions about
  code without Chinese comments.
- "e5-small": multilingual-e5-small in the engine's torch encoder (bf16). Better vector-only recall
  on English code, but ~45 chunks/s: about 100 s per 100k lines.

Vectors of different models never mix: `model_id` is stored with every vector, and another id
means the vectors are rebuilt. Similarity thresholds belong to one model only.
"""

from collections.abc import Callable
from typing import Protocol

import numpy as np

DEFAULT_EMBEDDER = "use-m3"


class Embedder(Protocol):
    model_id: str
    dim: int

    def embed_passages(self, texts: list[str], batch_size: int = ...) -> np.ndarray:
        """What is searched (code chunks, memories): float32 [n, dim], L2-normalised."""
        ...

    def embed_queries(self, texts: list[str], batch_size: int = ...) -> np.ndarray:
        """What is searched with: float32 [n, dim], L2-normalised."""
        ...


def _use() -> Embedder:
    from engine.use_embedder import UseEmbedder

    return UseEmbedder()


def _e5() -> Embedder:
    from engine.e5_embedder import load_e5_embedder

    return load_e5_embedder()


EMBEDDERS: dict[str, Callable[[], Embedder]] = {"use-m3": _use, "e5-small": _e5}


def load_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    from engine.errors import UnknownEmbedderError

    if name not in EMBEDDERS:
        raise UnknownEmbedderError(name=name, known=", ".join(EMBEDDERS))
    return EMBEDDERS[name]()
