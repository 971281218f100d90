"""Text <-> token ids for the engine, built on the `tokenizers` library.

Two sources: a Hugging Face ``tokenizer.json`` (with its optional ``tokenizer_config.json``), or
the vocabulary a GGUF file carries in its metadata. A GGUF tokenizer is rebuilt the way llama.cpp
reads it, because llama.cpp defines what the file means:

- ``tokenizer.ggml.model == "gpt2"``: byte-level BPE. ``tokenizer.ggml.pre`` names the regexes
  that split text before the merges run (llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_*``); each regex
  splits the pieces the previous one left, keeping matches and gaps, as ``Split(isolated)`` does.
- ``tokenizer.ggml.model == "llama"``: SentencePiece BPE. Spaces become "▁", one is prepended,
  the merge order is the merged token's score, and unknown characters fall back to <0xXX> bytes.

Control tokens (type 3) become special added tokens: matched in text only with
``allow_special=True``. User-defined tokens (type 4) are always matched whole, as in llama.cpp.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from engine.errors import CorruptModelError, TokenizerMissingError

GGUF_TOKEN_NORMAL = 1
GGUF_TOKEN_CONTROL = 3
GGUF_TOKEN_USER_DEFINED = 4

# GPT-2's split; the other pre-tokenizers are variations of it.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")  # single digits, otherwise llama3's

# tokenizer.ggml.pre -> llama.cpp's regex list for it (llama-vocab.cpp, llm_tokenizer_bpe).
_STARCODER = [r"\p{N}", _GPT2]  # digits one by one, then GPT-2's split
_PRE_SPLITS: dict[str, list[str]] = {
    **dict.fromkeys(["gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"], [_GPT2]),
    **dict.fromkeys(
        ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"],
        _STARCODER,
    ),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"], [_QWEN2]),
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe"], [_LLAMA3]),
    "deepseek-coder": [
        r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+",
        "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",  # runs of CJK ideographs and Hangul
        r"\p{N}",
    ],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
}
# llama.cpp matches a whole vocabulary entry before merging, and prepends BOS, for these.
_LLAMA3_NAMES = {"llama3", "llama-v3", "llama-bpe", "falcon3"}


class Tokenizer:
    """Encodes and decodes text for one model. Never adds BOS itself: callers check ``add_bos``."""

    def __init__(
        self,
        backend: HFTokenizer,
        *,
        vocab_size: int,
        bos_id: int | None,
        eos_id: int | None,
        add_bos: bool,
        chat_template: str | None,
    ) -> None:
        self._backend = backend
        # `encode_special_tokens` is backend state: the lock keeps an encode from seeing another's.
        self._encode_lock = threading.Lock()
        self.vocab_size = vocab_size
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = add_bos
        self.chat_template = chat_template
        self._special_ids = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
        self._special_ids |= {i for i in (bos_id, eos_id) if i is not None}

    @classmethod
    def from_file(cls, path: Path, config: dict | None = None) -> Tokenizer:
        """A Hugging Face tokenizer.json (or a folder holding one) and its tokenizer_config.json."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerMissingError(path=str(path))
        try:
            backend = HFTokenizer.from_file(str(path))
        except Exception as error:  # the Rust parser raises plain Exception for bad JSON
            raise CorruptModelError(path=str(path), detail=f"unreadable tokenizer.json: {error}") from error
        config = config or {}
        bos_id = _config_token_id(backend, config.get("bos_token"))
        eos_id = _config_token_id(backend, config.get("eos_token"))
        # The file's post-processor shows whether the model wants BOS when the config does not say.
        plain = backend.encode("a", add_special_tokens=False).ids
        probe = backend.encode("a", add_special_tokens=True).ids
        template_bos = probe[0] if probe[: len(plain)] != plain else None
        if bos_id is None:
            bos_id = template_bos
        add_bos = bool(config.get("add_bos_token", template_bos is not None)) and bos_id is not None
        return cls(
            backend,
            vocab_size=backend.get_vocab_size(with_added_tokens=True),
            bos_id=bos_id,
            eos_id=eos_id,
            add_bos=add_bos,
            chat_template=_chat_template(config, path.parent),
        )

    @classmethod
    def from_gguf_metadata(cls, metadata: dict, path: Path) -> Tokenizer:
        """The tokenizer a GGUF file describes; ``metadata`` maps GGUF keys to Python values."""
        tokens: list[str] | None = metadata.get("tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerMissingError(path=str(path))
        kind = metadata.get("tokenizer.ggml.model")
        types = list(metadata.get("tokenizer.ggml.token_type") or [GGUF_TOKEN_NORMAL] * len(tokens))
        if len(types) != len(tokens):
            raise CorruptModelError(path=str(path), detail="token types do not match the tokens")
        if kind == "gpt2":
            backend, default_bos = _byte_level_bpe(metadata, tokens, path)
        elif kind == "llama":
            backend, default_bos = _sentencepiece_bpe(metadata, tokens, path), True
        else:
            raise CorruptModelError(path=str(path), detail=f"unsupported tokenizer model '{kind}'")
        # Add the special tokens after the model, with their ids in the file: added tokens are
        # matched whole in the text, before the pre-tokenizer could cut them.
        backend.add_special_tokens(_added_tokens(tokens, types, GGUF_TOKEN_CONTROL))
        backend.add_tokens(_added_tokens(tokens, types, GGUF_TOKEN_USER_DEFINED))
        bos_id = _optional_id(metadata.get("tokenizer.ggml.bos_token_id"), len(tokens))
        return cls(
            backend,
            vocab_size=len(tokens),
            bos_id=bos_id,
            eos_id=_optional_id(metadata.get("tokenizer.ggml.eos_token_id"), len(tokens)),
            add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", default_bos)) and bos_id is not None,
            chat_template=metadata.get("tokenizer.chat_template"),
        )

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``; special tokens written in it stay plain text unless ``allow_special``."""
        with self._encode_lock:
            self._backend.encode_special_tokens = not allow_special
            return self._backend.encode(text, add_special_tokens=False).ids

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts of many texts at once (batched in Rust: ~1 µs per short text)."""
        with self._encode_lock:
            self._backend.encode_special_tokens = True
            return [len(e.ids) for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: list[int], *, skip_special: bool = False) -> str:
        """Text of ``ids``; bytes that do not form UTF-8 come out as U+FFFD."""
        return self._backend.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry, spelled as stored (byte-level: "Ġhello", SentencePiece: "▁hello")."""
        return self._backend.token_to_id(token)

    def id_to_token(self, id: int) -> str | None:
        return self._backend.id_to_token(id) if 0 <= id < self.vocab_size else None

    def special_ids(self) -> set[int]:
        return set(self._special_ids)

    def stream_decoder(self, *, skip_special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special=skip_special)


class StreamDecoder:
    """Turns ids into text one at a time, holding back a character until all its bytes are in.

    Decoding each id alone would break characters split over byte tokens and lose the spacing
    that decoders derive from neighbours (SentencePiece's "▁"), so it decodes the ids since the
    last emitted text and emits what grew, once the text no longer ends in U+FFFD.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._ids: list[int] = []
        self._prefix = 0  # ids before this are done and no longer decoded
        self._read = 0  # ids before this have been emitted

    def push(self, id: int) -> str:
        """The text completed by ``id``; "" while a character is still incomplete."""
        self._ids.append(id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is held back, incomplete characters as U+FFFD. Call at the end of the stream."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        decode = self._tokenizer.decode
        done = decode(self._ids[self._prefix : self._read], skip_special=self._skip_special)
        text = decode(self._ids[self._prefix :], skip_special=self._skip_special)
        if len(text) <= len(done) or (text.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(done) :]


def _byte_level_bpe(metadata: dict, tokens: list[str], path: Path) -> tuple[HFTokenizer, bool]:
    """GPT-2 style BPE over bytes spelled as characters ("Ġ" is the space)."""
    merges = metadata.get("tokenizer.ggml.merges")
    if not merges:
        raise CorruptModelError(path=str(path), detail="byte-level tokenizer without merges")
    pre = metadata.get("tokenizer.ggml.pre") or "default"
    if pre not in _PRE_SPLITS:
        raise CorruptModelError(path=str(path), detail=f"unsupported pre-tokenizer '{pre}'")
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    backend = HFTokenizer(models.BPE(_vocab(tokens), pairs, ignore_merges=pre in _LLAMA3_NAMES))
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in _PRE_SPLITS[pre]]
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    return backend, pre in _LLAMA3_NAMES


def _sentencepiece_bpe(metadata: dict, tokens: list[str], path: Path) -> HFTokenizer:
    """SentencePiece BPE (llama 2, CodeLlama): "▁" for spaces, <0xXX> byte fallback."""
    scores = metadata.get("tokenizer.ggml.scores")
    merges = metadata.get("tokenizer.ggml.merges")
    if not scores and not merges:
        raise CorruptModelError(path=str(path), detail="sentencepiece tokenizer without scores")
    vocab = _vocab(tokens)
    if merges:
        pairs = [tuple(m.split(" ", 1)) for m in merges]
    else:
        pairs = _merges_from_scores(tokens, scores, vocab)
    unk_id = _optional_id(metadata.get("tokenizer.ggml.unknown_token_id"), len(tokens))
    unk = tokens[unk_id] if unk_id is not None else None
    backend = HFTokenizer(models.BPE(vocab, pairs, unk_token=unk, fuse_unk=True, byte_fallback=True))
    # llama.cpp prefixes a space to every stretch of text (also after a special token).
    add_space = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("▁")] if add_space else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    backend.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)] if add_space else steps)
    return backend


def _merges_from_scores(
    tokens: list[str], scores: list[float], vocab: dict[str, int]
) -> list[tuple[str, str]]:
    """SentencePiece merges the adjacent pair whose union scores best: as BPE merges, ranked by that.

    Ties go to the longer left piece, then the longer right one, as transformers orders them.
    """
    ranked = []
    for token, score in zip(tokens, scores):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, -len(left), -len(right), left, right))
    ranked.sort(key=lambda r: r[:3])  # stable: equal keys keep the vocabulary's order
    return [(left, right) for *_, left, right in ranked]


def _added_tokens(tokens: list[str], types: list[int], kind: int) -> list[AddedToken]:
    """Tokens of one GGUF type, matched against the raw text (not the "▁"-normalized one)."""
    special = kind == GGUF_TOKEN_CONTROL
    return [
        AddedToken(t, special=special, normalized=False) for t, k in zip(tokens, types) if k == kind and t
    ]


def _vocab(tokens: list[str]) -> dict[str, int]:
    """Token -> id; a token listed twice keeps its last id, as in llama.cpp's lookup."""
    return {token: i for i, token in enumerate(tokens)}


def _optional_id(value: int | None, num_tokens: int) -> int | None:
    """GGUF writers use -1 or an out-of-range id for "none"."""
    return int(value) if value is not None and 0 <= int(value) < num_tokens else None


def _config_token_id(backend: HFTokenizer, token: object) -> int | None:
    """tokenizer_config.json gives a token as a string or as {"content": ...}."""
    if isinstance(token, dict):
        token = token.get("content")
    return backend.token_to_id(token) if isinstance(token, str) else None


def _chat_template(config: dict, folder: Path) -> str | None:
    """The default template: a string, a list of named ones, or chat_template.jinja beside the file."""
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return template if isinstance(template, str) else None
