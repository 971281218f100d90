"""Continuous batching on the real default model: concurrent requests decode together and get the
same tokens as alone, wait their turn in arrival order, leave when cancelled, and requests that do
not fit in the KV pool together wait for blocks rather than fail."""

import gc
import threading
import time
import weakref

import pytest

from engine import EngineOptions, LLMEngine, SamplingParams

PROMPTS = ["def fibonacci(n):", "class Stack:\n    def push(self, item):", "import json\n\ndef load(path):",
           "# 冒泡排序\ndef bubble_sort(items):", "SELECT name FROM users WHERE", "fn main() {"]


def run_concurrently(engine: LLMEngine, prompts: list[str], params: SamplingParams) -> list[str]:
    texts: list[str] = [""] * len(prompts)

    def one(i: int) -> None:
        texts[i] = "".join(c.text for c in engine.generate(prompts[i], params))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return texts


def test_batched_requests_get_the_tokens_they_get_alone(engine_fp32) -> None:
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    alone = ["".join(c.text for c in engine_fp32.generate(p, params)) for p in PROMPTS]
    together = run_concurrently(engine_fp32, PROMPTS, params)
    assert together == alone


@pytest.fixture(scope="module")
def one_at_a_time(default_model) -> LLMEngine:
    return LLMEngine.load(default_model, EngineOptions(max_batch=1))


def test_requests_take_turns_in_arrival_order_and_cancelled_waiters_leave(one_at_a_time) -> None:
    engine, finished, lock = one_at_a_time, [], threading.Lock()
    cancel = threading.Event()

    def one(n: int, cancel_event=None) -> None:
        chunks = list(engine.generate(PROMPTS[n % len(PROMPTS)], SamplingParams(max_tokens=8, ignore_eos=True),
                                      cancel_event))
        with lock:
            finished.append((n, chunks[-1].finish_reason, sum(len(c.token_ids) for c in chunks)))

    threads = []
    for n in range(6):
        threads.append(threading.Thread(target=one, args=(n, cancel if n == 3 else None)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while engine.queued_requests + engine.scheduler.running < n + 1 and time.monotonic() < deadline:
            time.sleep(0.001)  # queued before the next one arrives
    cancel.set()  # number 3 is still waiting: it leaves without running
    for t in threads:
        t.join(120)
    assert [n for n, _reason, _tokens in finished if n != 3] == [0, 1, 2, 4, 5]
    reasons = {n: (reason, tokens) for n, reason, tokens in finished}
    assert reasons[3] == ("cancelled", 0)
    assert all(reasons[n] == ("length", 8) for n in (0, 1, 2, 4, 5))
    assert engine.queued_requests == 0 and all(c == 0 for c in engine.blocks.ref_counts)


def test_requests_that_do_not_fit_together_wait_for_blocks_instead_of_failing(default_model) -> None:
    """The pool holds one max-context request (the engine's floor); two long ones take turns."""
    engine = LLMEngine.load(default_model, EngineOptions(kv_cache_mib=1, max_context=2048))
    pool_tokens = engine.blocks.num_blocks * engine.blocks.block_size
    assert pool_tokens < 2 * 1500
    long_prompts = [" ".join(["data"] * 1400) + p for p in PROMPTS[:2]]
    params = SamplingParams(max_tokens=100, ignore_eos=True)
    texts = run_concurrently(engine, long_prompts, params)
    assert all(texts) and engine.queued_requests == 0
    assert all(c == 0 for c in engine.blocks.ref_counts)


def test_an_idle_engine_that_is_dropped_is_freed(default_model) -> None:
    """Nothing but its owners holds an idle engine (the loop runs only while there is work): editors
    that switch models, and this test suite, load many."""
    engine = LLMEngine.load(default_model, EngineOptions(kv_cache_mib=32))
    assert "".join(c.text for c in engine.generate("def f(x):", SamplingParams(max_tokens=4, ignore_eos=True)))
    assert "".join(c.text for c in engine.generate("def g(y):", SamplingParams(max_tokens=4, ignore_eos=True)))
    dropped = weakref.ref(engine)
    del engine
    deadline = time.monotonic() + 10
    while dropped() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert dropped() is None
