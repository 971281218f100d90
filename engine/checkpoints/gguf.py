"""GGUF (llama.cpp / Ollama) checkpoints, dequantized with the `gguf` package."""

from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

from engine.checkpoints import Checkpoint, model_id_for
from engine.config import ARCHITECTURE_ALIASES, SUPPORTED_ARCHITECTURES, ModelConfig
from engine.errors import CorruptModelError, MissingTensorError, UnsupportedArchitectureError, UnsupportedQuantizationError
from engine.tokenizer import Tokenizer

GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


class _PlainArrayReader(GGUFReader):
    """GGUFReader over a plain ndarray view of its memmap (same pages, nothing read eagerly).

    It parses the vocabulary item by item, and each np.memmap slice costs ~2 µs in
    __array_finalize__: 2.6 s → 0.8 s for the default model's 49k tokens and merges (gguf 0.19).
    """

    def _get(self, offset, dtype, count=1, override_order=None):
        if type(self.data) is np.memmap:
            self.data = self.data.view(np.ndarray)
        return super()._get(offset, dtype, count, override_order)


def hf_name(gguf_name: str) -> str | None:
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}"
    return None


def unpermute_rows(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's interleaved-RoPE row order of Q/K (weights or biases) for the HF layout."""
    head_dim = w.shape[0] // num_heads
    rest = w.shape[1:]
    return w.reshape(num_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(w.shape)


def read_metadata(reader: GGUFReader) -> dict:
    return {key: field.contents() for key, field in reader.fields.items()}


def open_gguf(path: Path) -> tuple[GGUFReader, dict]:
    try:
        reader = _PlainArrayReader(path)
        return reader, read_metadata(reader)
    except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as e:
        raise CorruptModelError(path=str(path), detail=str(e) or type(e).__name__) from None


def read_gguf_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(open_gguf(path)[1], path)


def read_gguf(path: Path, dtype: torch.dtype) -> Checkpoint:
    reader, meta = open_gguf(path)
    gguf_arch = meta.get("general.architecture", "?")
    arch = ARCHITECTURE_ALIASES.get(gguf_arch)
    if arch is None:
        raise UnsupportedArchitectureError(path=str(path), arch=gguf_arch, supported=", ".join(SUPPORTED_ARCHITECTURES))
    tokenizer = Tokenizer.from_gguf_metadata(meta, path)

    by_name = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in by_name:
        raise MissingTensorError(path=str(path), name="token_embd.weight", arch=arch)
    vocab_size = int(by_name["token_embd.weight"].shape[-1])  # GGUF shapes are (in, out)
    config = ModelConfig.from_gguf(meta, arch, vocab_size, tie_embeddings="output.weight" not in by_name)

    tensors = {}
    for name, t in by_name.items():
        target = hf_name(name)
        if target is None:
            continue  # e.g. rope_freqs: recomputed from the metadata
        w = torch.from_numpy(_dequantize(path, t)).to(dtype)
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            heads = config.num_heads if ".attn_q." in name else config.num_kv_heads
            w = unpermute_rows(w, heads)
        tensors[target] = w
    return Checkpoint(path=path, config=config, tensors=tensors, tokenizer=tokenizer, model_id=model_id_for(path))


def _dequantize(path: Path, tensor) -> np.ndarray:
    shape = tuple(int(n) for n in reversed(tensor.shape))  # (out, in)
    try:
        data = dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:
        raise UnsupportedQuantizationError(path=str(path), qtype=tensor.tensor_type.name) from None
    except (ValueError, IndexError) as e:
        raise CorruptModelError(path=str(path), detail=f"{tensor.name}: {e}") from None
    if data.size != int(np.prod(shape)):
        raise CorruptModelError(path=str(path), detail=f"{tensor.name}: {data.size} values, expected {np.prod(shape)}")
    data = np.ascontiguousarray(data.reshape(shape), dtype=np.float32)
    return data if data.flags.writeable else data.copy()  # F32 tensors are read-only memmap views
