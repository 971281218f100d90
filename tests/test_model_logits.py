"""Our decoder against transformers on the same weights, through the paged KV cache."""

import pytest
import torch

from engine import EngineOptions, LLMEngine
from engine.attention import AttentionMetadata
from engine.sequence import Sequence

MAX_LOGIT_DIFF = 1e-4
# Chunks exercise every attention path: first chunk, chunk with a past, decode steps, and a
# chunk crossing a block boundary.
CHUNKS = [(0, 70), (70, 130), (130, 131), (131, 132), (132, 200)]


def engine_logits(engine: LLMEngine, ids: list[int]) -> torch.Tensor:
    seq = Sequence(list(ids))
    rows = []
    for start, end in CHUNKS:
        seq.reserve(engine.blocks, end)
        meta = AttentionMetadata.for_step(seq.block_ids, start, end - start, engine.kv.block_size)
        rows.append(engine.model(torch.tensor(ids[start:end]), torch.arange(start, end), engine.kv, meta,
                                 logits_for=torch.arange(end - start)))
    seq.free(engine.blocks)
    return torch.cat(rows)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_logits_match_transformers(tiny_models, arch, fmt):
    reference, folder, gguf_file = tiny_models[arch]
    engine = LLMEngine.load(folder if fmt == "hf" else gguf_file, EngineOptions(dtype="fp32", int8_decode=False))
    ids = torch.randint(3, 300, (CHUNKS[-1][1],), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0]
    got = engine_logits(engine, ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= MAX_LOGIT_DIFF


def test_qwen2_has_qkv_bias(tiny_models):
    _, folder, _ = tiny_models["qwen2"]
    engine = LLMEngine.load(folder, EngineOptions(dtype="fp32", int8_decode=False))
    assert engine.model.layers[0].self_attn.qkv_proj.bias is not None


def test_noncontiguous_blocks_give_the_same_logits(tiny_models):
    """The block table, not the pool order, decides what attention reads."""
    _, folder, _ = tiny_models["llama"]
    engine = LLMEngine.load(folder, EngineOptions(dtype="fp32", int8_decode=False))
    ids = list(range(3, 203))
    contiguous = engine_logits(engine, ids)
    engine.blocks.free_ids = list(reversed(engine.blocks.free_ids))  # hand out blocks high to low
    scattered = engine_logits(engine, ids)
    assert (contiguous - scattered).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_default_model_greedy_matches_transformers(default_model, engine_fp32):
    """64 greedy tokens of a code prompt, identical to transformers reading the same GGUF."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(
        default_model.parent, gguf_file=default_model.name, dtype=torch.float32
    ).eval()
    prompt = "def is_prime(n):\n    \"\"\"Return True if n is prime.\"\"\"\n"
    ids = engine_fp32.encode(prompt)
    with torch.no_grad():
        expected = reference.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False,
                                      min_new_tokens=64)[0, len(ids):].tolist()
    from engine import SamplingParams

    got = []
    for chunk in engine_fp32.generate(ids, SamplingParams(max_tokens=64, ignore_eos=True)):
        got += chunk.token_ids
    assert got == expected
