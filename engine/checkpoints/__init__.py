"""Reading model checkpoints: GGUF files and Hugging Face safetensors folders."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.config import ModelConfig
from engine.errors import ModelNotFoundError, TokenizerMismatchError, UnknownModelFormatError
from engine.tokenizer import Tokenizer

GGUF_MAGIC = b"GGUF"


@dataclass
class Checkpoint:
    path: Path
    config: ModelConfig
    tensors: dict[str, torch.Tensor]  # HF names, e.g. model.layers.0.self_attn.q_proj.weight
    tokenizer: Tokenizer
    model_id: str  # stable name of these exact weights: keys caches of their KV

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name


def _checked_path(path: str | Path) -> Path:
    """The checkpoint's file (GGUF) or folder (HF), after checking it is one."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelNotFoundError(path=str(path))
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UnknownModelFormatError(path=str(path))
    else:
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise UnknownModelFormatError(path=str(path))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Only the tokenizer of a checkpoint: for counting tokens without loading weights."""
    from engine.checkpoints.gguf import read_gguf_tokenizer

    path = _checked_path(path)
    if path.is_dir():
        return Tokenizer.from_file(path / "tokenizer.json")
    return read_gguf_tokenizer(path)


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.bfloat16) -> Checkpoint:
    from engine.checkpoints.gguf import read_gguf
    from engine.checkpoints.hf import read_hf_folder

    path = _checked_path(path)
    checkpoint = read_hf_folder(path, dtype) if path.is_dir() else read_gguf(path, dtype)
    if checkpoint.tokenizer.vocab_size > checkpoint.config.vocab_size:
        raise TokenizerMismatchError(
            path=str(path), num_tokens=checkpoint.tokenizer.vocab_size, vocab_size=checkpoint.config.vocab_size
        )
    return checkpoint


def model_id_for(path: Path) -> str:
    """Changes whenever the file is replaced; cheap even for multi-GB weights."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    h = hashlib.blake2b(digest_size=12)
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return f"{path.stem if path.is_file() else path.name}-{h.hexdigest()}"
