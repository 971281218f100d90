"""The engine as an OpenAI-compatible HTTP server (`zhiyin engine serve`).

`/v1/models`, `/v1/completions` (with `suffix` for fill-in-the-middle), `/v1/chat/completions`,
streaming as server-sent events, `/health`, `/metrics` (Prometheus text). Requests from all
clients are batched by the engine's scheduler; the queue is bounded (429 with Retry-After beyond
it: the batch and `max_queue` more wait) and a request whose client goes away is cancelled. With an API key, every `/v1` request needs
`Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from engine.errors import EngineError
from engine.kv_host import HOST_COUNTERS
from engine.kv_tiers import TIER_COUNTERS
from engine.llm_engine import GenerationChunk, LLMEngine
from engine.sampling import SamplingParams

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_BODY_BYTES = 4 << 20
DISCONNECT_POLL_S = 0.25


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.param, self.status, self.kind = param, status, kind


@dataclass
class Metrics:
    requests: dict[str, int] = field(default_factory=dict)  # by endpoint
    rejected: int = 0  # queue full
    cancelled: int = 0  # client went away
    prompt_tokens: int = 0
    generated_tokens: int = 0
    last_decode_tokens_per_s: float = 0.0
    in_flight: int = 0  # accepted requests not yet answered: the running batch and the queue

    def count(self, chunk: GenerationChunk) -> None:
        if chunk.stats is not None:
            self.prompt_tokens += chunk.stats.num_prompt_tokens
            self.generated_tokens += chunk.stats.num_generated
            self.last_decode_tokens_per_s = chunk.stats.decode_tokens_per_s or self.last_decode_tokens_per_s


def create_app(engine: LLMEngine, *, api_key: str | None = None, max_queue: int = 64,
               model_name: str | None = None) -> Starlette:
    """The ASGI app serving `engine`. `model_name`: the id clients use (default: the engine's)."""
    served = model_name or engine.model_id
    metrics = Metrics()
    created = int(time.time())

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": served})

    async def models(request: Request) -> Response:
        if not authorised(request):
            return _error("Invalid or missing API key (Authorization: Bearer KEY).", status=401,
                          kind="authentication_error")
        return JSONResponse({"object": "list", "data": [
            {"id": served, "object": "model", "created": created, "owned_by": "zhiyin",
             "max_model_len": engine.max_context}]})

    async def metrics_text(request: Request) -> Response:
        lines = ["# TYPE zhiyin_requests_total counter"]
        lines += [f'zhiyin_requests_total{{endpoint="{e}"}} {n}' for e, n in sorted(metrics.requests.items())]
        lines += ["# TYPE zhiyin_rejected_requests_total counter", f"zhiyin_rejected_requests_total {metrics.rejected}",
                  "# TYPE zhiyin_cancelled_requests_total counter", f"zhiyin_cancelled_requests_total {metrics.cancelled}",
                  "# TYPE zhiyin_prompt_tokens_total counter", f"zhiyin_prompt_tokens_total {metrics.prompt_tokens}",
                  "# TYPE zhiyin_generated_tokens_total counter",
                  f"zhiyin_generated_tokens_total {metrics.generated_tokens}",
                  "# TYPE zhiyin_queue_depth gauge", f"zhiyin_queue_depth {engine.queued_requests}",
                  "# TYPE zhiyin_running_requests gauge", f"zhiyin_running_requests {engine.scheduler.running}",
                  "# TYPE zhiyin_peak_batch_size gauge", f"zhiyin_peak_batch_size {engine.scheduler.peak_batch}",
                  "# TYPE zhiyin_decode_tokens_per_second gauge",
                  f"zhiyin_decode_tokens_per_second {metrics.last_decode_tokens_per_s:.2f}",
                  "# TYPE zhiyin_kv_bytes gauge"]
        tiers = engine.kv_tiers()
        lines += [f'zhiyin_kv_bytes{{tier="{tier}"}} {tiers[f"{tier}_bytes"]}' for tier in ("device", "host", "disk")]
        if tiers["device_budget"] is not None:  # a bounded device tier: its budget and counters
            lines += ["# TYPE zhiyin_kv_device_budget_bytes gauge",
                      f"zhiyin_kv_device_budget_bytes {tiers['device_budget']}"]
            for name in TIER_COUNTERS:
                gauges = ("device_peak", "locality", "fetch_ms_per_promotion", "disk_bytes_per_token")
                kind = "gauge" if name in gauges else "counter"
                metric = f"zhiyin_kv_{name}" + ("_total" if kind == "counter" else "")
                lines += [f"# TYPE {metric} {kind}", f"{metric} {tiers[name]}"]
        if tiers["host_budget"] is not None:  # a bounded host tier: its budget and counters
            lines += ["# TYPE zhiyin_kv_host_budget_bytes gauge", f"zhiyin_kv_host_budget_bytes {tiers['host_budget']}"]
            for name in HOST_COUNTERS:
                kind = "gauge" if name == "host_peak" else "counter"
                metric = f"zhiyin_kv_{name}" + ("_total" if kind == "counter" else "")
                lines += [f"# TYPE {metric} {kind}", f"{metric} {tiers[name]}"]
        if engine.persistence is not None:
            disk = engine.persistence.store
            for name in ("hits", "misses", "corrupt", "written", "evicted", "bytes_read", "bytes_written"):
                lines += [f"# TYPE zhiyin_kv_disk_{name}_total counter",
                          f"zhiyin_kv_disk_{name}_total {getattr(disk.stats, name)}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def completions(request: Request) -> Response:
        return await serve("completions", request, _completion_request, _completion_object)

    async def chat_completions(request: Request) -> Response:
        return await serve("chat.completions", request, _chat_request, _chat_object)

    async def serve(endpoint: str, request: Request, parse, shape) -> Response:
        metrics.requests[endpoint] = metrics.requests.get(endpoint, 0) + 1
        if not authorised(request):
            return _error("Invalid or missing API key (Authorization: Bearer KEY).", status=401,
                          kind="authentication_error")
        try:
            body = await _json_body(request)
            model = body.get("model")
            if model not in (None, "", served, "default"):
                raise BadRequest(f"The model {model!r} does not exist; this server has {served!r}.", "model", 404,
                                 "model_not_found")
            prompt_ids, params = parse(engine, body)
            if metrics.in_flight >= engine.options.max_batch + max_queue:
                metrics.rejected += 1
                return _error("The server is busy: too many requests are waiting. Retry later.", status=429,
                              kind="rate_limit_error", headers={"Retry-After": "1"})
            stream = bool(body.get("stream"))
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        except BadRequest as e:
            return _error(str(e), e.param, e.status, e.kind)
        except EngineError as e:
            return _error(str(e))
        rid = f"{'chatcmpl' if endpoint.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex}"
        cancel = threading.Event()
        metrics.in_flight += 1
        chunks = _run_in_thread(engine, prompt_ids, params, cancel, metrics)
        if stream:
            return StreamingResponse(_sse(request, chunks, cancel, shape, rid, served, metrics, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        text, last = [], None
        try:
            async for chunk in _until_disconnected(request, chunks, cancel, metrics):
                text.append(chunk.text)
                last = chunk
        except EngineError as e:
            return _error(str(e), status=503 if "KV cache" in str(e) else 400)
        if last is None:  # the client went away
            return Response(status_code=499)
        metrics.count(last)
        return JSONResponse(shape(rid, served, "".join(text), last.finish_reason, last, final=True))

    routes = [Route("/health", health), Route("/v1/models", models), Route("/metrics", metrics_text),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"])]
    return Starlette(routes=routes)


# --- requests ----------------------------------------------------------------------------------------

def _sampling(body: dict, default_max: int | None, stops: list[str], stop_ids: list[int], engine: LLMEngine,
              prompt_len: int) -> SamplingParams:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", default_max))
    if max_tokens is None:
        max_tokens = engine.max_context - prompt_len
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    temperature = _number(body.get("temperature", 1.0), "temperature")
    top_p = _number(body.get("top_p", 1.0), "top_p")
    penalty = _number(body.get("repetition_penalty", 1.0), "repetition_penalty")
    if temperature < 0 or not 0 < top_p <= 1 or penalty <= 0:  # checked here: SamplingParams only asserts
        raise BadRequest("A sampling parameter is out of range (temperature ≥ 0, 0 < top_p ≤ 1, "
                         "repetition_penalty > 0).")
    return SamplingParams(
        max_tokens=_int(max_tokens, "max_tokens", 0), temperature=temperature, top_p=top_p,
        top_k=_int(body.get("top_k", 0), "top_k", 0), repetition_penalty=penalty,
        stop=[*map(str, stop), *stops], stop_token_ids=stop_ids,
        seed=None if body.get("seed") is None else _int(body["seed"], "seed", None))


def _completion_request(engine: LLMEngine, body: dict) -> tuple[list[int], SamplingParams]:
    prompt, suffix = body.get("prompt"), body.get("suffix")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string (one prompt per request).", "prompt")
    if suffix is not None and not isinstance(suffix, str):
        raise BadRequest("'suffix' must be a string.", "suffix")
    ids, stops, stop_ids = engine.infill_ids(prompt, suffix) if suffix else (engine.encode(prompt), [], [])
    _check_n(body)
    return ids, _sampling(body, DEFAULT_MAX_TOKENS, stops, stop_ids, engine, len(ids))


def _chat_request(engine: LLMEngine, body: dict) -> tuple[list[int], SamplingParams]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list.", "messages")
    plain = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
            raise BadRequest("Each message needs a 'role' (system, user, assistant) and 'content'.", "messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise BadRequest("A message's 'content' must be a string or text parts.", "messages")
        plain.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    ids, stops, stop_ids = engine.chat_ids(plain)
    _check_n(body)
    return ids, _sampling(body, None, stops, stop_ids, engine, len(ids))


def _check_n(body: dict) -> None:
    if body.get("n", 1) != 1:
        raise BadRequest("Only n = 1 is supported.", "n")


def _int(value: Any, name: str, low: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise BadRequest(f"'{name}' must be an integer" + (f" ≥ {low}." if low is not None else "."), name)
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{name}' must be a number.", name)
    return float(value)


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("The request body is larger than 4 MiB.", status=413)
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


# --- responses ----------------------------------------------------------------------------------------

def _completion_object(rid: str, model: str, text: str, finish: str | None, last: GenerationChunk | None,
                       final: bool) -> dict:
    out = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": _finish(finish)}]}
    if final and last is not None and last.stats is not None:
        out["usage"] = _usage(last)
    return out


def _chat_object(rid: str, model: str, text: str, finish: str | None, last: GenerationChunk | None,
                 final: bool) -> dict:
    out = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                        "finish_reason": _finish(finish)}]}
    if final and last is not None and last.stats is not None:
        out["usage"] = _usage(last)
    return out


def _chat_chunk(rid: str, model: str, delta: dict, finish: str | None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": _finish(finish)}]}


def _usage(last: GenerationChunk) -> dict:
    s = last.stats
    usage = {"prompt_tokens": s.num_prompt_tokens, "completion_tokens": s.num_generated,
             "total_tokens": s.num_prompt_tokens + s.num_generated,
             "prompt_tokens_details": {"cached_tokens": s.num_cached_tokens}}
    if s.sparse is not None:  # an extension: what sparse decoding read (budget, captured mass, FP8 coverage)
        usage["sparse_attention"] = s.sparse
    return usage


def _finish(reason: str | None) -> str | None:
    return {"cancelled": "stop"}.get(reason, reason) if reason else None


def _error(message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error",
           headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}},
                        status_code=status, headers=headers)


# --- streaming ----------------------------------------------------------------------------------------

def _run_in_thread(engine: LLMEngine, prompt_ids: list[int], params: SamplingParams,
                   cancel: threading.Event, metrics: Metrics) -> asyncio.Queue:
    """The generation's chunks, fed from a worker thread into a queue of the running loop
    (an EngineError, then None, on failure; None at the end)."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue = asyncio.Queue()

    def run() -> None:
        try:
            for chunk in engine.generate(prompt_ids, params, cancel):
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
        except EngineError as e:
            loop.call_soon_threadsafe(chunks.put_nowait, e)
        loop.call_soon_threadsafe(chunks.put_nowait, None)
        loop.call_soon_threadsafe(_done, metrics)

    threading.Thread(target=run, name="zhiyin-openai-request", daemon=True).start()
    return chunks


def _done(metrics: Metrics) -> None:
    metrics.in_flight -= 1


async def _until_disconnected(request: Request, chunks: asyncio.Queue, cancel: threading.Event,
                              metrics: Metrics) -> AsyncIterator[GenerationChunk]:
    while True:
        try:
            item = await asyncio.wait_for(chunks.get(), DISCONNECT_POLL_S)
        except TimeoutError:
            if await request.is_disconnected():
                cancel.set()
                metrics.cancelled += 1
                return
            continue
        if item is None:
            return
        if isinstance(item, Exception):
            raise item
        yield item


async def _sse(request: Request, chunks: asyncio.Queue, cancel: threading.Event, shape, rid: str, model: str,
               metrics: Metrics, include_usage: bool) -> AsyncIterator[str]:
    chat = shape is _chat_object
    try:
        if chat:
            yield _event(_chat_chunk(rid, model, {"role": "assistant", "content": ""}, None))
        try:
            async for chunk in _until_disconnected(request, chunks, cancel, metrics):
                if chunk.text or chunk.finish_reason:
                    if chat:
                        delta = {"content": chunk.text} if chunk.text else {}
                        yield _event(_chat_chunk(rid, model, delta, chunk.finish_reason))
                    else:
                        yield _event(_completion_object(rid, model, chunk.text, chunk.finish_reason, None, False))
                if chunk.stats is not None:
                    metrics.count(chunk)
                    if include_usage:
                        yield _event({"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                                      "created": int(time.time()), "model": model, "choices": [],
                                      "usage": _usage(chunk)})
        except EngineError as e:
            yield _event({"error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # the client went away mid-stream (or it ended): the engine stops within a token


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
