"""The default embedder (USE multilingual v3) behind the one Embedder interface."""

import numpy as np
import pytest

from engine.embedder import DEFAULT_EMBEDDER, EMBEDDERS, load_embedder
from engine.errors import UnknownEmbedderError
from tests.test_embedder import PAIRS


@pytest.fixture(scope="module")
def use():
    return load_embedder("use-m3")


def test_default_is_use_and_vectors_are_normalised(use) -> None:
    assert DEFAULT_EMBEDDER == "use-m3" and set(EMBEDDERS) == {"use-m3", "e5-small"}
    vectors = use.embed_passages(["def load_config(path):\n    return json.load(open(path))", "加载配置文件", ""])
    assert vectors.shape == (3, use.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)


def test_chinese_and_english_sentences_find_each_other(use) -> None:
    zh = use.embed_passages([z for z, _ in PAIRS])
    en = use.embed_queries([e for _, e in PAIRS])
    similarity = zh @ en.T
    assert list(similarity.argmax(axis=1)) == list(range(len(PAIRS)))
    assert list(similarity.argmax(axis=0)) == list(range(len(PAIRS)))


def test_batching_and_long_texts(use) -> None:
    texts = [f"def handler_{i}(request):\n    return respond(request, status={200 + i})" for i in range(70)]
    together = use.embed_passages(texts)
    one_by_one = np.concatenate([use.embed_passages([t]) for t in texts[:5]])
    np.testing.assert_allclose(together[:5], one_by_one, atol=1e-5)
    long = "x = compute(y)\n" * 10_000  # only the head is read: bounded time and memory
    head = use.embed_passages([long])[0]
    assert np.isclose(head @ use.embed_passages([long[: use.max_chars]])[0], 1.0, atol=1e-5)


def test_unknown_embedder_name_is_a_clear_error() -> None:
    with pytest.raises(UnknownEmbedderError) as e:
        load_embedder("bert-large")
    assert "use-m3" in str(e.value) and "e5-small" in str(e.value)
