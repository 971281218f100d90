"""Generation on the real default model: streaming, stops, cancellation, prefix reuse."""

import threading

import pytest
import torch

from engine import SamplingParams
from engine.errors import PromptTooLongError
from zhiyin.prompts import chat_prompt

CODE = "import os\n\n\ndef list_python_files(root):\n    \"\"\"Return every .py file under root.\"\"\"\n"


def collect(engine, prompt, **params):
    chunks = list(engine.generate(prompt, SamplingParams(**params)))
    text = "".join(c.text for c in chunks)
    ids = [i for c in chunks for i in c.token_ids]
    return text, ids, chunks[-1]


def test_streams_in_pieces_and_reports_stats(engine_bf16):
    chunks = list(engine_bf16.generate(CODE, SamplingParams(max_tokens=24, ignore_eos=True)))
    assert len([c for c in chunks if c.text]) > 3
    last = chunks[-1]
    assert last.finish_reason == "length" and last.stats.num_generated == 24
    assert last.stats.num_prompt_tokens == len(engine_bf16.encode(CODE))
    assert last.stats.decode_tokens_per_s > 0 and last.stats.time_to_first_token_s > 0


def test_cached_prefix_is_reused_and_changes_nothing(engine_fp32):
    long_prompt = CODE * 12  # several 64-token blocks
    cold_text, cold_ids, cold = collect(engine_fp32, long_prompt, max_tokens=16, ignore_eos=True)
    warm_text, warm_ids, warm = collect(engine_fp32, long_prompt, max_tokens=16, ignore_eos=True)
    assert cold.stats.num_cached_tokens == 0 or cold.stats.num_cached_tokens < warm.stats.num_cached_tokens
    assert warm.stats.num_cached_tokens >= len(engine_fp32.encode(long_prompt)) - 64
    assert warm_ids == cold_ids and warm_text == cold_text


def test_prompt_extending_a_cached_one_reuses_its_blocks(engine_fp32):
    first = engine_fp32.encode(CODE * 8)  # ids, not text: text joins can re-tokenize the seam
    collect(engine_fp32, first, max_tokens=1)
    _, _, last = collect(engine_fp32, first + engine_fp32.encode("paths = []\n"), max_tokens=1)
    assert last.stats.num_cached_tokens == (len(first) // 64) * 64 > 0


def test_stop_string_cuts_the_text(engine_bf16):
    free_text, _, _ = collect(engine_bf16, CODE, max_tokens=32, ignore_eos=True)
    stop = free_text[10:14]
    text, _, last = collect(engine_bf16, CODE, max_tokens=32, ignore_eos=True, stop=[stop])
    assert last.finish_reason == "stop"
    assert text == free_text[: free_text.index(stop)]


def test_cancellation_stops_between_tokens(engine_bf16):
    cancel = threading.Event()
    chunks = []
    for chunk in engine_bf16.generate(CODE, SamplingParams(max_tokens=200, ignore_eos=True), cancel):
        chunks.append(chunk)
        cancel.set()
    assert chunks[-1].finish_reason == "cancelled"
    assert chunks[-1].stats.num_generated < 5


def test_abandoned_stream_returns_its_blocks(engine_bf16):
    stream = engine_bf16.generate(CODE * 4, SamplingParams(max_tokens=50, ignore_eos=True))
    next(stream)
    stream.close()
    assert all(count == 0 for count in engine_bf16.blocks.ref_counts)


def test_seeded_sampling_repeats(engine_bf16):
    params = dict(max_tokens=24, temperature=1.0, top_k=50, top_p=0.95, ignore_eos=True)
    a = collect(engine_bf16, CODE, seed=7, **params)[1]
    b = collect(engine_bf16, CODE, seed=7, **params)[1]
    c = collect(engine_bf16, CODE, seed=8, **params)[1]
    assert a == b and a != c


def test_prompt_longer_than_the_context_is_refused_at_once(engine_bf16):
    ids = [100] * engine_bf16.max_context
    with pytest.raises(PromptTooLongError):
        engine_bf16.generate(ids, SamplingParams(max_tokens=1))


def test_generation_stops_at_the_context_window(engine_bf16):
    ids = engine_bf16.encode(CODE)
    ids = ids * ((engine_bf16.max_context - 3) // len(ids)) + [100] * ((engine_bf16.max_context - 3) % len(ids))
    _, generated, last = collect(engine_bf16, ids, max_tokens=50, ignore_eos=True)
    assert last.finish_reason == "length" and len(ids) + len(generated) == engine_bf16.max_context


def test_chinese_chat_answers(engine_bf16):
    prompt = chat_prompt(engine_bf16, [{"role": "user", "content": "用 Python 写一个快速排序"}])
    text, _, last = collect(engine_bf16, prompt.token_ids, max_tokens=96,
                            stop=prompt.stop, stop_token_ids=prompt.stop_token_ids)
    assert "def " in text and "<|im_end|>" not in text
    assert last.finish_reason in ("stop", "length")


def test_bf16_int8_path_agrees_with_fp32(engine_bf16, engine_fp32):
    """The fast path is an approximation: same top token, nearly the same distribution."""
    from engine.attention import AttentionMetadata
    from engine.sequence import Sequence

    def last_logits(engine):
        ids = engine.encode(CODE)
        seq = Sequence(ids)
        seq.reserve(engine.blocks, len(ids))
        meta = AttentionMetadata.for_step(seq.block_ids, 0, len(ids), engine.kv.block_size)
        out = engine.model(torch.tensor(ids), torch.arange(len(ids)), engine.kv, meta)[0]
        seq.free(engine.blocks)
        return out

    fast, exact = last_logits(engine_bf16), last_logits(engine_fp32)
    assert fast.argmax() == exact.argmax()
    assert torch.nn.functional.cosine_similarity(fast, exact, dim=0) > 0.99


def test_repetition_penalty_runs_on_the_models_logits_and_looks_back_only_its_window(engine_bf16):
    """The model's logits are inference tensors: the penalty must not write into them."""
    prompt = "List the word 'data' ten times: data data data"
    plain = SamplingParams(max_tokens=12)
    whole = SamplingParams(max_tokens=12, repetition_penalty=1.5)
    window = SamplingParams(max_tokens=12, repetition_penalty=1.5, repetition_window=1)
    texts = {name: "".join(c.text for c in engine_bf16.generate(prompt, p))
             for name, p in (("plain", plain), ("whole", whole), ("window", window))}
    assert texts["whole"] != texts["plain"]  # the prompt's "data" is discouraged
    assert texts["window"] != texts["whole"]  # a one-token window forgets the prompt
